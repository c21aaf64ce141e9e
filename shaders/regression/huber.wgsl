// huber (torch huber_loss): 0.5 r^2 if |r| <= delta, else delta (|r| - 0.5 delta). params.p.x = delta.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let delta = params.p.x;
    let a = abs(r);
    if (a <= delta) {
        return vec2<f32>(0.5 * r * r, r);
    }
    return vec2<f32>(delta * (a - 0.5 * delta), delta * sign(r));
}
