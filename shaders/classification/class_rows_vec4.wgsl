// Class rows, four logits per step: logits and gradient as vec4 arrays (16-byte loads and
// stores). The host takes this width only for contiguous rows (no trailing dims) with C a
// multiple of four, so that every row starts on a vec4 (row.base = lead + r C, the lead a
// multiple of four). Defines the element accessors that the two sweeps of the workgroup-per-row
// path (`class_rows_quads.wgsl`) go through.

@group(0) @binding(0) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec4<f32>>;

// Logits 4q .. 4q + 3 as stored.
fn raw_quad(q: u32) -> vec4<f32> {
    if (IN_PLACE) {
        return grad[q];
    }
    return logits[q];
}

// Logit i as stored (before any soft cap).
fn raw_logit(i: u32) -> f32 {
    return raw_quad(i / 4u)[i % 4u];
}

fn store_grad(i: u32, g: f32) {
    grad[i / 4u][i % 4u] = g;
}

// Stores the gradients of quad q.
fn store_quad(q: u32, g: vec4<f32>) {
    grad[q] = g;
}
