// Overlap losses over 16-bit logits in multiclass mode with trailing dims of an odd size,
// whose pixels share 32-bit words with other pixels' in every class: the gradient goes to an
// f32 staging array (binding 2, `grad` here), and `narrow` (`util/narrow.wgsl`) packs each
// segment's into the caller's 16-bit gradient after the gradient pass. Logits are read two a
// word; the gradient pass is `overlap_grads_f32.wgsl`.

@group(0) @binding(0) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

fn logit(i: u32) -> f32 {
    return unpack_pair(logits[i / 2u])[i % 2u];
}
