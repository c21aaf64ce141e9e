// Class rows, one logit per step: logits and gradient as f32 arrays (any C, any trailing dims).
// Defines the element accessors; the sweeps are `class_rows_sweeps.wgsl`.

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

// Logit i as stored (before any soft cap).
fn raw_logit(i: u32) -> f32 {
    if (IN_PLACE) {
        return grad[i];
    }
    return logits[i];
}

fn store_grad(i: u32, g: f32) {
    grad[i] = g;
}
