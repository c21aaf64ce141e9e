// smooth_l1 (torch smooth_l1_loss). params.p.x = beta.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    return smooth_l1(p - t, params.p.x);
}
