// mse: r^2; derivative 2r (torch mse_loss).
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    return vec2<f32>(r * r, 2.0 * r);
}
