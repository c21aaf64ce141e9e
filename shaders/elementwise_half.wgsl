// Element-wise driver, two 16-bit floats per step: bindings 0-2 as arrays of 32-bit words, each
// holding two f16 values (or, with BF16, two bfloat16), the first in the low half, converted by
// `util/half.wgsl`. Values are widened to f32 and everything is computed and summed in f32;
// stored gradients are rounded to nearest even. An odd segment's last word holds one element
// and a padding half: the second element is not counted and its gradient half is written as 0.
// Runs any length (with `Gpu::vec4`, only what `elementwise_half4.wgsl` leaves). Composed after
// `elementwise.wgsl`; `steps`, `step_inputs`, the walk of the fused pass, `scale_grad` and
// `elem_inputs`.

@group(0) @binding(0) var<storage, read> pred: array<u32>;
@group(0) @binding(1) var<storage, read> targ: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<u32>;

// Elements per step.
const STEP: u32 = 2u;

// Steps of a walk over the segment: its words.
fn steps() -> u32 {
    return (params.n + 1u) / 2u;
}

// The gradients of step s times c (`apply`), recomputed from the inputs: under ROOT the walk
// stores none, since the gradient of the mean square rounded to 16 bits could overflow where the
// scaled one does not.
fn scale_grad(s: u32, c: f32) {
    let v = loss_pair(s, row_col(params.elem_base + 2u * s), row_col(1u));
    grad[s] = pack_pair(v[1] * (params.grad_scale * c));
}

// Losses and derivatives of the two elements of word s, the first at (row, col) `rc`; `one` is
// row_col(1). The padding half of an odd segment's last word gives 0 for both, and is not
// passed to `loss_elem` (whose state, as dynamic_smooth_l1's candidates, it must not enter).
fn loss_pair(s: u32, rc: vec2<u32>, one: vec2<u32>) -> mat2x2<f32> {
    let p = unpack_pair(pred[s]);
    let t = unpack_pair(targ[s]);
    let i = params.elem_base + 2u * s;
    at_elem(rc);
    let v0 = loss_elem(p.x, t.x, i);
    at_elem(advance(rc, one));
    var v1 = vec2<f32>(0.0);
    if (2u * s + 1u < params.n) {
        v1 = loss_elem(p.y, t.y, i + 1u);
    }
    return mat2x2<f32>(vec2<f32>(v0.x, v1.x), vec2<f32>(v0.y, v1.y));
}

// Predictions and targets of step s (components x, y; the others 0, and y 0 for the padding
// half: passes that read steps themselves skip elements past `params.n`).
fn step_inputs(s: u32) -> mat2x4<f32> {
    let real = vec2<f32>(1.0, f32(2u * s + 1u < params.n));
    let p = unpack_pair(pred[s]) * real;
    let t = unpack_pair(targ[s]) * real;
    return mat2x4<f32>(vec4<f32>(p, 0.0, 0.0), vec4<f32>(t, 0.0, 0.0));
}

// Stores the gradients of step s (components x, y; the padding half's as 0, as `walk` does).
fn store_grads(s: u32, g: vec4<f32>) {
    grad[s] = pack_pair(select(g.xy, vec2<f32>(g.x, 0.0), 2u * s + 1u >= params.n));
}

// Prediction and target of element j of the segment.
fn elem_inputs(j: u32) -> vec2<f32> {
    return vec2<f32>(unpack_pair(pred[j / 2u])[j % 2u], unpack_pair(targ[j / 2u])[j % 2u]);
}

// Walks this invocation's words of its workgroup's block through `loss_elem`: writes each
// gradient (but under ROOT) and each loss (PER_ELEMENT), and returns the sum of the losses
// otherwise.
fn walk(lid: u32, wid: u32, nwg: u32) -> f32 {
    let b = lane_walk(block_range(steps(), wid, nwg, WG), lid);
    var rc = row_col(params.elem_base + 2u * b.x);
    let one = row_col(1u);
    let step = row_col(2u * LANES);
    var acc = 0.0;
    for (var s = b.x; s < b.y; s += LANES) {
        let v = loss_pair(s, rc, one);
        rc = advance(rc, step);
        if (!ROOT) {
            grad[s] = pack_pair(v[1] * params.grad_scale);
        }
        if (PER_ELEMENT) {
            loss[2u * s] = v[0].x;
            if (2u * s + 1u < params.n) {
                loss[2u * s + 1u] = v[0].y;
            }
        } else {
            acc += v[0].x + v[0].y;
        }
    }
    return acc;
}
