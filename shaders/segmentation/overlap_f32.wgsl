// Overlap losses over f32 logits and gradient: one element (binary, multilabel) or one pixel
// (multiclass) per step of the gradient pass (`overlap_grads_f32.wgsl`).

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

fn logit(i: u32) -> f32 {
    return logits[i];
}
