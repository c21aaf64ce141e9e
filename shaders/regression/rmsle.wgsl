// rmsle: sqrt(mean (log1p p - log1p t)^2), with l = ln((1 + p) / (1 + t)): one logarithm per
// element. While the ratio is in [1/2, 2], l = log1p((p - t) / (1 + t)) by its series: the
// logarithm of a ratio near 1 would keep only its absolute precision (2^-21 on Vulkan), a
// relative error of 5 % when p and t are 1e-5 apart. Beyond, the ratio of the mantissas and the
// difference of the exponents, so that no ratio overflows (p = 1e38 over t near -1 is finite).
// p or t <= -1 is outside the domain and gives NaN explicitly (log(0) would give -inf).
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let u = 1.0 + p;
    let w = 1.0 + t;
    let x = (p - t) / w;
    let fu = frexp(u);
    let fw = frexp(w);
    let far = log(fu.fract / fw.fract) + f32(fu.exp - fw.exp) * LN2;
    let l = select(far, log1p_near(x), x >= -0.5 && x <= 1.0);
    let v = vec2<f32>(l * l, 2.0 * l / u);
    let nan = bitcast<f32>(0x7fc00000u);
    return select(v, vec2<f32>(nan, nan), p <= -1.0 || t <= -1.0);
}
