// log_cosh: log cosh r and its derivative tanh r, to a few ulps relative for every finite r. With
// a = |r|: below 1/2, polynomials in s = a² (log cosh a = s P(s), tanh a = a Q(s)), so that tiny
// residuals keep their relative accuracy; from 1/2, a + log(1 + e) - ln 2 and (1 - e) / (1 + e)
// with e = e^{-2a} in (0, 1/e] (log(1 + e) = e R(e)), finite for any finite a (1e4 gives
// 1e4 - ln 2). The polynomials are minimax fits of the lowest degrees that keep the loss and the
// derivative within 1.3e-7 relative in exact arithmetic (their f32 coefficients included): each
// term costs a CPU adapter about as much as a memory access.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let a = abs(r);
    let s = a * a;
    let ps = 0.49999994 + s * (-0.083326176 + s * (0.022075806 + s * -0.0057705743));
    let qs = 1.0 + s * (-0.3333307 + s * (0.13324779 + s * (-0.05298606 + s * 0.017134972)));
    let e = exp(-2.0 * a);
    let re = 0.9999976 + e * (-0.49990144 + e * (0.3318309 + e * (-0.23870704 + e * (0.15356642 + e * -0.058950927))));
    let near = vec2<f32>(s * ps, a * qs);
    let far = vec2<f32>(a - LN2 + e * re, (1.0 - e) / (1.0 + e));
    let v = select(far, near, a < 0.5);
    return vec2<f32>(v.x, sign(r) * v.y);
}
