// kl_div (torch kl_div): input p = log q, target t = p (or log p with log_target).
//   log_target false: xlogy(t, t) - t p   (0 where t == 0, as torch's xlogy), d/dp = -t
//   log_target true:  e^t (t - p),        d/dp = -e^t
// params.p.x = 1 for log_target. The batchmean reduction divides by the batch size on the host.
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    if (params.p.x != 0.0) {
        let e = exp(t);
        return vec2<f32>(e * (t - p), -e);
    }
    // t log t is 0 at t = 0 (and NaN for t < 0, from log, as torch's xlogy). In [1/2, 2], log t is
    // log1p(t - 1) by the series (t - 1 exact): Vulkan bounds `log` there only by an absolute
    // 2^-21, which would be all a target near 1 keeps of t log t.
    let lt = select(log(t), log1p_near(t - 1.0), t >= 0.5 && t <= 2.0);
    let tlogt = select(t * lt, 0.0, t == 0.0);
    return vec2<f32>(tlogt - t * p, -t);
}
