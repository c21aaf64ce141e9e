// log_cosh: log cosh r = |r| + softplus(-2|r|) - ln 2, finite for any finite r; derivative tanh r,
// written with e^{-2|r|} so that it never evaluates inf / inf.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let a = abs(r);
    let e = exp(-2.0 * a);
    return vec2<f32>(a + log1p(e) - LN2, sign(r) * (1.0 - e) / (1.0 + e));
}
