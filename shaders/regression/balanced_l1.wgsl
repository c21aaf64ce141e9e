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
    if (d < beta) {
        let bd = b * d;
        let lg = log1p(params.p.w * d);
        let value = params.p2.x * (bd + 1.0) * lg - alpha * d;
        let slope = alpha * lg + alpha * (1.0 - beta) / (bd + beta);
        return vec2<f32>(value, slope * sign(r));
    }
    let gamma = params.p2.y;
    return vec2<f32>(gamma * d + params.p2.z, gamma * sign(r));
}
