// rmsle: sqrt(mean l^2) with l = ln((1 + p) / (1 + t)), taken as k ln 2 + 2 atanh(s) with
// |s| <= 1/3 by the prelude's series, with no logarithm: Vulkan bounds `log` near 1 only by an
// absolute 2^-21 (lavapipe's is that coarse), a relative error of 5 % when p and t are 1e-5 apart.
// - While the ratio (1 + p) / (1 + t) is in [1/2, 2]: k = 0 and s = h / (w + h) with
//   h = (p - t) / 2 and w = 1 + t, each exact or one rounding, so that l keeps its relative
//   precision however close p and t are, and no sum overflows.
// - Beyond: with 1 + p = fu 2^eu and 1 + t = fw 2^ew (fu, fw in [1/2, 1)), s = (fu - fw) / (fu + fw)
//   and k = eu - ew, so that no ratio overflows (p = 1e38 over t near -1 is finite).
// One division serves both s and the gradient's 1 / (1 + p) = 2^-eu / fu.
// p or t <= -1 is outside the domain and gives NaN explicitly, as does a NaN input.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let w = 1.0 + t;
    let h = 0.5 * (p - t);
    let bu = bitcast<u32>(1.0 + p);
    let bw = bitcast<u32>(w);
    let fu = mantissa(bu);
    let fw = mantissa(bw);
    let near = h >= -0.25 * w && h <= 0.5 * w;
    let num = select(fu - fw, h, near);
    let den = select(fu + fw, w + h, near);
    // In integers: a compiler may distribute k ln 2 over a difference of floats (balanced_l1.wgsl).
    let k = select(f32(i32(bu >> 23u) - i32(bw >> 23u)), 0.0, near);
    let q = 1.0 / (den * fu);
    let s = num * fu * q;
    let s2 = s * s;
    let l = k * LN2 + 2.0 * s * (1.0 + s2 * atanh_tail(s2));
    // 2 l / (1 + p) = (l / 2 / fu) 2^(2 - eu), the power of two a normal number for every eu.
    let v = vec2<f32>(l * l, 0.5 * l * den * q * bitcast<f32>((255u - (bu >> 23u)) << 23u));
    let nan = bitcast<f32>(0x7fc00000u);
    return select(v, vec2<f32>(nan, nan), p <= -1.0 || t <= -1.0 || is_nan(p - t));
}
