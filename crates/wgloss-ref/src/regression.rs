//! Regression losses. Throughout, `r = pred − target` and `d = |r|`.

use ndarray::{ArrayD, ArrayViewD};

use crate::numerics::sign;
use crate::{elementwise, elementwise_indexed, scalar, LossGrad, Reduction};

/// Smooth-L1 kernel shared by the smooth-L1 family: `(loss, dloss/dr)`.
fn smooth_l1_elem(r: f64, beta: f64) -> (f64, f64) {
    let d = r.abs();
    if beta == 0.0 {
        (d, sign(r))
    } else if d < beta {
        (0.5 * r * r / beta, r / beta)
    } else {
        (d - 0.5 * beta, sign(r))
    }
}

/// Mean absolute error (torch `l1_loss`): `|r|`, derivative `sign(r)` (0 at r = 0).
pub fn mae(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        let r = p - t;
        (r.abs(), sign(r))
    })
}

/// Mean squared error (torch `mse_loss`): `r²`, derivative `2r`.
pub fn mse(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        let r = p - t;
        (r * r, 2.0 * r)
    })
}

/// `L = sqrt(mean lᵢ²)` with `(lᵢ, dlᵢ/dpᵢ) = f(pᵢ, tᵢ)`; `dL/dpᵢ = lᵢ·dlᵢ/dpᵢ / (n·L)`,
/// 0 everywhere when `L = 0`; `n = 0` gives `L = 0`.
fn root_mean_square(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    grad_scale: f64,
    f: impl Fn(f64, f64) -> (f64, f64),
) -> LossGrad {
    assert_eq!(
        pred.shape(),
        target.shape(),
        "pred and target shapes differ"
    );
    let n = pred.len();
    let (ls, dls): (Vec<f64>, Vec<f64>) = pred
        .iter()
        .zip(target.iter())
        .map(|(&p, &t)| f(p, t))
        .unzip();
    let loss = if n == 0 {
        0.0
    } else {
        (ls.iter().map(|l| l * l).sum::<f64>() / n as f64).sqrt()
    };
    let grad: Vec<f64> = if loss == 0.0 {
        vec![0.0; n]
    } else {
        let denom = n as f64 * loss;
        ls.iter()
            .zip(&dls)
            .map(|(l, dl)| grad_scale * l * dl / denom)
            .collect()
    };
    LossGrad {
        loss: scalar(loss),
        grad: ArrayD::from_shape_vec(pred.raw_dim(), grad).expect("length matches shape"),
    }
}

/// Root mean squared error: `L = sqrt(mean r²)` (reduction fixed to mean),
/// `dL/dpᵢ = rᵢ / (n·L)`, gradient 0 when `L = 0`.
pub fn rmse(pred: ArrayViewD<'_, f64>, target: ArrayViewD<'_, f64>, grad_scale: f64) -> LossGrad {
    root_mean_square(pred, target, grad_scale, |p, t| (p - t, 1.0))
}

/// Root mean squared log error: `lᵢ = ln(1+pᵢ) − ln(1+tᵢ)`, `L = sqrt(mean l²)`,
/// `dL/dpᵢ = lᵢ / (n·L·(1+pᵢ))`, gradient 0 when `L = 0`.
///
/// An element with `p ≤ −1` or `t ≤ −1` has `l = NaN`, so `L` and every gradient are NaN.
pub fn rmsle(pred: ArrayViewD<'_, f64>, target: ArrayViewD<'_, f64>, grad_scale: f64) -> LossGrad {
    root_mean_square(pred, target, grad_scale, |p, t| {
        if p <= -1.0 || t <= -1.0 {
            (f64::NAN, f64::NAN)
        } else {
            (p.ln_1p() - t.ln_1p(), 1.0 / (1.0 + p))
        }
    })
}

/// Log-cosh: `ln cosh r`, derivative `tanh r`, to full relative precision for every finite `r`:
/// below 1, `ln(1 + 2 sinh²(r/2))` (`cosh r − 1` without cancellation); from 1,
/// `|r| + ln(1 + e^{−2|r|}) − ln 2`, finite for huge `r`.
pub fn log_cosh(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        let r = p - t;
        let d = r.abs();
        let loss = if d < 1.0 {
            (2.0 * (0.5 * d).sinh().powi(2)).ln_1p()
        } else {
            d + (-2.0 * d).exp().ln_1p() - std::f64::consts::LN_2
        };
        (loss, r.tanh())
    })
}

/// Huber (torch `huber_loss`, `delta > 0`): `|r| ≤ δ`: `½r²`, derivative `r`;
/// otherwise `δ(|r| − ½δ)`, derivative `δ·sign(r)`.
pub fn huber(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    delta: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert!(delta > 0.0, "huber delta must be positive, got {delta}");
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        let r = p - t;
        let d = r.abs();
        if d <= delta {
            (0.5 * r * r, r)
        } else {
            (delta * (d - 0.5 * delta), delta * sign(r))
        }
    })
}

/// Smooth L1 (torch `smooth_l1_loss`, `beta ≥ 0`): `β = 0` is exactly L1;
/// `|r| < β`: `½r²/β`, derivative `r/β`; otherwise `|r| − ½β`, derivative `sign(r)`.
pub fn smooth_l1(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    beta: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert!(
        beta >= 0.0,
        "smooth_l1 beta must be non-negative, got {beta}"
    );
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        smooth_l1_elem(p - t, beta)
    })
}

/// [`smooth_l1`] with one β per coordinate of the last dimension: element `i`
/// (row-major flat index) uses `betas[i % betas.len()]`. A NaN β gives NaN losses.
pub fn smooth_l1_per_coord(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    betas: &[f64],
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        pred.shape().last(),
        Some(&betas.len()),
        "last dimension must equal the number of betas"
    );
    assert!(
        betas.iter().all(|b| b.is_nan() || *b >= 0.0),
        "smooth_l1 betas must be non-negative"
    );
    elementwise_indexed(pred, target, reduction, grad_scale, |i, p, t| {
        smooth_l1_elem(p - t, betas[i % betas.len()])
    })
}

/// Quantile (pinball) loss: `max(q·(t − p), (q − 1)·(t − p))`; derivative w.r.t. `p`:
/// `−q` if `t > p`, `1 − q` if `t < p`, 0 if `t = p`.
pub fn quantile(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    q: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        let u = t - p;
        let d = if u > 0.0 {
            -q
        } else if u < 0.0 {
            1.0 - q
        } else if u == 0.0 {
            0.0
        } else {
            f64::NAN
        };
        ((q * u).max((q - 1.0) * u), d)
    })
}

/// Balanced L1 (Libra R-CNN, mmdet `balanced_l1_loss`, `β > 0`), with `d = |r|`,
/// `b = e^{γ/α} − 1`:
/// `d < β`: `α/b·(b·d + 1)·ln(b·d/β + 1) − α·d`; otherwise `γ·d + γ/b − α·β`.
/// `dL/dd` is `α·ln(b·d/β + 1) + α·(1 − β)/(b·d + β)` resp. `γ`, times `sign(r)`.
/// Below β the loss is evaluated without the cancellation of its two terms near 0: with
/// `x = b·d/β` and `g(x) = (1 + x)·ln(1 + x) − x ≈ x²/2`, it is `α/b·(β·g(x) + (1 − β)·ln(1 + x))`.
pub fn balanced_l1(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    alpha: f64,
    gamma: f64,
    beta: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert!(beta > 0.0, "balanced_l1 beta must be positive, got {beta}");
    let b = (gamma / alpha).exp() - 1.0;
    elementwise(pred, target, reduction, grad_scale, |p, t| {
        let r = p - t;
        let d = r.abs();
        let (loss, dd) = if d < beta {
            let x = b * d / beta;
            let lg = x.ln_1p();
            (
                alpha / b * (beta * one_plus_x_log1p_minus_x(x) + (1.0 - beta) * lg),
                alpha * lg + alpha * (1.0 - beta) / (b * d + beta),
            )
        } else {
            (gamma * d + gamma / b - alpha * beta, gamma)
        };
        (loss, dd * sign(r))
    })
}

/// `(1 + x)·ln(1 + x) − x` for `x ≥ 0` to full relative precision: its alternating series
/// `Σ_{k≥2} (−x)^k / (k(k − 1))` below 0.1 (terms past 1e-18 relative dropped), the direct form
/// beyond (whose cancellation is then under a factor of 20).
fn one_plus_x_log1p_minus_x(x: f64) -> f64 {
    if x >= 0.1 {
        return (1.0 + x) * x.ln_1p() - x;
    }
    let mut sum = 0.0;
    let mut power = -x;
    for k in 2..=18 {
        power *= -x;
        sum += power / (k * (k - 1)) as f64;
    }
    sum
}

/// State of the Dynamic R-CNN smooth L1, whose β shrinks with the regression targets.
#[derive(Clone, Debug)]
pub struct DynamicSmoothL1State {
    /// β used by the next call.
    pub beta: f64,
    /// k-th smallest `|r|` of each call since the last update.
    pub history: Vec<f64>,
    /// Upper bound of β (and its starting value).
    pub initial_beta: f64,
    /// Which order statistic (1-based) of `|r|` is recorded per call.
    pub k: usize,
    /// Number of recorded calls between β updates.
    pub update_iters: usize,
}

impl DynamicSmoothL1State {
    /// `beta = initial_beta`, empty history. `k` and `update_iters` must be ≥ 1.
    pub fn new(initial_beta: f64, k: usize, update_iters: usize) -> Self {
        assert!(
            k >= 1 && update_iters >= 1,
            "k and update_iters must be >= 1"
        );
        Self {
            beta: initial_beta,
            history: Vec::new(),
            initial_beta,
            k,
            update_iters,
        }
    }
}

/// numpy `median`: middle value, mean of the two middle values for an even count,
/// NaN if any value is NaN.
fn median(values: &[f64]) -> f64 {
    if values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Dynamic smooth L1 (Dynamic R-CNN): [`smooth_l1`] with the current `state.beta`.
///
/// Afterwards the `min(k, n)`-th smallest `|r|` (1-based) is appended to the
/// history (nothing for `n = 0`); once it holds `update_iters` entries,
/// `beta = min(initial_beta, median(history))` (a NaN median leaves `initial_beta`)
/// and the history is cleared.
pub fn dynamic_smooth_l1(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    state: &mut DynamicSmoothL1State,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let out = smooth_l1(
        pred.view(),
        target.view(),
        state.beta,
        reduction,
        grad_scale,
    );
    let mut abs_r: Vec<f64> = pred
        .iter()
        .zip(target.iter())
        .map(|(p, t)| (p - t).abs())
        .collect();
    if !abs_r.is_empty() {
        assert!(state.k >= 1, "k must be >= 1");
        let k = state.k.min(abs_r.len());
        let (_, kth, _) = abs_r.select_nth_unstable_by(k - 1, f64::total_cmp);
        state.history.push(*kth);
        if state.history.len() == state.update_iters {
            state.beta = state.initial_beta.min(median(&state.history));
            state.history.clear();
        }
    }
    out
}

/// Running statistics of the RetinaMask self-adjusting smooth L1, one entry per coordinate.
#[derive(Clone, Debug)]
pub struct SelfAdjustingState {
    /// Running mean of `|r|` per coordinate.
    pub running_mean: Vec<f64>,
    /// Running (unbiased) variance of `|r|` per coordinate.
    pub running_var: Vec<f64>,
}

impl SelfAdjustingState {
    /// Mean filled with `beta_max`, variance with 0.
    pub fn new(num_features: usize, beta_max: f64) -> Self {
        Self {
            running_mean: vec![beta_max; num_features],
            running_var: vec![0.0; num_features],
        }
    }

    /// Per-coordinate `β = clamp(mean − var, 1e-3, beta_max)` (torch `clamp`: NaN stays NaN).
    pub fn betas(&self, beta_max: f64) -> Vec<f64> {
        self.running_mean
            .iter()
            .zip(&self.running_var)
            .map(|(m, v)| {
                let x = m - v;
                if x.is_nan() {
                    x
                } else {
                    x.max(1e-3).min(beta_max)
                }
            })
            .collect()
    }
}

/// Self-adjusting smooth L1 (RetinaMask).
///
/// `|r|` is viewed as `[rows, D]` (`D` = last dimension = state length). With the
/// per-coordinate batch mean `m` and unbiased variance `v` over rows, if no `v` is NaN
/// (needs rows ≥ 2 and finite inputs) the state is updated:
/// `mean ← (1 − momentum)·mean + momentum·m`, `var ← (1 − momentum)·var + momentum·v`.
/// The loss is then [`smooth_l1_per_coord`] with `state.betas(beta_max)` of the
/// updated state; β is treated as a constant in the gradient.
pub fn self_adjusting_smooth_l1(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    state: &mut SelfAdjustingState,
    momentum: f64,
    beta_max: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        pred.shape(),
        target.shape(),
        "pred and target shapes differ"
    );
    let dim = state.running_mean.len();
    assert_eq!(
        state.running_var.len(),
        dim,
        "state vectors differ in length"
    );
    assert_eq!(
        pred.shape().last(),
        Some(&dim),
        "last dimension must equal the state length"
    );
    let abs_r: Vec<f64> = pred
        .iter()
        .zip(target.iter())
        .map(|(p, t)| (p - t).abs())
        .collect();
    let rows = abs_r.len().checked_div(dim).unwrap_or(0);
    if rows >= 2 {
        let column = |c: usize| abs_r.iter().skip(c).step_by(dim);
        let n = rows as f64;
        let mean: Vec<f64> = (0..dim).map(|c| column(c).sum::<f64>() / n).collect();
        let var: Vec<f64> = (0..dim)
            .map(|c| column(c).map(|x| (x - mean[c]).powi(2)).sum::<f64>() / (n - 1.0))
            .collect();
        if !var.iter().any(|v| v.is_nan()) {
            for c in 0..dim {
                state.running_mean[c] =
                    (1.0 - momentum) * state.running_mean[c] + momentum * mean[c];
                state.running_var[c] = (1.0 - momentum) * state.running_var[c] + momentum * var[c];
            }
        }
    }
    smooth_l1_per_coord(pred, target, &state.betas(beta_max), reduction, grad_scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, ArrayD, IxDyn};

    const GS: f64 = 0.75;
    const ALL: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

    /// xorshift64* uniform numbers in [0, 1).
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.uniform()
        }
    }

    /// Random `(pred, target)` of `shape` with targets in `[t_lo, t_hi)` and residuals
    /// `|r| ∈ [0.01, r_max)`, every `|r|` at least 1e-3 away from each of `kinks`.
    fn inputs(
        seed: u64,
        shape: &[usize],
        (t_lo, t_hi): (f64, f64),
        r_max: f64,
        kinks: &[f64],
    ) -> (ArrayD<f64>, ArrayD<f64>) {
        let mut rng = Rng(seed);
        let target = ArrayD::from_shape_fn(IxDyn(shape), |_| rng.range(t_lo, t_hi));
        let pred = target.mapv(|t| loop {
            let d = rng.range(0.01, r_max);
            if kinks.iter().all(|k| (d - k).abs() > 1e-3) {
                break if rng.uniform() < 0.5 { t + d } else { t - d };
            }
        });
        (pred, target)
    }

    /// The reduced loss (sum of the per-element losses for `None`).
    fn total(lg: &LossGrad) -> f64 {
        lg.loss.sum()
    }

    /// Central finite differences of `f`'s total loss against its `grad`, per reduction.
    fn check_grad(
        pred: &ArrayD<f64>,
        target: &ArrayD<f64>,
        reductions: &[Reduction],
        f: impl Fn(ArrayViewD<'_, f64>, ArrayViewD<'_, f64>, Reduction) -> LossGrad,
    ) {
        const H: f64 = 1e-6;
        for &red in reductions {
            let lg = f(pred.view(), target.view(), red);
            assert_eq!(lg.grad.shape(), pred.shape());
            let expected_loss_shape: &[usize] = if red == Reduction::None {
                pred.shape()
            } else {
                &[]
            };
            assert_eq!(lg.loss.shape(), expected_loss_shape, "{red:?}");
            for (i, &g) in lg.grad.iter().enumerate() {
                let bump = |h: f64| {
                    let mut p = pred.clone();
                    *p.iter_mut().nth(i).unwrap() += h;
                    total(&f(p.view(), target.view(), red))
                };
                let fd = GS * (bump(H) - bump(-H)) / (2.0 * H);
                assert!(
                    (fd - g).abs() <= 1e-6 * (1.0 + g.abs()),
                    "{red:?} element {i}: analytic {g} vs finite difference {fd}"
                );
            }
        }
    }

    fn v(x: &[f64]) -> ArrayD<f64> {
        arr1(x).into_dyn()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn empty_input_reductions() {
        let e = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let mean = mse(e.view(), e.view(), Reduction::Mean, GS);
        assert_eq!(mean.loss.shape(), &[] as &[usize]);
        assert_eq!(mean.loss[[]], 0.0);
        assert_eq!(mean.grad.shape(), &[0, 3]);
        assert_eq!(mae(e.view(), e.view(), Reduction::Sum, GS).loss[[]], 0.0);
        assert_eq!(
            mae(e.view(), e.view(), Reduction::None, GS).loss.shape(),
            &[0, 3]
        );
        assert_eq!(rmse(e.view(), e.view(), GS).loss[[]], 0.0);
        assert_eq!(rmsle(e.view(), e.view(), GS).loss[[]], 0.0);
    }

    #[test]
    fn grad_mae_mse_log_cosh() {
        let (p, t) = inputs(1, &[3, 4], (-2.0, 2.0), 3.0, &[]);
        check_grad(&p, &t, &ALL, |p, t, r| mae(p, t, r, GS));
        check_grad(&p, &t, &ALL, |p, t, r| mse(p, t, r, GS));
        check_grad(&p, &t, &ALL, |p, t, r| log_cosh(p, t, r, GS));
    }

    #[test]
    fn grad_rmse_rmsle() {
        let (p, t) = inputs(2, &[2, 3, 2], (-2.0, 2.0), 3.0, &[]);
        check_grad(&p, &t, &[Reduction::Mean], |p, t, _| rmse(p, t, GS));
        // Keep 1 + p and 1 + t positive.
        let (p, t) = inputs(3, &[4, 3], (0.0, 3.0), 0.9, &[]);
        check_grad(&p, &t, &[Reduction::Mean], |p, t, _| rmsle(p, t, GS));
    }

    #[test]
    fn grad_huber_smooth_l1() {
        let (p, t) = inputs(4, &[3, 4], (-2.0, 2.0), 3.0, &[0.7, 1.3]);
        check_grad(&p, &t, &ALL, |p, t, r| huber(p, t, 1.3, r, GS));
        check_grad(&p, &t, &ALL, |p, t, r| smooth_l1(p, t, 0.7, r, GS));
        check_grad(&p, &t, &ALL, |p, t, r| smooth_l1(p, t, 0.0, r, GS));
        let betas = [0.2, 0.7, 1.3, 0.0];
        let (p, t) = inputs(5, &[3, 4], (-2.0, 2.0), 2.0, &betas);
        check_grad(&p, &t, &ALL, |p, t, r| {
            smooth_l1_per_coord(p, t, &betas, r, GS)
        });
    }

    #[test]
    fn grad_quantile_balanced_l1() {
        let (p, t) = inputs(6, &[3, 4], (-2.0, 2.0), 3.0, &[1.0]);
        for q in [0.1, 0.5, 0.9] {
            check_grad(&p, &t, &ALL, |p, t, r| quantile(p, t, q, r, GS));
        }
        check_grad(&p, &t, &ALL, |p, t, r| {
            balanced_l1(p, t, 0.5, 1.5, 1.0, r, GS)
        });
        let (p, t) = inputs(7, &[3, 4], (-2.0, 2.0), 2.0, &[0.6]);
        check_grad(&p, &t, &ALL, |p, t, r| {
            balanced_l1(p, t, 0.3, 1.0, 0.6, r, GS)
        });
    }

    #[test]
    fn grad_dynamic_smooth_l1() {
        let (p, t) = inputs(8, &[6, 4], (-2.0, 2.0), 2.0, &[0.4]);
        for red in ALL {
            let mut state = DynamicSmoothL1State::new(1.0, 5, 4);
            state.beta = 0.4;
            let lg = dynamic_smooth_l1(p.view(), t.view(), &mut state, red, GS);
            let fixed = smooth_l1(p.view(), t.view(), 0.4, red, GS);
            assert_eq!(lg.loss, fixed.loss);
            assert_eq!(lg.grad, fixed.grad);
        }
        check_grad(&p, &t, &ALL, |p, t, r| smooth_l1(p, t, 0.4, r, GS));
    }

    #[test]
    fn grad_self_adjusting_smooth_l1() {
        let (p, t) = inputs(9, &[6, 4], (-2.0, 2.0), 1.0, &[]);
        for red in ALL {
            let mut state = SelfAdjustingState::new(4, 1.0);
            let lg = self_adjusting_smooth_l1(p.view(), t.view(), &mut state, 0.3, 1.0, red, GS);
            let betas = state.betas(1.0);
            let fixed = smooth_l1_per_coord(p.view(), t.view(), &betas, red, GS);
            assert_eq!(lg.loss, fixed.loss);
            assert_eq!(lg.grad, fixed.grad);
            let min_gap = (&p - &t)
                .iter()
                .enumerate()
                .map(|(i, r)| (r.abs() - betas[i % 4]).abs())
                .fold(f64::INFINITY, f64::min);
            assert!(min_gap > 1e-4, "input too close to a kink: {min_gap}");
            check_grad(&p, &t, &[red], |p, t, r| {
                smooth_l1_per_coord(p, t, &betas, r, GS)
            });
        }
    }

    #[test]
    fn mae_mse_values() {
        let (p, t) = (v(&[1.0, 2.0, 3.0]), v(&[0.0, 2.0, 5.0])); // r = [1, 0, -2]
        let l1 = mae(p.view(), t.view(), Reduction::Mean, 3.0);
        assert!(close(l1.loss[[]], 1.0));
        assert_eq!(l1.grad, v(&[1.0, 0.0, -1.0]));
        let l2 = mse(p.view(), t.view(), Reduction::Sum, 1.0);
        assert!(close(l2.loss[[]], 5.0));
        assert_eq!(l2.grad, v(&[2.0, 0.0, -4.0]));
        let none = mse(p.view(), t.view(), Reduction::None, 1.0);
        assert_eq!(none.loss, v(&[1.0, 0.0, 4.0]));
    }

    #[test]
    fn rmse_values() {
        let (p, t) = (v(&[3.0, -4.0]), v(&[0.0, 0.0]));
        let lg = rmse(p.view(), t.view(), 1.0);
        let l = 12.5f64.sqrt();
        assert!(close(lg.loss[[]], l));
        assert!(close(lg.grad[[0]], 3.0 / (2.0 * l)));
        assert!(close(lg.grad[[1]], -4.0 / (2.0 * l)));
        let z = v(&[1.5, -2.0, 0.25]);
        let zero = rmse(z.view(), z.view(), 1.0);
        assert_eq!(zero.loss[[]], 0.0);
        assert!(zero.grad.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn rmsle_values_and_domain() {
        let e1 = std::f64::consts::E - 1.0;
        // l = [1, 0]: L = sqrt(1/2), dL/dp0 = 1 / (2·L·e).
        let lg = rmsle(v(&[e1, 2.0]).view(), v(&[0.0, 2.0]).view(), 1.0);
        let l = 0.5f64.sqrt();
        assert!(close(lg.loss[[]], l));
        assert!(close(lg.grad[[0]], 1.0 / (2.0 * l * std::f64::consts::E)));
        assert_eq!(lg.grad[[1]], 0.0);
        for (p, t) in [(-1.0, 0.5), (0.5, -1.0), (-3.0, 0.0)] {
            let bad = rmsle(v(&[p, 1.0]).view(), v(&[t, 0.0]).view(), 1.0);
            assert!(bad.loss[[]].is_nan());
            assert!(bad.grad.iter().all(|g| g.is_nan()));
        }
    }

    #[test]
    fn log_cosh_values() {
        let lg = log_cosh(
            v(&[1e4, 0.5]).view(),
            v(&[0.0, 0.0]).view(),
            Reduction::None,
            1.0,
        );
        let big = lg.loss[[0]];
        assert!(big.is_finite());
        let want = 1e4 - std::f64::consts::LN_2;
        assert!((big - want).abs() <= 1e-9 * want);
        assert!(close(lg.loss[[1]], 0.5f64.cosh().ln()));
        assert_eq!(lg.grad[[0]], 1.0);
        assert!(close(lg.grad[[1]], 0.5f64.tanh()));
        // Tiny residuals keep their relative precision: ln cosh r = r²/2 − r⁴/12 + …
        let tiny = log_cosh(
            v(&[1e-9, -3e-4]).view(),
            v(&[0.0, 0.0]).view(),
            Reduction::None,
            1.0,
        );
        for (i, r) in [1e-9f64, -3e-4].into_iter().enumerate() {
            let want = r * r / 2.0 - r.powi(4) / 12.0;
            assert!((tiny.loss[[i]] - want).abs() <= 1e-14 * want, "{r}");
        }
    }

    #[test]
    fn huber_smooth_l1_values() {
        let (p, t) = (v(&[0.5, -3.0]), v(&[0.0, 0.0]));
        let h = huber(p.view(), t.view(), 1.0, Reduction::None, 1.0);
        assert_eq!(h.loss, v(&[0.125, 2.5]));
        assert_eq!(h.grad, v(&[0.5, -1.0]));
        let h2 = huber(p.view(), t.view(), 2.0, Reduction::None, 1.0);
        assert_eq!(h2.loss, v(&[0.125, 4.0]));
        assert_eq!(h2.grad, v(&[0.5, -2.0]));
        let s = smooth_l1(p.view(), t.view(), 2.0, Reduction::None, 1.0);
        assert_eq!(s.loss, v(&[0.0625, 2.0]));
        assert_eq!(s.grad, v(&[0.25, -1.0]));
        // β = 0 is plain L1, including the zero gradient at r = 0.
        let (p0, t0) = (v(&[0.5, -3.0, 1.0]), v(&[0.0, 0.0, 1.0]));
        let s0 = smooth_l1(p0.view(), t0.view(), 0.0, Reduction::Mean, 1.0);
        let l1 = mae(p0.view(), t0.view(), Reduction::Mean, 1.0);
        assert_eq!(s0.loss, l1.loss);
        assert_eq!(s0.grad, l1.grad);
        // Per-coordinate β: [[r = 0.5 @ β 1, r = 0.5 @ β 0.25]].
        let pc = smooth_l1_per_coord(
            v(&[0.5, 0.5, 0.5, 0.5])
                .into_shape_with_order(IxDyn(&[2, 2]))
                .unwrap()
                .view(),
            ArrayD::zeros(IxDyn(&[2, 2])).view(),
            &[1.0, 0.25],
            Reduction::None,
            1.0,
        );
        assert_eq!(
            pc.loss.iter().copied().collect::<Vec<_>>(),
            [0.125, 0.375, 0.125, 0.375]
        );
    }

    #[test]
    fn quantile_values() {
        let (p, t) = (v(&[0.0, 2.0, 1.0]), v(&[2.0, 0.0, 1.0]));
        let lg = quantile(p.view(), t.view(), 0.9, Reduction::None, 1.0);
        assert!(close(lg.loss[[0]], 1.8));
        assert!(close(lg.loss[[1]], 0.2));
        assert_eq!(lg.loss[[2]], 0.0);
        assert!(close(lg.grad[[0]], -0.9));
        assert!(close(lg.grad[[1]], 0.1));
        assert_eq!(lg.grad[[2]], 0.0);
    }

    #[test]
    fn balanced_l1_values() {
        let (alpha, gamma, beta) = (0.5f64, 1.5, 1.0);
        let b = (gamma / alpha).exp() - 1.0;
        let (p, t) = (v(&[0.0, 2.0, -2.0]), v(&[0.0, 0.0, 0.0]));
        let lg = balanced_l1(p.view(), t.view(), alpha, gamma, beta, Reduction::None, 1.0);
        assert_eq!(lg.loss[[0]], 0.0);
        assert_eq!(lg.grad[[0]], 0.0);
        assert!(close(lg.loss[[1]], 2.5 + 1.5 / b));
        assert_eq!(lg.grad.as_slice().unwrap()[1..], [1.5, -1.5]);
        // With α·ln(b + 1) = γ the two pieces meet with equal value and slope at d = β = 1.
        let eps = 1e-9;
        let edge = balanced_l1(
            v(&[1.0 - eps, 1.0]).view(),
            v(&[0.0, 0.0]).view(),
            alpha,
            gamma,
            beta,
            Reduction::None,
            1.0,
        );
        assert!((edge.loss[[0]] - edge.loss[[1]]).abs() < 1e-8);
        assert!((edge.grad[[0]] - edge.grad[[1]]).abs() < 1e-8);
        // Tiny residuals keep their relative precision (β = 1: α b d²/2 − α b² d³/6 + …).
        let d = 1e-7;
        let tiny = balanced_l1(
            v(&[d]).view(),
            v(&[0.0]).view(),
            alpha,
            gamma,
            beta,
            Reduction::None,
            1.0,
        );
        let want = alpha * b * d * d / 2.0 - alpha * b * b * d.powi(3) / 6.0;
        assert!((tiny.loss[[0]] - want).abs() <= 1e-12 * want);
        // The series and the direct form of (1 + x) ln(1 + x) − x agree where they meet.
        for x in [0.0999, 0.1] {
            let direct = (1.0 + x) * f64::ln_1p(x) - x;
            assert!((one_plus_x_log1p_minus_x(x) - direct).abs() <= 1e-13 * direct);
        }
        assert!((one_plus_x_log1p_minus_x(0.0999) - 0.004_831_671_312_369_21).abs() < 5e-17);
    }

    #[test]
    fn dynamic_state_updates() {
        let z3 = v(&[0.0; 3]);
        let mut s = DynamicSmoothL1State::new(1.0, 2, 3);
        // k' = 2: second smallest of [0.3, 0.1, 0.5] is 0.3.
        dynamic_smooth_l1(
            v(&[0.3, -0.1, 0.5]).view(),
            z3.view(),
            &mut s,
            Reduction::Mean,
            1.0,
        );
        assert_eq!(s.history, [0.3]);
        // Empty input records nothing.
        let e = v(&[]);
        dynamic_smooth_l1(e.view(), e.view(), &mut s, Reduction::Mean, 1.0);
        assert_eq!(s.history, [0.3]);
        dynamic_smooth_l1(
            v(&[-0.4, 0.2]).view(),
            v(&[0.0, 0.0]).view(),
            &mut s,
            Reduction::Mean,
            1.0,
        );
        assert_eq!(s.history, [0.3, 0.4]);
        assert_eq!(s.beta, 1.0);
        // n = 1 < k: k' = 1. The loss still uses β = 1: ½·0.05²/1.
        let lg = dynamic_smooth_l1(
            v(&[0.05]).view(),
            v(&[0.0]).view(),
            &mut s,
            Reduction::Sum,
            1.0,
        );
        assert!(close(lg.loss[[]], 0.5 * 0.05 * 0.05));
        // median([0.3, 0.4, 0.05]) = 0.3.
        assert_eq!(s.beta, 0.3);
        assert!(s.history.is_empty());
        // The next call uses β = 0.3: r = 0.2 → ½·0.04/0.3.
        let lg = dynamic_smooth_l1(
            v(&[0.2]).view(),
            v(&[0.0]).view(),
            &mut s,
            Reduction::Sum,
            1.0,
        );
        assert!(close(lg.loss[[]], 0.02 / 0.3));

        // Even count: median is the mean of the middle pair; capped at initial_beta.
        let mut s = DynamicSmoothL1State::new(0.5, 1, 2);
        dynamic_smooth_l1(
            v(&[0.3, 0.9]).view(),
            v(&[0.0, 0.0]).view(),
            &mut s,
            Reduction::Mean,
            1.0,
        );
        dynamic_smooth_l1(
            v(&[0.4]).view(),
            v(&[0.0]).view(),
            &mut s,
            Reduction::Mean,
            1.0,
        );
        assert!(close(s.beta, 0.35));
        dynamic_smooth_l1(
            v(&[2.0]).view(),
            v(&[0.0]).view(),
            &mut s,
            Reduction::Mean,
            1.0,
        );
        dynamic_smooth_l1(
            v(&[3.0]).view(),
            v(&[0.0]).view(),
            &mut s,
            Reduction::Mean,
            1.0,
        );
        assert_eq!(s.beta, 0.5);
    }

    #[test]
    fn self_adjusting_state_updates() {
        // |r| = [[1, 2], [3, 6], [5, 4]]: m = [3, 4], unbiased v = [4, 4].
        let p =
            ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![1.0, -2.0, 3.0, 6.0, -5.0, 4.0]).unwrap();
        let t = ArrayD::zeros(IxDyn(&[3, 2]));
        let mut s = SelfAdjustingState::new(2, 1.0);
        let lg =
            self_adjusting_smooth_l1(p.view(), t.view(), &mut s, 0.1, 1.0, Reduction::Sum, 1.0);
        assert!(close(s.running_mean[0], 1.2) && close(s.running_mean[1], 1.3));
        assert!(close(s.running_var[0], 0.4) && close(s.running_var[1], 0.4));
        let betas = s.betas(1.0);
        assert!(close(betas[0], 0.8) && close(betas[1], 0.9));
        // Every |r| ≥ β: Σ(|r| − β/2) = 21 − 3·0.4 − 3·0.45.
        assert!(close(lg.loss[[]], 21.0 - 1.2 - 1.35));

        // One row: variance is NaN, the state is left alone.
        let before = s.clone();
        let one = v(&[0.5, 0.5])
            .into_shape_with_order(IxDyn(&[1, 2]))
            .unwrap();
        let zero = ArrayD::zeros(IxDyn(&[1, 2]));
        self_adjusting_smooth_l1(
            one.view(),
            zero.view(),
            &mut s,
            0.1,
            1.0,
            Reduction::Sum,
            1.0,
        );
        assert_eq!(s.running_mean, before.running_mean);
        assert_eq!(s.running_var, before.running_var);

        // betas clamp to [1e-3, beta_max] and keep NaN.
        let s = SelfAdjustingState {
            running_mean: vec![0.5, 5.0, f64::NAN],
            running_var: vec![0.6, 0.0, 0.0],
        };
        let b = s.betas(2.0);
        assert_eq!(b[..2], [1e-3, 2.0]);
        assert!(b[2].is_nan());
    }
}
