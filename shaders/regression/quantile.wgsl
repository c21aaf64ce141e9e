// quantile (pinball): max(q (t - p), (q - 1)(t - p)); derivative -q if t > p, 1 - q if t < p, 0 at
// t = p. params.p.x = q.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let q = params.p.x;
    let d = t - p;
    let g = select(select(0.0, 1.0 - q, d < 0.0), -q, d > 0.0);
    return vec2<f32>(max(q * d, (q - 1.0) * d), g);
}
