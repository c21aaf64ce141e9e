// Class rows over 16-bit logits and gradient (`util/half.wgsl`), four per step (8-byte accesses):
// for contiguous rows (no trailing dims) of a multiple of four classes on the
// workgroup-per-row path, so that every row starts on a pair of words. Defines the element
// accessors that the two sweeps (`class_rows_quads.wgsl`) go through.

@group(0) @binding(0) var<storage, read> logits: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec2<u32>>;

// Logits 4q .. 4q + 3 as stored.
fn raw_quad(q: u32) -> vec4<f32> {
    var w: vec2<u32>;
    if (IN_PLACE) {
        w = grad[q];
    } else {
        w = logits[q];
    }
    return vec4<f32>(unpack_pair(w.x), unpack_pair(w.y));
}

// Logit i as stored (before any soft cap).
fn raw_logit(i: u32) -> f32 {
    return raw_quad(i / 4u)[i % 4u];
}

// Stores gradient i into its quarter of the pair of words, keeping the rest (only the
// few-classes path calls it, which this width does not run; defined for the driver).
fn store_grad(i: u32, g: f32) {
    let w = grad[i / 4u];
    var v = vec4<f32>(unpack_pair(w.x), unpack_pair(w.y));
    v[i % 4u] = g;
    store_quad(i / 4u, v);
}

// Stores the gradients of quad q.
fn store_quad(q: u32, g: vec4<f32>) {
    grad[q] = vec2<u32>(pack_pair(g.xy), pack_pair(g.zw));
}
