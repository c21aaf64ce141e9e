// balanced_l1 (mmdet balanced_l1_loss), d = |r|, b = e^{gamma/alpha} - 1:
//   d < beta: alpha/b (b d + 1) ln(b d / beta + 1) - alpha d
//   else:     gamma d + gamma / b - alpha beta
// The slope below beta is alpha ln(b d / beta + 1) + alpha (1 - beta) / (b d + beta).
// Below beta the loss is evaluated without the cancellation of its two terms near 0: with
// x = b d / beta and g(x) = (1 + x) ln(1 + x) - x (about x^2 / 2), it is
// alpha/b (beta g(x) + (1 - beta) ln(1 + x)). Up to x = 1 both logarithm and g come from one
// series: with s = x / (2 + x), ln(1 + x) = 2 s P and g = s^2 (s T + P) (2 + x), where
// P = 1 + s^2 T and T = atanh_tail(s^2) (all terms positive); beyond, the direct forms.
// params.p = (alpha, beta, b, b / beta) and params.p2 = (alpha / b, gamma, gamma / b - alpha beta),
// computed on the host in f64 so that the kernel divides once.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let alpha = params.p.x;
    let beta = params.p.y;
    let b = params.p.z;
    let d = abs(r);
    // Both pieces, without a branch (lavapipe runs both sides of one anyway); the logarithm's
    // argument is clamped below beta so that the unused piece stays finite.
    let ds = min(d, beta);
    let x = params.p.w * ds;
    let s = x / (2.0 + x);
    let s2 = s * s;
    let tail = atanh_tail(s2);
    let pw = 1.0 + s2 * tail;
    let series = x <= 1.0;
    let lg = select(log(1.0 + x), 2.0 * s * pw, series);
    let g = select((1.0 + x) * lg - x, s2 * (s * tail + pw) * (2.0 + x), series);
    let near = vec2<f32>(params.p2.x * (beta * g + (1.0 - beta) * lg), alpha * lg + alpha * (1.0 - beta) / (b * ds + beta));
    let gamma = params.p2.y;
    let far = vec2<f32>(gamma * d + params.p2.z, gamma);
    let v = select(far, near, d < beta);
    return vec2<f32>(v.x, v.y * sign(r));
}
