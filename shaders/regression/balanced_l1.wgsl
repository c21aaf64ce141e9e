// balanced_l1 (mmdet balanced_l1_loss), d = |r|, b = e^{gamma/alpha} - 1:
//   d < beta: alpha/b (b d + 1) ln(b d / beta + 1) - alpha d
//   else:     gamma d + gamma / b - alpha beta
// params.p = (alpha, gamma, beta, b); b is computed on the host in f64.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    let alpha = params.p.x;
    let gamma = params.p.y;
    let beta = params.p.z;
    let b = params.p.w;
    let d = abs(r);
    if (d < beta) {
        let lg = log1p(b * d / beta);
        let value = alpha / b * (b * d + 1.0) * lg - alpha * d;
        let slope = alpha * lg + alpha * (b * d + 1.0) / (b * d + beta) - alpha;
        return vec2<f32>(value, slope * sign(r));
    }
    return vec2<f32>(gamma * d + gamma / b - alpha * beta, gamma * sign(r));
}
