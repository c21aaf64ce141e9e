// balanced_l1 (mmdet balanced_l1_loss), d = |r|, b = e^{gamma/alpha} - 1:
//   d < beta: alpha/b (b d + 1) ln(b d / beta + 1) - alpha d
//   else:     gamma d + gamma / b - alpha beta
// The slope below beta is alpha ln(b d / beta + 1) + alpha (1 - beta) / (b d + beta).
// Below beta the loss is evaluated without the cancellation of its two terms near 0: with
// x = b d / beta and g(x) = (1 + x) ln(1 + x) - x (about x^2 / 2), it is
// alpha/b (beta g(x) + (1 - beta) ln(1 + x)), and the slope's second term is
// alpha (1 - beta) / beta / (1 + x). The logarithm is k ln 2 + 2 atanh(s) with |s| <= 1/3 by the
// prelude's series (no `log`, whose cost a CPU adapter pays on every element):
// - up to x = 1: k = 0 and s = x / (2 + x), so that 1 + x is never rounded; g comes from the
//   same series, g = s^2 (s T + P) (2 + x) with P = 1 + s^2 T and T = atanh_tail(s^2) (all
//   terms positive);
// - beyond: 1 + x = f 2^k with f in [1, 2), s = (f - 1) / (f + 1), and g = (1 + x) ln(1 + x) - x.
// One division serves s and 1 / (1 + x) = (den q) 2^-k with q = 1 / (den f), den = s's
// denominator; 2^-k of 1 + x past 2^126 flushes to 0, where that term is below the first's last
// bit.
// params.p = (alpha, beta, 0, b / beta) and params.p2 = (alpha / b, gamma, gamma / b - alpha beta,
// alpha (1 - beta) / beta), computed on the host in f64.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let beta = params.p.y;
    let d = abs(r);
    // Both pieces, without a branch (lavapipe runs both sides of one anyway); x is clamped at
    // the piece's end so that the unused piece stays finite.
    let x = params.p.w * min(d, beta);
    let u = 1.0 + x;
    let bu = bitcast<u32>(u);
    let series = x <= 1.0;
    let fm = 2.0 * mantissa(bu);
    let f = select(fm, u, series);
    let den = select(fm + 1.0, 2.0 + x, series);
    let q = 1.0 / (den * f);
    let s = select(fm - 1.0, x, series) * f * q;
    let s2 = s * s;
    let tail = atanh_tail(s2);
    let pw = 1.0 + s2 * tail;
    // The exponent unbiased in integers: with `f32(e) - 127.0`, NVIDIA's compiler folds k ln 2
    // into e ln 2 - 127 ln 2, an f32 constant up to 4e-6 off, and a cancellation (lg 1.4e-6 off).
    let k = select(f32(i32(bu >> 23u) - 127), 0.0, series);
    let lg = k * LN2 + 2.0 * s * pw;
    let g = select(u * lg - x, s2 * (s * tail + pw) * den, series);
    let inv_u = den * q * select(bitcast<f32>((254u - (bu >> 23u)) << 23u), 1.0, series);
    let alpha = params.p.x;
    let near = vec2<f32>(params.p2.x * (beta * g + (1.0 - beta) * lg), alpha * lg + params.p2.w * inv_u);
    let gamma = params.p2.y;
    let far = vec2<f32>(gamma * d + params.p2.z, gamma);
    let v = select(far, near, d < beta);
    return vec2<f32>(v.x, v.y * sign(r));
}
