// balanced_l1 (mmdet balanced_l1_loss), d = |r|, b = e^{gamma/alpha} - 1:
//   d < beta: alpha/b (b d + 1) ln(b d / beta + 1) - alpha d
//   else:     gamma d + gamma / b - alpha beta
// The slope below beta is alpha ln(b d / beta + 1) + alpha (1 - beta) / (b d + beta).
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
    let bd = b * ds;
    let lg = log1p(params.p.w * ds);
    let near = vec2<f32>(params.p2.x * (bd + 1.0) * lg - alpha * ds, alpha * lg + alpha * (1.0 - beta) / (bd + beta));
    let gamma = params.p2.y;
    let far = vec2<f32>(gamma * d + params.p2.z, gamma);
    let v = select(far, near, d < beta);
    return vec2<f32>(v.x, v.y * sign(r));
}
