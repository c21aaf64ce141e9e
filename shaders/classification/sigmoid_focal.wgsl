// sigmoid_focal (torchvision sigmoid_focal_loss), p = sigma(x), q = 1 - p_t = t (1 - p) + (1 - t) p:
//   ce q^gamma, times alpha_t = alpha t + (1 - alpha)(1 - t) when alpha >= 0;
//   d/dx = (p - t) q^gamma + ce gamma q^(gamma - 1) dq/dx, dq/dx = -(2t - 1) p (1 - p).
// The second term tends to 0 as q -> 0 for every gamma > 0 (ce ~ q there), and is taken as 0
// at q = 0, so gamma < 1 gives finite gradients. params.p = (alpha, gamma, -, -).

// gamma == 2 (the default): q^2 and 2 q by multiplication instead of two powers (each an
// exponential and a logarithm).
override SQUARE: bool = false;

fn loss_elem(x: f32, t: f32, i: u32) -> vec2<f32> {
    let alpha = params.p.x;
    let gamma = params.p.y;
    let e = exp(-abs(x));
    // sigma(x) and sigma(-x) = 1 - p, as bce_logit computes them (one division for both).
    let sig = sigmoid_pair(x, e);
    let p = sig.x;
    let pm = sig.y;
    // ce and p - t, without the cancellations of (1 - t) x + softplus(-x) and p - t.
    let b = bce_logit(x, t, 1.0, e);
    let ce = b.x;
    let q = t * pm + (1.0 - t) * p;
    let dq = -(2.0 * t - 1.0) * p * pm;
    var focal = q * q;
    var second = ce * 2.0 * q * dq;
    if (!SQUARE) {
        focal = pow0(q, gamma);
        second = 0.0;
        if (q > 0.0) {
            second = ce * gamma * pow(q, gamma - 1.0) * dq;
        }
    }
    var v = vec2<f32>(ce * focal, b.y * focal + second);
    if (alpha >= 0.0) {
        v *= alpha * t + (1.0 - alpha) * (1.0 - t);
    }
    return v;
}
