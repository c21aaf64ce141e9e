// hinge (optax hinge_loss with a margin), y = +-1: max(0, m - y s); d/ds = -y where positive.
// The loss is h times an indicator so that a NaN input stays NaN. params.p.x = margin.
fn loss_elem(s: f32, y: f32, i: u32) -> vec2<f32> {
    let h = params.p.x - y * s;
    let on = select(0.0, 1.0, h > 0.0);
    return vec2<f32>(h * on, -y * on);
}
