// smoothed_hinge (Rennie & Srebro 2005), z = y s: 0 if z >= 1; 1 - gamma/2 - z if z <= 1 - gamma;
// (1 - z)^2 / (2 gamma) otherwise. params.p.x = gamma.
fn loss_elem(s: f32, y: f32, i: u32) -> vec2<f32> {
    let gamma = params.p.x;
    let z = y * s;
    if (z >= 1.0) {
        return vec2<f32>(0.0, 0.0);
    }
    if (z <= 1.0 - gamma) {
        return vec2<f32>(1.0 - 0.5 * gamma - z, -y);
    }
    let u = 1.0 - z;
    return vec2<f32>(u * u / (2.0 * gamma), -y * u / gamma);
}
