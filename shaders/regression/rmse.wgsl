// rmse: sqrt(mean r^2). The element function gives r^2 and 2r; the ROOT finish turns the total into
// the loss and the coefficient 1 / (2 n rmse) that the `apply` pass multiplies in.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    return vec2<f32>(r * r, 2.0 * r);
}
