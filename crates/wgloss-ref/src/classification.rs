//! F3, classification: binary and margin losses of logits / scores against targets, element-wise.

use ndarray::ArrayViewD;

use crate::numerics::{bce_logit, sigmoid};
use crate::{elementwise, elementwise_indexed, LossGrad, Reduction};

/// torch `binary_cross_entropy_with_logits`:
/// `w_c · [(1 − t)·x + (1 + (pw_c − 1)·t)·softplus(−x)]`, where `pos_weight` and `weight`
/// (length C, the last dimension) are per class; `None` means 1.
pub fn bce_with_logits(
    logits: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    pos_weight: Option<&[f64]>,
    weight: Option<&[f64]>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let classes = logits.shape().last().copied().unwrap_or(1).max(1);
    elementwise_indexed(logits, target, reduction, grad_scale, |i, x, t| {
        let pw = pos_weight.map_or(1.0, |p| p[i % classes]);
        let w = weight.map_or(1.0, |w| w[i % classes]);
        let (loss, d) = bce_logit(x, t, pw);
        (w * loss, w * d)
    })
}

/// torchvision `sigmoid_focal_loss`: `ce · (1 − p_t)^γ`, times `α_t` when `alpha ≥ 0`.
pub fn sigmoid_focal(
    logits: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    alpha: f64,
    gamma: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(logits, target, reduction, grad_scale, |x, t| {
        let p = sigmoid(x);
        let (ce, p_minus_t) = bce_logit(x, t, 1.0);
        // q = 1 − p_t = t (1 − p) + (1 − t) p, with 1 − p = σ(−x).
        let q = t * sigmoid(-x) + (1.0 - t) * p;
        let dq = -(2.0 * t - 1.0) * p * sigmoid(-x);
        let focal = q.powf(gamma);
        // d/dx [ce q^γ] = (p − t) q^γ + ce γ q^(γ−1) dq; the second term tends to 0 as q → 0.
        let second = if q > 0.0 {
            ce * gamma * q.powf(gamma - 1.0) * dq
        } else {
            0.0
        };
        let (loss, d) = (ce * focal, p_minus_t * focal + second);
        if alpha >= 0.0 {
            let a = alpha * t + (1.0 - alpha) * (1.0 - t);
            (a * loss, a * d)
        } else {
            (loss, d)
        }
    })
}

/// optax `hinge_loss` with a margin: `max(0, m − y·s)`, y = ±1.
pub fn hinge(
    scores: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    margin: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(scores, target, reduction, grad_scale, |s, y| {
        let h = margin - y * s;
        if h > 0.0 {
            (h, -y)
        } else {
            (0.0, 0.0)
        }
    })
}

/// `max(0, m − y·s)²`.
pub fn squared_hinge(
    scores: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    margin: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(scores, target, reduction, grad_scale, |s, y| {
        let h = (margin - y * s).max(0.0);
        (h * h, -2.0 * y * h)
    })
}

/// Rennie & Srebro's smoothed hinge, z = y·s: 0 if z ≥ 1; 1 − γ/2 − z if z ≤ 1 − γ;
/// (1 − z)²/(2γ) otherwise.
pub fn smoothed_hinge(
    scores: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    gamma: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(scores, target, reduction, grad_scale, |s, y| {
        let z = y * s;
        if z >= 1.0 {
            (0.0, 0.0)
        } else if z <= 1.0 - gamma {
            (1.0 - gamma / 2.0 - z, -y)
        } else {
            ((1.0 - z).powi(2) / (2.0 * gamma), -y * (1.0 - z) / gamma)
        }
    })
}

/// Collobert et al.'s ramp loss: `min(max(0, 1 − z), 1 − s_cap)`, z = y·s.
pub fn ramp(
    scores: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    s_cap: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(scores, target, reduction, grad_scale, |s, y| {
        let h = 1.0 - y * s;
        let cap = 1.0 - s_cap;
        if h <= 0.0 {
            (0.0, 0.0)
        } else if h >= cap {
            (cap, 0.0)
        } else {
            (h, -y)
        }
    })
}

/// AdaBoost's exponential loss `e^{−y·s}`.
pub fn exponential(
    scores: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(scores, target, reduction, grad_scale, |s, y| {
        let e = (-y * s).exp();
        (e, -y * e)
    })
}

/// mmdet `GHMC`: binary cross-entropy on logits weighted by the inverse density of the gradient
/// norm `g = |σ(x) − t|` over `bins` bins with edges `k / bins` (in f32, the last `1 + 1e-6`),
/// counted over valid elements (`mask > 0`, all when `None`). With `tot = max(valid, 1)` and
/// `n` the non-empty bins, an element in bin b weighs `tot / (n · num_b)`, or with momentum
/// `tot / (n · acc_b)` after `acc_b ← m·acc_b + (1 − m)·num_b` for the non-empty bins (`acc`
/// is updated in place). Mean divides the weighted sum by `tot + f32::EPSILON`; the weights are
/// constants for the gradient.
#[allow(clippy::too_many_arguments)]
pub fn ghm_c(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    mask: Option<ArrayViewD<'_, f64>>,
    bins: usize,
    momentum: f64,
    acc: &mut [f64],
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(acc.len(), bins, "one running count per bin");
    let valid: Vec<bool> = match &mask {
        Some(m) => m.iter().map(|&v| v > 0.0).collect(),
        None => vec![true; pred.len()],
    };
    let edge = |k: usize| {
        let e = k as f32 / bins as f32;
        f64::from(if k == bins { e + 1e-6 } else { e })
    };
    let bin = |x: f64, t: f64| {
        let g = bce_logit(x, t, 1.0).1.abs();
        (0..bins).find(|&k| g >= edge(k) && g < edge(k + 1))
    };
    let mut num = vec![0usize; bins];
    for ((&x, &t), &ok) in pred.iter().zip(target.iter()).zip(&valid) {
        if let (true, Some(k)) = (ok, bin(x, t)) {
            num[k] += 1;
        }
    }
    let tot = (valid.iter().filter(|&&v| v).count() as f64).max(1.0);
    let nonempty = num.iter().filter(|&&c| c > 0).count().max(1) as f64;
    let weight: Vec<f64> = (0..bins)
        .map(|k| {
            if num[k] == 0 {
                return 0.0;
            }
            let density = if momentum > 0.0 {
                acc[k] = momentum * acc[k] + (1.0 - momentum) * num[k] as f64;
                acc[k]
            } else {
                num[k] as f64
            };
            tot / density / nonempty
        })
        .collect();
    let norm = if reduction == Reduction::Mean {
        tot + f64::from(f32::EPSILON)
    } else {
        1.0
    };
    let out = elementwise_indexed(pred, target, Reduction::None, grad_scale, |i, x, t| {
        let w = match (valid[i], bin(x, t)) {
            (true, Some(k)) => weight[k] / norm,
            _ => 0.0,
        };
        let (bce, d) = bce_logit(x, t, 1.0);
        (w * bce, w * d)
    });
    match reduction {
        Reduction::None => out,
        Reduction::Mean | Reduction::Sum => LossGrad {
            loss: crate::scalar(out.loss.sum()),
            grad: out.grad,
        },
    }
}

/// torch `cross_entropy` with class-index targets. `logits` is `[N, C, d...]`, `labels` is
/// `[N, d...]` holding class indices as f64 (`ignore_index` rows are skipped). With
/// `w` the class weights (ones when `None`), `W = Σ_c w_c`, `ε` the label smoothing:
/// `loss_r = (1 − ε) w_y (LSE − x_y) + ε/C (W·LSE − Σ_c w_c x_c)`; mean divides the sum by
/// `Σ_r w_{y_r}` over non-ignored rows (0 when there are none). Labels outside [0, C) panic.
pub fn cross_entropy(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    weight: Option<&[f64]>,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let extras = Extras {
        poly: 0.0,
        z_loss: 0.0,
        softcap: None,
    };
    class_loss(
        logits,
        labels,
        weight,
        ignore_index,
        label_smoothing,
        extras,
        reduction,
        grad_scale,
    )
}

/// [`cross_entropy`] with PaLM's z-loss (`z · LSE²` per non-ignored row, reduced like the rest)
/// and Gemma's logit soft cap (every logit read as `cap · tanh(x / cap)`).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_extras(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    weight: Option<&[f64]>,
    ignore_index: i64,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let extras = Extras {
        poly: 0.0,
        z_loss,
        softcap,
    };
    class_loss(
        logits,
        labels,
        weight,
        ignore_index,
        label_smoothing,
        extras,
        reduction,
        grad_scale,
    )
}

/// Terms added to cross-entropy by its variants.
struct Extras {
    poly: f64,
    z_loss: f64,
    softcap: Option<f64>,
}

/// Poly-1 (Leng et al. 2022) with class-index targets: cross-entropy plus `ε (1 − p_y)` per
/// row, `ignore_index` rows skipped, mean over the other rows.
pub fn poly1(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    epsilon: f64,
    ignore_index: i64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let extras = Extras {
        poly: epsilon,
        z_loss: 0.0,
        softcap: None,
    };
    class_loss(
        logits,
        labels,
        None,
        ignore_index,
        0.0,
        extras,
        reduction,
        grad_scale,
    )
}

/// Cross-entropy plus `poly · (1 − p_y)` per row.
#[allow(clippy::too_many_arguments)]
fn class_loss(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    weight: Option<&[f64]>,
    ignore_index: i64,
    label_smoothing: f64,
    extras: Extras,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let Extras {
        poly,
        z_loss,
        softcap,
    } = extras;
    let c = logits.shape()[1];
    let w = |k: usize| weight.map_or(1.0, |w| w[k]);
    let total_w: f64 = (0..c).map(w).sum();
    let eps = label_smoothing;
    by_rows(logits, labels, reduction, grad_scale, |x, label| {
        let label = label? as i64;
        if label == ignore_index {
            return None;
        }
        assert!((0..c as i64).contains(&label), "label {label} out of range");
        let y = label as usize;
        let (x, slope) = soft_capped(x, softcap);
        let (m, l) = log_sum_exp_parts(&x);
        let lse = m + l;
        let lp = (x[y] - m) - l;
        let wy = w(y);
        let sum_wx: f64 = (0..c).map(|k| w(k) * x[k]).sum();
        let py = lp.exp();
        let loss = -(1.0 - eps) * wy * lp + eps / c as f64 * (total_w * lse - sum_wx)
            - poly * lp.exp_m1()
            + z_loss * lse * lse;
        // d/dx_k of poly (1 − p_y) is poly p_y (p_k − [k = y]); of z LSE², 2 z LSE p_k.
        let grad = (0..c)
            .map(|k| {
                let p = (x[k] - lse).exp();
                let p_less_onehot = if k == y { lp.exp_m1() } else { p };
                (((1.0 - eps) * wy + poly * py) * p_less_onehot
                    + eps / c as f64 * (total_w * p - w(k))
                    + 2.0 * z_loss * lse * p)
                    * slope[k]
            })
            .collect();
        Some((loss, grad, wy))
    })
}

/// torch `cross_entropy` with class-probability targets `targets` (the logits' shape `[N, C,
/// d...]`): with `t' = (1 − ε) t + ε / C`, `loss_r = Σ_c w_c t'_c (LSE − x_c)` plus the z-loss,
/// logits soft-capped as in [`cross_entropy_extras`]; mean divides by the number of rows
/// (`N · d...`), as torch does for probability targets.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_probs(
    logits: ArrayViewD<'_, f64>,
    targets: ArrayViewD<'_, f64>,
    weight: Option<&[f64]>,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        logits.shape(),
        targets.shape(),
        "targets must have the logits' shape"
    );
    let c = logits.shape()[1];
    let w = |k: usize| weight.map_or(1.0, |w| w[k]);
    let eps = label_smoothing;
    let t: Vec<f64> = targets.iter().copied().collect();
    let mut row = 0;
    let inner: usize = logits.shape()[2..].iter().product();
    by_rows(logits, None, reduction, grad_scale, |x, _| {
        let r = row;
        row += 1;
        let target = |k: usize| {
            let i = (r / inner) * c * inner + k * inner + r % inner;
            (1.0 - eps) * t[i] + eps / c as f64
        };
        let (x, slope) = soft_capped(x, softcap);
        let lse = log_sum_exp(&x);
        let total: f64 = (0..c).map(|k| w(k) * target(k)).sum();
        let loss =
            (0..c).map(|k| w(k) * target(k) * (lse - x[k])).sum::<f64>() + z_loss * lse * lse;
        let grad = (0..c)
            .map(|k| {
                let p = (x[k] - lse).exp();
                (p * total - w(k) * target(k) + 2.0 * z_loss * lse * p) * slope[k]
            })
            .collect();
        Some((loss, grad, 1.0))
    })
}

/// Softmax focal loss, kornia `focal_loss` with per-class alpha: `loss_r = −α_y (1 − p_y)^γ
/// log p_y`; `ignore_index` rows are skipped and the mean is over the other rows.
pub fn softmax_focal(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    gamma: f64,
    alpha: Option<&[f64]>,
    ignore_index: i64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let c = logits.shape()[1];
    by_rows(logits, labels, reduction, grad_scale, |x, label| {
        let label = label? as i64;
        if label == ignore_index {
            return None;
        }
        assert!((0..c as i64).contains(&label), "label {label} out of range");
        let y = label as usize;
        let a = alpha.map_or(1.0, |a| a[y]);
        let (m, l) = log_sum_exp_parts(x);
        let lse = m + l;
        // log p_y, at most 0 (a NaN stays NaN).
        let lp = (x[y] - m) - l;
        let py = lp.exp();
        let q = -lp.exp_m1();
        // d/dx_j = α q^γ (1 − γ p_y log(p_y) / q) (p_j − [j = y]); log(p_y) / q → −1 as q → 0.
        let ratio = if q == 0.0 { -1.0 } else { lp / q };
        let qg = q.powf(gamma);
        let coef = a * qg * (1.0 - gamma * py * ratio);
        let grad = (0..c)
            .map(|k| {
                coef * if k == y {
                    lp.exp_m1()
                } else {
                    (x[k] - lse).exp()
                }
            })
            .collect();
        Some((-a * qg * lp, grad, 1.0))
    })
}

/// torch `multi_margin_loss`: `loss_r = w_y / C · Σ_{j ≠ y} max(0, margin − x_y + x_j)^p`
/// (p ∈ {1, 2}); mean over rows. Every label must be in [0, C).
pub fn multiclass_hinge(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    p: u32,
    margin: f64,
    weight: Option<&[f64]>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let c = logits.shape()[1];
    by_rows(logits, labels, reduction, grad_scale, |x, label| {
        let label = label? as i64;
        assert!((0..c as i64).contains(&label), "label {label} out of range");
        let y = label as usize;
        let scale = weight.map_or(1.0, |w| w[y]) / c as f64;
        let mut loss = 0.0;
        let mut grad = vec![0.0; c];
        for j in (0..c).filter(|&j| j != y) {
            let h = margin - x[y] + x[j];
            if h > 0.0 {
                loss += h.powi(p as i32);
                let d = if p == 1 { 1.0 } else { 2.0 * h };
                grad[j] += scale * d;
                grad[y] -= scale * d;
            }
        }
        Some((scale * loss, grad, 1.0))
    })
}

/// Logits soft-capped (`cap · tanh(x / cap)`) and the slopes of the cap.
fn soft_capped(x: &[f64], softcap: Option<f64>) -> (Vec<f64>, Vec<f64>) {
    let capped = x
        .iter()
        .map(|&v| softcap.map_or(v, |c| c * (v / c).tanh()))
        .collect();
    let slope = x
        .iter()
        .map(|&v| softcap.map_or(1.0, |c| 1.0 - (v / c).tanh().powi(2)))
        .collect();
    (capped, slope)
}

fn log_sum_exp(x: &[f64]) -> f64 {
    let (m, l) = log_sum_exp_parts(x);
    m + l
}

/// The log-sum-exp of `x` as `(m, l)`, `LSE = m + l`: `m` the largest logit and
/// `l = ln(1 + t) ≥ 0`, `t` the sum of `e^{x_k − m}` over every logit but the first largest.
/// `log p_k = (x_k − m) − l` then keeps its relative accuracy when `p_k` is near 1, where
/// `LSE − x_k` would round it away. A NaN logit makes `l` NaN.
fn log_sum_exp_parts(x: &[f64]) -> (f64, f64) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let top = x.iter().position(|&v| v == m);
    let t: f64 = x
        .iter()
        .enumerate()
        .filter(|&(k, _)| Some(k) != top)
        .map(|(_, &v)| (v - m).exp())
        .sum();
    (m, t.ln_1p())
}

/// A loss over the class dimension of `logits` `[N, C, d...]`, row by row: `row(x, label)`
/// gets a row's C logits and its label (`None` without labels) and returns its loss, the
/// gradient of that loss w.r.t. the row's logits and its weight in the mean's denominator, or
/// `None` for an ignored row (loss 0, gradient 0, not counted). The mean divides by the sum of
/// the weights (0 when it is 0).
fn by_rows<'a>(
    logits: ArrayViewD<'_, f64>,
    labels: impl Into<Option<ArrayViewD<'a, f64>>>,
    reduction: Reduction,
    grad_scale: f64,
    mut row: impl FnMut(&[f64], Option<f64>) -> Option<(f64, Vec<f64>, f64)>,
) -> LossGrad {
    let shape = logits.shape().to_vec();
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let all: Vec<f64> = logits.iter().copied().collect();
    let labels = labels.into();
    let y: Option<Vec<f64>> = labels.as_ref().map(|l| l.iter().copied().collect());
    if let Some(y) = &y {
        assert_eq!(y.len(), n * inner, "labels must be [N, d...]");
    }
    let mut row_loss = vec![0.0; n * inner];
    let mut grad = vec![0.0; all.len()];
    let mut denom = 0.0;
    for r in 0..n * inner {
        let at = |k: usize| (r / inner) * c * inner + k * inner + r % inner;
        let x: Vec<f64> = (0..c).map(|k| all[at(k)]).collect();
        let Some((loss, g, weight)) = row(&x, y.as_ref().map(|y| y[r])) else {
            continue;
        };
        row_loss[r] = loss;
        for (k, g) in g.into_iter().enumerate() {
            grad[at(k)] = g;
        }
        denom += weight;
    }
    let scale = match reduction {
        Reduction::Mean if denom != 0.0 => grad_scale / denom,
        Reduction::Mean => 0.0,
        Reduction::Sum | Reduction::None => grad_scale,
    };
    let grad =
        ndarray::ArrayD::from_shape_vec(shape.clone(), grad.iter().map(|g| g * scale).collect())
            .expect("length matches shape");
    let sum: f64 = row_loss.iter().sum();
    let row_shape: Vec<usize> = [n].into_iter().chain(shape[2..].iter().copied()).collect();
    let loss = match reduction {
        Reduction::None => ndarray::ArrayD::from_shape_vec(row_shape, row_loss).expect("rows"),
        Reduction::Sum => crate::scalar(sum),
        Reduction::Mean => crate::scalar(if denom != 0.0 { sum / denom } else { 0.0 }),
    };
    LossGrad { loss, grad }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, ArrayD};

    fn v(x: &[f64]) -> ArrayD<f64> {
        arr1(x).into_dyn()
    }

    #[test]
    fn bce_matches_the_textbook_form_and_stays_finite() {
        let (x, t) = (v(&[0.3, -2.0, 1e4, -1e4]), v(&[1.0, 0.0, 0.0, 1.0]));
        let out = bce_with_logits(x.view(), t.view(), None, None, Reduction::None, 1.0);
        let p = 1.0 / (1.0 + (-0.3f64).exp());
        assert!((out.loss[[0]] + p.ln()).abs() < 1e-12);
        assert!((out.grad[[0]] - (p - 1.0)).abs() < 1e-12);
        assert_eq!(out.loss[[2]], 1e4);
        assert_eq!(out.loss[[3]], 1e4);
        assert_eq!(out.grad[[3]], -1.0);
    }

    #[test]
    fn focal_with_gamma_zero_and_no_alpha_is_bce() {
        let (x, t) = (v(&[0.3, -2.0, 4.0]), v(&[1.0, 0.0, 0.25]));
        let f = sigmoid_focal(x.view(), t.view(), -1.0, 0.0, Reduction::None, 1.0);
        let b = bce_with_logits(x.view(), t.view(), None, None, Reduction::None, 1.0);
        for i in 0..3 {
            assert!((f.loss[[i]] - b.loss[[i]]).abs() < 1e-12);
            assert!((f.grad[[i]] - b.grad[[i]]).abs() < 1e-12);
        }
    }

    #[test]
    fn margin_losses_at_hand_computed_points() {
        let (s, y) = (v(&[0.5, 2.0, -0.5]), v(&[1.0, 1.0, 1.0]));
        let h = hinge(s.view(), y.view(), 1.0, Reduction::None, 1.0);
        assert_eq!(h.loss.as_slice().unwrap(), &[0.5, 0.0, 1.5]);
        let sh = smoothed_hinge(s.view(), y.view(), 1.0, Reduction::None, 1.0);
        assert_eq!(sh.loss.as_slice().unwrap(), &[0.125, 0.0, 1.0]);
        let r = ramp(
            v(&[-3.0]).view(),
            v(&[1.0]).view(),
            -1.0,
            Reduction::None,
            1.0,
        );
        assert_eq!(r.loss[[0]], 2.0);
    }
}
