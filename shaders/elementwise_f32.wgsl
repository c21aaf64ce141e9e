// Element-wise driver, one element per step: bindings 0-2 as f32 arrays, `steps`, the walk of the
// fused pass and `elem_inputs`. Composed after `elementwise.wgsl`.

@group(0) @binding(0) var<storage, read> pred: array<f32>;
@group(0) @binding(1) var<storage, read> targ: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

// Elements per step.
const STEP: u32 = 1u;

// Steps of a walk over the segment: its elements.
fn steps() -> u32 {
    return params.n;
}

// Predictions and targets of step s (component x; the others 0).
fn step_inputs(s: u32) -> mat2x4<f32> {
    return mat2x4<f32>(vec4<f32>(pred[s], 0.0, 0.0, 0.0), vec4<f32>(targ[s], 0.0, 0.0, 0.0));
}

// Stores the gradient of step s (component x).
fn store_grads(s: u32, g: vec4<f32>) {
    grad[s] = g.x;
}

// Scales the gradient of step s by c (`apply`).
fn scale_grad(s: u32, c: f32) {
    grad[s] = grad[s] * c;
}

// Prediction and target of element j of the segment.
fn elem_inputs(j: u32) -> vec2<f32> {
    return vec2<f32>(pred[j], targ[j]);
}

// Walks this invocation's elements of its workgroup's block through `loss_elem`: writes each
// gradient and each loss (PER_ELEMENT), and returns the sum of the losses otherwise.
fn walk(lid: u32, wid: u32, nwg: u32) -> f32 {
    let b = lane_walk(block_range(steps(), wid, nwg, WG), lid);
    var rc = row_col(params.elem_base + b.x);
    let step = row_col(LANES);
    var acc = 0.0;
    for (var i = b.x; i < b.y; i += LANES) {
        at_elem(rc);
        let v = loss_elem(pred[i], targ[i], params.elem_base + i);
        rc = advance(rc, step);
        grad[i] = v.y * params.grad_scale;
        if (PER_ELEMENT) {
            loss[i] = v.x;
        } else {
            acc += v.x;
        }
    }
    return acc;
}
