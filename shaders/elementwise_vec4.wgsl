// Element-wise driver, four elements per step: bindings 0-2 as vec4 arrays (16-byte loads and
// stores), `steps`, the accessors of a step that `elementwise_quads.wgsl`'s walk goes through,
// and `elem_inputs`. The host gives these passes the multiple-of-four prefix of the input and
// runs the remaining 1-3 elements through `elementwise_f32.wgsl`. params.n counts elements (a
// multiple of 4 here).

@group(0) @binding(0) var<storage, read> pred: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> targ: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec4<f32>>;

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
