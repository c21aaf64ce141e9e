// Boxes of f32 coordinates: one vec4 per box.

@group(0) @binding(0) var<storage, read> pred: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> targ: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec4<f32>>;

fn load_pred(i: u32) -> vec4<f32> {
    return pred[i];
}

fn load_targ(i: u32) -> vec4<f32> {
    return targ[i];
}

fn store_grad(i: u32, g: vec4<f32>) {
    grad[i] = g;
}

// Scales the gradient of step s (a box) by c (the driver's `apply`).
fn scale_grad(s: u32, c: f32) {
    grad[s] = grad[s] * c;
}
