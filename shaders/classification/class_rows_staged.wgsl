// Class rows over 16-bit logits with trailing dims of an odd size: the elements of a row share
// their 32-bit words with other rows' in every class, so that no invocation owns a word. The
// gradient goes to an f32 staging array (binding 2, `grad` here), and `narrow`
// (`util/narrow.wgsl`) packs each segment's into the caller's 16-bit gradient once its rows are
// done. Defines the element accessors (logits read two a word); the sweeps are
// `class_rows_sweeps.wgsl`. In place, the caller's gradient is bound as the logits.

@group(0) @binding(0) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

// Logit i as stored (before any soft cap).
fn raw_logit(i: u32) -> f32 {
    return unpack_pair(logits[i / 2u])[i % 2u];
}

fn store_grad(i: u32, g: f32) {
    grad[i] = g;
}
