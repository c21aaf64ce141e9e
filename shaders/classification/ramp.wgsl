// ramp (Collobert et al. 2006), z = y s: min(max(0, 1 - z), 1 - s_cap); d/ds = -y on the slope.
// params.p.x = s_cap.
fn loss_elem(s: f32, y: f32, i: u32) -> vec2<f32> {
    let h = 1.0 - y * s;
    let cap = 1.0 - params.p.x;
    if (h <= 0.0) {
        return vec2<f32>(0.0, 0.0);
    }
    if (h >= cap) {
        return vec2<f32>(cap, 0.0);
    }
    return vec2<f32>(h, -y);
}
