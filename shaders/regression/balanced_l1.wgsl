// balanced_l1 (mmdet balanced_l1_loss), d = |r|, b = e^{gamma/alpha} - 1:
//   d < beta: alpha/b (b d + 1) ln(b d / beta + 1) - alpha d
//   else:     gamma d + gamma / b - alpha beta
// The slope below beta is alpha ln(b d / beta + 1) + alpha (1 - beta) / (b d + beta).
// Below beta the loss is evaluated without the cancellation of its two terms near 0: with
// x = b d / beta and g(x) = (1 + x) ln(1 + x) - x (about x^2 / 2), it is
// alpha/b (beta g(x) + (1 - beta) ln(1 + x)); g is x^2 G(x) below x = 1/2, G a Chebyshev fit
// (relative error 1.5e-9 in exact arithmetic), and the direct form beyond.
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
    let lg = log1p(x);
    let gx = x * x * (0.5 + x * (-0.16666655 + x * (0.08332928 + x * (-0.049938001 + x * (0.032838702 + x * (-0.021547128 + x * (0.011658528 + x * -0.0035047219)))))));
    let g = select((1.0 + x) * lg - x, gx, x < 0.5);
    let near = vec2<f32>(params.p2.x * (beta * g + (1.0 - beta) * lg), alpha * lg + alpha * (1.0 - beta) / (b * ds + beta));
    let gamma = params.p2.y;
    let far = vec2<f32>(gamma * d + params.p2.z, gamma);
    let v = select(far, near, d < beta);
    return vec2<f32>(v.x, v.y * sign(r));
}
