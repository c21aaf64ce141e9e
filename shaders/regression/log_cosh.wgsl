// log_cosh: log cosh r = |r| + log(1 + e^{-2|r|}) - ln 2, finite for any finite r; derivative
// tanh r, written with e^{-2|r|} so that it never evaluates inf / inf. With e in (0, 1], plain
// log(1 + e) is as accurate as log1p here: its absolute error stays below an ulp of 1.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let a = abs(r);
    let e = exp(-2.0 * a);
    let u = 1.0 + e;
    return vec2<f32>(a + log(u) - LN2, sign(r) * (1.0 - e) / u);
}
