// smoothed_hinge (Rennie & Srebro 2005), z = y s: 0 if z >= 1; 1 - gamma/2 - z if z <= 1 - gamma;
// (1 - z)^2 / (2 gamma) otherwise. params.p.x = gamma.
fn loss_elem(s: f32, y: f32, i: u32) -> vec2<f32> {
    let gamma = params.p.x;
    let z = y * s;
    // The three pieces without branches (a CPU adapter runs every taken side anyway).
    let u = 1.0 - z;
    let quad = vec2<f32>(u * u / (2.0 * gamma), -y * u / gamma);
    let lin = vec2<f32>(1.0 - 0.5 * gamma - z, -y);
    return select(select(quad, lin, z <= 1.0 - gamma), vec2<f32>(0.0), z >= 1.0);
}
