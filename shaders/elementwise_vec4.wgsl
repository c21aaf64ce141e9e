// Element-wise driver, four elements per step: bindings 0-2 as vec4 arrays (16-byte loads and
// stores), `steps`, the walk of the fused pass and `elem_inputs`. The host gives
// these passes the multiple-of-four prefix of the input and runs the remaining 1-3 elements through
// `elementwise_f32.wgsl`. params.n counts elements (a multiple of 4 here).

@group(0) @binding(0) var<storage, read> pred: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> targ: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec4<f32>>;

// Loss and derivative of the four elements of quad q, the first at (row, col) `rc`; `one` is
// row_col(1).
fn loss_quad(q: u32, rc: vec2<u32>, one: vec2<u32>) -> mat2x4<f32> {
    let p = pred[q];
    let t = targ[q];
    let i = params.elem_base + 4u * q;
    let rc1 = advance(rc, one);
    let rc2 = advance(rc1, one);
    let rc3 = advance(rc2, one);
    at_elem(rc);
    let v0 = loss_elem(p.x, t.x, i);
    at_elem(rc1);
    let v1 = loss_elem(p.y, t.y, i + 1u);
    at_elem(rc2);
    let v2 = loss_elem(p.z, t.z, i + 2u);
    at_elem(rc3);
    let v3 = loss_elem(p.w, t.w, i + 3u);
    return mat2x4<f32>(vec4<f32>(v0.x, v1.x, v2.x, v3.x), vec4<f32>(v0.y, v1.y, v2.y, v3.y));
}

// Elements per step.
const STEP: u32 = 4u;

// Steps of a walk over the segment: its quads.
fn steps() -> u32 {
    return params.n / 4u;
}

// Predictions and targets of step s.
fn step_inputs(s: u32) -> mat2x4<f32> {
    return mat2x4<f32>(pred[s], targ[s]);
}

// Stores the gradient of step s.
fn store_grads(s: u32, g: vec4<f32>) {
    grad[s] = g;
}

// Scales the gradients of step s by c (`apply`).
fn scale_grad(s: u32, c: f32) {
    grad[s] = grad[s] * c;
}

// Prediction and target of element j of the segment.
fn elem_inputs(j: u32) -> vec2<f32> {
    return vec2<f32>(pred[j / 4u][j % 4u], targ[j / 4u][j % 4u]);
}

// Walks this invocation's quads of its workgroup's block through `loss_elem`: writes each
// gradient and each loss (PER_ELEMENT), and returns the sum of the losses otherwise.
fn walk(lid: u32, wid: u32, nwg: u32) -> f32 {
    let b = lane_walk(block_range(steps(), wid, nwg, WG), lid);
    var rc = row_col(params.elem_base + 4u * b.x);
    let one = row_col(1u);
    let step = row_col(4u * LANES);
    var acc = vec4<f32>(0.0);
    for (var q = b.x; q < b.y; q += LANES) {
        let v = loss_quad(q, rc, one);
        rc = advance(rc, step);
        grad[q] = v[1] * params.grad_scale;
        if (PER_ELEMENT) {
            loss[4u * q] = v[0].x;
            loss[4u * q + 1u] = v[0].y;
            loss[4u * q + 2u] = v[0].z;
            loss[4u * q + 3u] = v[0].w;
        } else {
            acc += v[0];
        }
    }
    return (acc.x + acc.y) + (acc.z + acc.w);
}
