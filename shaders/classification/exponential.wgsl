// exponential (AdaBoost): e^{-y s}; d/ds = -y e^{-y s}. Overflows to inf only where the loss is
// beyond the f32 range.
fn loss_elem(s: f32, y: f32, i: u32) -> vec2<f32> {
    let e = exp(-y * s);
    return vec2<f32>(e, -y * e);
}
