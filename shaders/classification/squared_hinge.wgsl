// squared_hinge, y = +-1: max(0, m - y s)^2; d/ds = -2 y max(0, m - y s). NaN stays NaN (see
// hinge). params.p.x = margin.
fn loss_elem(s: f32, y: f32, i: u32) -> vec2<f32> {
    let h = params.p.x - y * s;
    let hp = h * select(0.0, 1.0, h > 0.0);
    return vec2<f32>(h * hp, -2.0 * y * hp);
}
