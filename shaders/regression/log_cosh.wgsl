// log_cosh: log cosh r and its derivative tanh r, to a few ulps relative for every finite r. With
// a = |r|: below 1/2, polynomials in s = a² (log cosh a = s P(s), tanh a = a Q(s)), so that tiny
// residuals keep their relative accuracy; from 1/2, a + log(1 + e) - ln 2 and (1 - e) / (1 + e)
// with e = e^{-2a} in (0, 1/e] (log(1 + e) = e R(e)), finite for any finite a (1e4 gives
// 1e4 - ln 2). The polynomials are Chebyshev fits, relative error below 1e-8 in exact arithmetic.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let a = abs(r);
    let s = a * a;
    let ps = 0.5 + s * (-0.08333306 + s * (0.022214392 + s * (-0.0066605294 + s * 0.0017838025)));
    let qs = 1.0 + s * (-0.33333322 + s * (0.13332859 + s * (-0.053890746 + s * (0.021269504 + s * -0.0066137933))));
    let e = exp(-2.0 * a);
    let re = 1.0 + e * (-0.49999824 + e * (0.3332671 + e * (-0.24895397 + e * (0.19163369 + e * (-0.12995446 + e * 0.05255809)))));
    let near = vec2<f32>(s * ps, a * qs);
    let far = vec2<f32>(a - LN2 + e * re, (1.0 - e) / (1.0 + e));
    let v = select(far, near, a < 0.5);
    return vec2<f32>(v.x, sign(r) * v.y);
}
