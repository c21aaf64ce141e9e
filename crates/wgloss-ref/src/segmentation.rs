//! F4, segmentation: the overlap losses (Dice, Jaccard, Tversky, sensitivity–specificity) of
//! per-pixel logits `[N, C, d...]` against label maps or masks, and the Combo loss.
//!
//! The overlap losses follow smp's `DiceLoss` / `JaccardLoss` / `TverskyLoss` with
//! `from_logits=True`, `log_loss=False`, `classes=None`, no class weights:
//!
//! ```text
//! p = softmax over dim 1 (Multiclass) or σ(x) (Binary, Multilabel)
//! t = one-hot of the label (Multiclass) or the mask value (Binary, Multilabel)
//! k = 0 at ignored pixels (label / mask value == ignore_index), 1 elsewhere
//! p̃ = p·k, t̃ = t·k          (an ignored pixel has p̃ = t̃ = 0; its gradient is 0)
//! per group g (class c, or image n and class c when per_image), sums over its pixels:
//!     I = Σ p̃ t̃,  P = Σ p̃,  T = Σ t̃,  FP = Σ p̃ (1 − t̃),  FN = Σ (1 − p̃) t̃
//! score_g = num / max(den, eps):
//!     Dice     num = 2I + s,  den = P + T + s
//!     Jaccard  num = I + s,   den = P + T − I + s
//!     Tversky  num = I + s,   den = I + α FP + β FN + s
//! loss_g = (1 − score_g) · [T > 0]     (an absent group gives 0 but counts in the mean)
//! m = Σ_g loss_g / G,  G = C (or N·C when per_image);   L = m (Tversky: m^γ)
//! ```
//!
//! `[T > 0]` multiplies (as smp's `loss *= mask`), so a NaN logit makes the loss NaN even when
//! it sits at an ignored pixel (`NaN·0`) or in an absent class. `max(den, eps)` is torch's
//! `clamp_min`: no gradient flows through a clamped denominator (`den < eps`). With no groups
//! (N = 0 and per_image, or C = 0) the loss is 0.
//!
//! Gradient w.r.t. the probabilities: with `w_g = L'(m)·[T > 0] / G` (`L'(m) = 1`, Tversky
//! `γ m^{γ−1}`, taken as 0 at m = 0 when γ < 1), `D = max(den, eps)` and `u = [den ≥ eps]`,
//!
//! ```text
//! dL/dp_i = k_i (A_g t_i + B_g),   A_g = w_g (−κ + score·μ·u) / D,   B_g = w_g score ν u / D
//!     Dice κ = 2, μ = 0, ν = 1;  Jaccard κ = 1, μ = −1, ν = 1;  Tversky κ = 1, μ = 1 − α − β, ν = α
//! ```
//!
//! (`∂num/∂p_i = κ t_i`, `∂den/∂p_i = μ t_i + ν`), then through the activation:
//! `dL/dx_c = p_c (g_c − Σ_j p_j g_j)` per pixel for softmax, `g·σ(x)σ(−x)` for sigmoid.
//!
//! Difference from smp ≥ 0.4 (commit d989faa, "Modify Jaccard, Dice and Tversky losses"):
//! it computes every score as Tversky with `I = (P + T − Σ|p − t|)/2`, so its Dice is
//! `(I + s)/max((P + T)/2 + s, eps)`. For 0/1 targets and `s = 0` that is the value and
//! gradient above for every present class (the clamp can only act when T = 0); with `s ≠ 0`
//! its Dice differs, and this module keeps the catalogue's (smp ≤ 0.3.4) `(2I + s)/(P + T + s)`.

use ndarray::{ArrayD, ArrayViewD};

use crate::numerics::sigmoid;
use crate::{cross_entropy, scalar, LossGrad, Reduction};

/// How logits and targets are laid out (smp's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegMode {
    /// logits [N, 1, d...], target mask [N, 1, d...] (0/1 as f64); sigmoid.
    Binary,
    /// logits [N, C, d...], target labels [N, d...] (class indices as f64); softmax over dim 1.
    Multiclass,
    /// logits [N, C, d...], target masks [N, C, d...] (0/1); sigmoid per element.
    Multilabel,
}

/// Which overlap score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Overlap {
    /// smp `DiceLoss`: score `(2I + s) / max(P + T + s, eps)`.
    Dice,
    /// smp `JaccardLoss`: score `(I + s) / max(P + T − I + s, eps)`.
    Jaccard,
    /// smp TverskyLoss: score (I + s) / max(I + α FP + β FN + s, eps); loss = (mean_c loss_c)^γ.
    Tversky { alpha: f64, beta: f64, gamma: f64 },
    /// Brosch et al. 2015, per class on probabilities p and targets t (sums over batch and space):
    /// w Σ(t−p)² t / (Σt + eps) + (1 − w) Σ(t−p)² (1−t) / (Σ(1−t) + eps); mean over classes.
    ///
    /// `smooth` is not used. Ignored pixels are left out of every sum, `Σ(1 − t)` included
    /// (written with the masks: `Σ(t̃ − p̃)² t̃ / (T + eps)` and `Σ(t̃ − p̃)² (k − t̃) / (Σ(k − t̃) +
    /// eps)`). A class absent from the target is not zeroed: its first term is 0 and its
    /// second term still penalises every p > 0. Per group, with `a = w / (T + eps)` and
    /// `b = (1 − w) / (Σ(k − t̃) + eps)`: `dL/dp_i = k_i · 2 (p_i − t_i)(a t_i + b (1 − t_i)) / G`.
    /// (NiftyNet's `sensitivity_specificity_loss` sums over classes instead of the mean.)
    SensitivitySpecificity { w: f64 },
}

/// Options shared by the overlap losses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegOptions {
    pub mode: SegMode,
    /// Added to numerator and denominator of the score (smp default 0.0).
    pub smooth: f64,
    /// Lower clamp of the score's denominator; added to sensitivity–specificity's denominators
    /// (smp default 1e-7; 1e-5 is the catalogue default of sensitivity_specificity).
    pub eps: f64,
    /// Pixels whose label (Multiclass) or mask value (Binary, Multilabel) equals this are
    /// ignored.
    pub ignore_index: Option<i64>,
    /// false (smp): sums over batch and space per class (dims (0, 2)); true: per image and class
    /// (sums over space only), then the mean over N × C.
    pub per_image: bool,
}

/// The loss (0-d array) and its gradient w.r.t. `logits` (logits' shape), times grad_scale.
///
/// See the module docs for the formulas. Panics on mismatched shapes, a Binary logit tensor
/// with C ≠ 1, a Multiclass label that is neither `ignore_index` nor an integer in [0, C),
/// negative (or NaN) `smooth`/`eps`, Tversky `alpha`/`beta` < 0 or `gamma` ≤ 0, and
/// sensitivity–specificity `w` outside [0, 1].
pub fn overlap_loss(
    kind: Overlap,
    logits: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    opts: SegOptions,
    grad_scale: f64,
) -> LossGrad {
    check_params(kind, &opts);
    let shape = logits.shape().to_vec();
    assert!(shape.len() >= 2, "logits must be [N, C, d...]");
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let x: Vec<f64> = logits.iter().copied().collect();
    let (t, keep) = masked_targets(opts.mode, &shape, target, opts.ignore_index);
    let p = probabilities(opts.mode, &x, c, inner);
    let pm: Vec<f64> = p.iter().zip(&keep).map(|(p, k)| p * k).collect();
    let layout = Groups {
        c,
        inner,
        count: if opts.per_image { n * c } else { c },
        per_image: opts.per_image,
    };
    let (loss, gp) = match kind {
        Overlap::SensitivitySpecificity { w } => sens_spec(&pm, &t, &keep, layout, w, opts.eps),
        _ => overlap(kind, &pm, &t, &keep, layout, opts.smooth, opts.eps),
    };
    let gx = chain(opts.mode, &x, &p, &gp, c, inner);
    let grad = ArrayD::from_shape_vec(shape, gx.iter().map(|g| g * grad_scale).collect())
        .expect("length matches shape");
    LossGrad {
        loss: scalar(loss),
        grad,
    }
}

/// Combo loss (Taghanaki et al. 2019 as the catalogue defines it): alpha · CE + (1 − alpha) · dice
/// on the same multiclass logits [N, C, d...] with labels [N, d...]. CE is torch cross_entropy
/// (class weights `ce_weight`, `ignore_index`, weighted mean over non-ignored pixels, 0 when all
/// are ignored); dice is `overlap_loss(Overlap::Dice, ..)` in Multiclass mode with the same
/// ignore_index, smooth and eps, per_image false.
///
/// The gradient is `grad_scale · (alpha ∇CE + (1 − alpha) ∇dice)`. Panics as
/// [`overlap_loss`] does, and on `alpha` outside [0, 1] or a `ce_weight` whose length is not C.
#[allow(clippy::too_many_arguments)]
pub fn combo(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    alpha: f64,
    ce_weight: Option<&[f64]>,
    ignore_index: Option<i64>,
    smooth: f64,
    eps: f64,
    grad_scale: f64,
) -> LossGrad {
    assert!(
        (0.0..=1.0).contains(&alpha),
        "combo alpha must be in [0, 1]"
    );
    assert!(logits.ndim() >= 2, "logits must be [N, C, d...]");
    if let Some(w) = ce_weight {
        assert_eq!(w.len(), logits.shape()[1], "one CE weight per class");
    }
    let opts = SegOptions {
        mode: SegMode::Multiclass,
        smooth,
        eps,
        ignore_index,
        per_image: false,
    };
    // Validates the labels first: with no ignore_index every label is then in [0, C), so the
    // sentinel below never matches one.
    let dice = overlap_loss(
        Overlap::Dice,
        logits.view(),
        labels.view(),
        opts,
        (1.0 - alpha) * grad_scale,
    );
    let ce = cross_entropy(
        logits,
        labels,
        ce_weight,
        ignore_index.unwrap_or(i64::MIN),
        0.0,
        Reduction::Mean,
        alpha * grad_scale,
    );
    LossGrad {
        loss: scalar(alpha * ce.loss[[]] + (1.0 - alpha) * dice.loss[[]]),
        grad: ce.grad + dice.grad,
    }
}

fn check_params(kind: Overlap, opts: &SegOptions) {
    assert!(opts.smooth >= 0.0, "smooth must be ≥ 0");
    assert!(opts.eps >= 0.0, "eps must be ≥ 0");
    match kind {
        Overlap::Tversky { alpha, beta, gamma } => {
            assert!(
                alpha >= 0.0 && beta >= 0.0,
                "Tversky alpha and beta must be ≥ 0"
            );
            assert!(gamma > 0.0, "Tversky gamma must be > 0");
        }
        Overlap::SensitivitySpecificity { w } => {
            assert!(
                (0.0..=1.0).contains(&w),
                "sensitivity-specificity w must be in [0, 1]"
            );
        }
        Overlap::Dice | Overlap::Jaccard => {}
    }
}

/// Targets `t̃` and keep flags `k` (1.0 / 0.0), both in the logits' layout `[N, C, d...]`.
fn masked_targets(
    mode: SegMode,
    shape: &[usize],
    target: ArrayViewD<'_, f64>,
    ignore_index: Option<i64>,
) -> (Vec<f64>, Vec<f64>) {
    let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
    let ignored = |v: f64| ignore_index.is_some_and(|i| v == i as f64);
    match mode {
        SegMode::Binary | SegMode::Multilabel => {
            if mode == SegMode::Binary {
                assert_eq!(c, 1, "binary logits must be [N, 1, d...]");
            }
            assert_eq!(target.shape(), shape, "target must have the logits' shape");
            let keep: Vec<f64> = target
                .iter()
                .map(|&v| if ignored(v) { 0.0 } else { 1.0 })
                .collect();
            let t = target.iter().zip(&keep).map(|(v, k)| v * k).collect();
            (t, keep)
        }
        SegMode::Multiclass => {
            let want: Vec<usize> = [shape[0]]
                .into_iter()
                .chain(shape[2..].iter().copied())
                .collect();
            assert_eq!(target.shape(), &want[..], "labels must be [N, d...]");
            let mut t = vec![0.0; shape.iter().product()];
            let mut keep = vec![1.0; t.len()];
            for (r, &label) in target.iter().enumerate() {
                let at = |k: usize| ((r / inner) * c + k) * inner + r % inner;
                if ignored(label) {
                    for k in 0..c {
                        keep[at(k)] = 0.0;
                    }
                    continue;
                }
                assert!(
                    label.fract() == 0.0 && label >= 0.0 && label < c as f64,
                    "label {label} out of range"
                );
                t[at(label as usize)] = 1.0;
            }
            (t, keep)
        }
    }
}

/// Softmax over the class dimension (Multiclass) or element-wise sigmoid, in the logits' layout.
fn probabilities(mode: SegMode, x: &[f64], c: usize, inner: usize) -> Vec<f64> {
    if mode != SegMode::Multiclass {
        return x.iter().map(|&v| sigmoid(v)).collect();
    }
    let mut p = vec![0.0; x.len()];
    for r in 0..x.len() / c.max(1) {
        let at = |k: usize| ((r / inner) * c + k) * inner + r % inner;
        let m = (0..c).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
        // A NaN logit: f64::max skips it, so feed it to the sum to make the whole row NaN.
        let nan = (0..c).any(|k| x[at(k)].is_nan());
        let lse = m + (0..c).map(|k| (x[at(k)] - m).exp()).sum::<f64>().ln();
        for k in 0..c {
            p[at(k)] = if nan {
                f64::NAN
            } else {
                (x[at(k)] - lse).exp()
            };
        }
    }
    p
}

/// dL/dx from dL/dp through the activation.
fn chain(mode: SegMode, x: &[f64], p: &[f64], gp: &[f64], c: usize, inner: usize) -> Vec<f64> {
    if mode != SegMode::Multiclass {
        return x
            .iter()
            .zip(gp)
            .map(|(&v, g)| g * sigmoid(v) * sigmoid(-v))
            .collect();
    }
    let mut gx = vec![0.0; x.len()];
    for r in 0..x.len() / c.max(1) {
        let at = |k: usize| ((r / inner) * c + k) * inner + r % inner;
        let dot: f64 = (0..c).map(|k| p[at(k)] * gp[at(k)]).sum();
        for k in 0..c {
            gx[at(k)] = p[at(k)] * (gp[at(k)] - dot);
        }
    }
    gx
}

/// Which group (class, or image and class) each element of `[N, C, d...]` is summed into.
#[derive(Clone, Copy)]
struct Groups {
    c: usize,
    inner: usize,
    count: usize,
    per_image: bool,
}

impl Groups {
    fn of(&self, e: usize) -> usize {
        let nc = e / self.inner;
        if self.per_image {
            nc
        } else {
            nc % self.c
        }
    }
}

/// Dice / Jaccard / Tversky on masked probabilities `pm` and targets `t`: the loss and dL/dp.
fn overlap(
    kind: Overlap,
    pm: &[f64],
    t: &[f64],
    keep: &[f64],
    groups: Groups,
    smooth: f64,
    eps: f64,
) -> (f64, Vec<f64>) {
    let g = groups.count;
    let (mut inter, mut psum, mut tsum) = (vec![0.0; g], vec![0.0; g], vec![0.0; g]);
    let (mut fp, mut fneg) = (vec![0.0; g], vec![0.0; g]);
    for (e, (&p, &t)) in pm.iter().zip(t).enumerate() {
        let j = groups.of(e);
        inter[j] += p * t;
        psum[j] += p;
        tsum[j] += t;
        fp[j] += p * (1.0 - t);
        fneg[j] += (1.0 - p) * t;
    }
    // (κ, μ, ν): ∂num/∂p_i = κ t_i, ∂den/∂p_i = μ t_i + ν.
    let (kappa, mu, nu) = match kind {
        Overlap::Dice => (2.0, 0.0, 1.0),
        Overlap::Jaccard => (1.0, -1.0, 1.0),
        Overlap::Tversky { alpha, beta, .. } => (1.0, 1.0 - alpha - beta, alpha),
        Overlap::SensitivitySpecificity { .. } => unreachable!("handled by sens_spec"),
    };
    let mut scores = Vec::with_capacity(g);
    let mut m = 0.0;
    for j in 0..g {
        let (i, s) = (inter[j], smooth);
        let (num, den) = match kind {
            Overlap::Dice => (2.0 * i + s, psum[j] + tsum[j] + s),
            Overlap::Jaccard => (i + s, psum[j] + tsum[j] - i + s),
            Overlap::Tversky { alpha, beta, .. } => (i + s, i + alpha * fp[j] + beta * fneg[j] + s),
            Overlap::SensitivitySpecificity { .. } => unreachable!(),
        };
        // torch clamp_min: NaN stays NaN, the gradient passes where den ≥ eps.
        let clamped = den < eps;
        let d = if clamped { eps } else { den };
        let score = num / d;
        let present = if tsum[j] > 0.0 { 1.0 } else { 0.0 };
        m += (1.0 - score) * present;
        scores.push((score, d, clamped, present));
    }
    let m = if g > 0 { m / g as f64 } else { 0.0 };
    let (loss, dl_dm) = match kind {
        Overlap::Tversky { gamma, .. } if g > 0 => {
            let d = if m == 0.0 && gamma < 1.0 {
                0.0
            } else {
                gamma * m.powf(gamma - 1.0)
            };
            (m.powf(gamma), d)
        }
        _ => (m, 1.0),
    };
    let coef: Vec<(f64, f64)> = scores
        .iter()
        .map(|&(score, d, clamped, present)| {
            let w = dl_dm * present / g as f64;
            let u = if clamped { 0.0 } else { 1.0 };
            (w * (-kappa + score * mu * u) / d, w * score * nu * u / d)
        })
        .collect();
    let gp = t
        .iter()
        .zip(keep)
        .enumerate()
        .map(|(e, (&t, &k))| {
            let (a, b) = coef[groups.of(e)];
            k * (a * t + b)
        })
        .collect();
    (loss, gp)
}

/// Sensitivity–specificity loss (see [`Overlap::SensitivitySpecificity`]): the loss and dL/dp.
fn sens_spec(
    pm: &[f64],
    t: &[f64],
    keep: &[f64],
    groups: Groups,
    w: f64,
    eps: f64,
) -> (f64, Vec<f64>) {
    let g = groups.count;
    let (mut pos, mut neg) = (vec![0.0; g], vec![0.0; g]);
    let (mut err_pos, mut err_neg) = (vec![0.0; g], vec![0.0; g]);
    for (e, ((&p, &t), &k)) in pm.iter().zip(t).zip(keep).enumerate() {
        let j = groups.of(e);
        let sq = (t - p) * (t - p);
        pos[j] += t;
        neg[j] += k - t;
        err_pos[j] += sq * t;
        err_neg[j] += sq * (k - t);
    }
    if g == 0 {
        return (0.0, vec![0.0; pm.len()]);
    }
    let a: Vec<f64> = pos.iter().map(|&s| w / (s + eps)).collect();
    let b: Vec<f64> = neg.iter().map(|&s| (1.0 - w) / (s + eps)).collect();
    let loss = (0..g)
        .map(|j| a[j] * err_pos[j] + b[j] * err_neg[j])
        .sum::<f64>()
        / g as f64;
    let gp = pm
        .iter()
        .zip(t)
        .zip(keep)
        .enumerate()
        .map(|(e, ((&p, &t), &k))| {
            let j = groups.of(e);
            k * 2.0 * (p - t) * (a[j] * t + b[j] * (k - t)) / g as f64
        })
        .collect();
    (loss, gp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    /// Marsaglia's xorshift64, enough for reproducible test data.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            lo + (hi - lo) * (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    const MODES: [SegMode; 3] = [SegMode::Binary, SegMode::Multiclass, SegMode::Multilabel];

    fn kinds() -> Vec<Overlap> {
        vec![
            Overlap::Dice,
            Overlap::Jaccard,
            Overlap::Tversky {
                alpha: 0.3,
                beta: 0.7,
                gamma: 1.0,
            },
            Overlap::Tversky {
                alpha: 0.7,
                beta: 0.4,
                gamma: 0.75,
            },
            Overlap::Tversky {
                alpha: 0.5,
                beta: 0.5,
                gamma: 2.0,
            },
            Overlap::SensitivitySpecificity { w: 0.05 },
        ]
    }

    fn opts(mode: SegMode, smooth: f64, ignore_index: Option<i64>, per_image: bool) -> SegOptions {
        SegOptions {
            mode,
            smooth,
            eps: 1e-7,
            ignore_index,
            per_image,
        }
    }

    fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
    }

    /// Random logits in [−3, 3] and a target for `mode` with `[n, c, h, w]` logits. The last
    /// class (Multiclass, Multilabel) is absent from the target, image 1 of a Binary mask is
    /// empty; with `ignore` about 15% of the pixels (or mask entries) hold the ignore value.
    fn case(
        rng: &mut Rng,
        mode: SegMode,
        shape: [usize; 4],
        ignore: Option<i64>,
    ) -> (ArrayD<f64>, ArrayD<f64>) {
        let [n, c, h, w] = shape;
        let logits = ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.uniform(-3.0, 3.0));
        let mut pick = |value: f64| match ignore {
            Some(i) if rng.uniform(0.0, 1.0) < 0.15 => i as f64,
            _ => value,
        };
        let target = match mode {
            SegMode::Multiclass => {
                let present = (c - 1).max(1);
                let mut r2 = Rng(0x1234_5678);
                ArrayD::from_shape_fn(IxDyn(&[n, h, w]), |_| {
                    pick((r2.uniform(0.0, present as f64) as usize) as f64)
                })
            }
            SegMode::Binary => {
                let mut r2 = Rng(0x2345_6789);
                ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
                    let on = ix[0] == 0 && r2.uniform(0.0, 1.0) < 0.5;
                    pick(if on { 1.0 } else { 0.0 })
                })
            }
            SegMode::Multilabel => {
                let mut r2 = Rng(0x3456_789A);
                ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
                    let on = ix[1] + 1 < c && r2.uniform(0.0, 1.0) < 0.5;
                    pick(if on { 1.0 } else { 0.0 })
                })
            }
        };
        (logits, target)
    }

    /// Central differences of `f` at `x` against its analytic gradient.
    fn check_fd(label: &str, x: &ArrayD<f64>, f: impl Fn(ArrayViewD<'_, f64>) -> LossGrad) {
        let h = 1e-6;
        let out = f(x.view());
        assert!(out.loss[[]].is_finite(), "{label}: loss {}", out.loss[[]]);
        for (i, &g) in out.grad.iter().enumerate() {
            let mut xp = x.clone();
            let mut xm = x.clone();
            xp.as_slice_mut().unwrap()[i] += h;
            xm.as_slice_mut().unwrap()[i] -= h;
            let num = (f(xp.view()).loss[[]] - f(xm.view()).loss[[]]) / (2.0 * h);
            assert!(
                close(num, g, 1e-5, 1e-8),
                "{label}: element {i}: fd {num} vs analytic {g}"
            );
        }
    }

    #[test]
    fn overlap_grads_match_finite_differences() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for kind in kinds() {
            for mode in MODES {
                let c = if mode == SegMode::Binary { 1 } else { 3 };
                let ignore = match mode {
                    SegMode::Multiclass => Some(255),
                    _ => Some(-1),
                };
                for ignore in [None, ignore] {
                    let (x, t) = case(&mut rng, mode, [2, c, 4, 5], ignore);
                    for per_image in [false, true] {
                        for smooth in [0.0, 1.0] {
                            let o = opts(mode, smooth, ignore, per_image);
                            let label = format!("{kind:?} {o:?}");
                            check_fd(&label, &x, |x| overlap_loss(kind, x, t.view(), o, 1.0));
                        }
                    }
                }
            }
        }
    }

    /// eps = 12 clamps some denominators (absent classes, some per-image groups) and not
    /// others; no gradient flows through a clamped one.
    #[test]
    fn clamped_denominators_match_finite_differences() {
        let mut rng = Rng(0x5EED);
        for kind in kinds() {
            for mode in [SegMode::Multiclass, SegMode::Multilabel] {
                let (x, t) = case(&mut rng, mode, [2, 3, 4, 5], None);
                for per_image in [false, true] {
                    let o = SegOptions {
                        eps: 12.0,
                        ..opts(mode, 0.5, None, per_image)
                    };
                    let label = format!("{kind:?} {o:?}");
                    check_fd(&label, &x, |x| overlap_loss(kind, x, t.view(), o, 1.0));
                }
            }
        }
    }

    #[test]
    fn grad_scale_multiplies_the_gradient_only() {
        let mut rng = Rng(7);
        let (x, t) = case(&mut rng, SegMode::Multiclass, [2, 3, 4, 5], Some(255));
        let o = opts(SegMode::Multiclass, 0.0, Some(255), false);
        let a = overlap_loss(Overlap::Dice, x.view(), t.view(), o, 1.0);
        let b = overlap_loss(Overlap::Dice, x.view(), t.view(), o, -2.5);
        assert_eq!(a.loss, b.loss);
        for (ga, gb) in a.grad.iter().zip(&b.grad) {
            assert!(close(-2.5 * ga, *gb, 1e-14, 0.0));
        }
    }

    #[test]
    fn combo_grads_match_finite_differences() {
        let mut rng = Rng(0xDEAD_BEEF);
        for ignore in [None, Some(255)] {
            let (x, t) = case(&mut rng, SegMode::Multiclass, [2, 3, 4, 5], ignore);
            for weight in [None, Some(&[0.5, 1.0, 2.0][..])] {
                for smooth in [0.0, 1.0] {
                    let label = format!("combo {ignore:?} {weight:?} {smooth}");
                    check_fd(&label, &x, |x| {
                        combo(x, t.view(), 0.3, weight, ignore, smooth, 1e-7, 1.0)
                    });
                }
            }
        }
    }

    #[test]
    fn combo_is_its_two_parts() {
        let mut rng = Rng(99);
        let (x, t) = case(&mut rng, SegMode::Multiclass, [2, 3, 4, 5], Some(255));
        let w = [0.5, 1.0, 2.0];
        let ce = cross_entropy(x.view(), t.view(), Some(&w), 255, 0.0, Reduction::Mean, 1.0);
        let o = opts(SegMode::Multiclass, 1.0, Some(255), false);
        let dice = overlap_loss(Overlap::Dice, x.view(), t.view(), o, 1.0);
        let at = |a| combo(x.view(), t.view(), a, Some(&w), Some(255), 1.0, 1e-7, 1.0);
        assert!(close(at(1.0).loss[[]], ce.loss[[]], 1e-14, 0.0));
        assert!(close(at(0.0).loss[[]], dice.loss[[]], 1e-14, 0.0));
        let mix = 0.25 * ce.loss[[]] + 0.75 * dice.loss[[]];
        assert!(close(at(0.25).loss[[]], mix, 1e-14, 0.0));
    }

    /// ±30 logits agreeing with the target: every score is 1 up to e^−30-sized terms.
    #[test]
    fn perfect_logits_give_zero_dice_and_jaccard() {
        let mut rng = Rng(5);
        for mode in MODES {
            let c = if mode == SegMode::Binary { 1 } else { 3 };
            let (_, t) = case(&mut rng, mode, [2, c, 4, 5], None);
            let x = match mode {
                SegMode::Multiclass => ArrayD::from_shape_fn(IxDyn(&[2, c, 4, 5]), |ix| {
                    if t[[ix[0], ix[2], ix[3]]] == ix[1] as f64 {
                        30.0
                    } else {
                        -30.0
                    }
                }),
                _ => t.mapv(|v| if v == 1.0 { 30.0 } else { -30.0 }),
            };
            for kind in [Overlap::Dice, Overlap::Jaccard] {
                for per_image in [false, true] {
                    let o = opts(mode, 0.0, None, per_image);
                    let out = overlap_loss(kind, x.view(), t.view(), o, 1.0);
                    let l = out.loss[[]];
                    assert!(l.abs() < 1e-12, "{kind:?} {mode:?}: {l}");
                }
            }
        }
    }

    /// All logits 0 with C = 2 make p = ½ everywhere. One image of 2×2 pixels labelled
    /// [0, 1, 1, 1]: class 0 has I = ½, P = 2, T = 1; class 1 has I = 3/2, P = 2, T = 3.
    ///   Dice, s = 0: scores 1/3 and 3/5, loss ((1 − 1/3) + (1 − 3/5)) / 2 = 8/15.
    ///   Dice, s = 1: scores 2/4 and 4/6, loss (1/2 + 1/3) / 2 = 5/12.
    ///   Jaccard: unions 5/2 and 7/2, scores 1/5 and 3/7, loss (4/5 + 4/7) / 2 = 24/35.
    ///   Tversky α = β = ½: Dice at s = 0; with γ = 2 its square, (8/15)².
    ///   Sensitivity–specificity: every (t − p)² is ¼, so each class gives ¼ (w + 1 − w)
    ///   up to eps: ¼.
    #[test]
    fn uniform_prediction_hand_values() {
        let x = ArrayD::zeros(IxDyn(&[1, 2, 2, 2]));
        let t = ndarray::arr3(&[[[0.0, 1.0], [1.0, 1.0]]]).into_dyn();
        let run = |kind, smooth, eps| {
            let o = SegOptions {
                eps,
                ..opts(SegMode::Multiclass, smooth, None, false)
            };
            overlap_loss(kind, x.view(), t.view(), o, 1.0).loss[[]]
        };
        let tv = |gamma| Overlap::Tversky {
            alpha: 0.5,
            beta: 0.5,
            gamma,
        };
        assert!(close(run(Overlap::Dice, 0.0, 1e-7), 8.0 / 15.0, 1e-14, 0.0));
        assert!(close(run(Overlap::Dice, 1.0, 1e-7), 5.0 / 12.0, 1e-14, 0.0));
        assert!(close(
            run(Overlap::Jaccard, 0.0, 1e-7),
            24.0 / 35.0,
            1e-14,
            0.0
        ));
        assert!(close(run(tv(1.0), 0.0, 1e-7), 8.0 / 15.0, 1e-14, 0.0));
        assert!(close(run(tv(2.0), 0.0, 1e-7), 64.0 / 225.0, 1e-14, 0.0));
        let ss = run(Overlap::SensitivitySpecificity { w: 0.05 }, 0.0, 1e-5);
        assert!(close(ss, 0.25, 1e-5, 0.0), "{ss}");
        assert!(close(
            run(Overlap::SensitivitySpecificity { w: 0.05 }, 0.0, 0.0),
            0.25,
            1e-15,
            0.0
        ));
    }

    #[test]
    fn per_image_with_one_image_is_the_batch_loss_and_averages_over_images() {
        let mut rng = Rng(11);
        for kind in kinds() {
            let (x, t) = case(&mut rng, SegMode::Multiclass, [2, 3, 4, 5], Some(255));
            let o = opts(SegMode::Multiclass, 0.5, Some(255), true);
            let per_image = overlap_loss(kind, x.view(), t.view(), o, 1.0).loss[[]];
            let single = |n: usize| {
                let xn = x.slice(ndarray::s![n..n + 1, .., .., ..]).into_dyn();
                let tn = t.slice(ndarray::s![n..n + 1, .., ..]).into_dyn();
                let a = overlap_loss(kind, xn.view(), tn.view(), o, 1.0).loss[[]];
                let b = overlap_loss(
                    kind,
                    xn,
                    tn,
                    SegOptions {
                        per_image: false,
                        ..o
                    },
                    1.0,
                );
                assert!(close(a, b.loss[[]], 1e-14, 0.0));
                a
            };
            let (a, b) = (single(0), single(1));
            // Tversky's power applies to the mean over all N × C groups.
            let expect = match kind {
                Overlap::Tversky { gamma, .. } => {
                    ((a.powf(1.0 / gamma) + b.powf(1.0 / gamma)) / 2.0).powf(gamma)
                }
                _ => (a + b) / 2.0,
            };
            assert!(close(per_image, expect, 1e-12, 0.0), "{kind:?}");
        }
    }

    #[test]
    fn softmax_gradient_sums_to_zero_over_classes() {
        let mut rng = Rng(3);
        let (x, t) = case(&mut rng, SegMode::Multiclass, [2, 4, 3, 3], Some(255));
        let o = opts(SegMode::Multiclass, 0.0, Some(255), false);
        let g = overlap_loss(Overlap::Jaccard, x.view(), t.view(), o, 1.0).grad;
        for s in g.sum_axis(ndarray::Axis(1)).iter() {
            assert!(s.abs() < 1e-15);
        }
    }

    #[test]
    fn all_ignored_gives_zero_loss_and_gradient() {
        for kind in kinds() {
            for mode in MODES {
                let c = if mode == SegMode::Binary { 1 } else { 3 };
                let x = ArrayD::from_elem(IxDyn(&[2, c, 2, 3]), 0.7);
                let t = match mode {
                    SegMode::Multiclass => ArrayD::from_elem(IxDyn(&[2, 2, 3]), 255.0),
                    _ => ArrayD::from_elem(IxDyn(&[2, c, 2, 3]), 255.0),
                };
                for per_image in [false, true] {
                    let o = SegOptions {
                        eps: 1e-5,
                        ..opts(mode, 0.0, Some(255), per_image)
                    };
                    let out = overlap_loss(kind, x.view(), t.view(), o, 1.0);
                    assert_eq!(out.loss[[]], 0.0, "{kind:?} {mode:?}");
                    assert!(out.grad.iter().all(|&g| g == 0.0), "{kind:?} {mode:?}");
                }
            }
        }
        let x = ArrayD::from_elem(IxDyn(&[2, 3, 2, 3]), 0.7);
        let t = ArrayD::from_elem(IxDyn(&[2, 2, 3]), 255.0);
        let out = combo(x.view(), t.view(), 0.5, None, Some(255), 0.0, 1e-7, 1.0);
        assert_eq!(out.loss[[]], 0.0);
        assert!(out.grad.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn one_class_multiclass_has_zero_gradient() {
        let mut rng = Rng(13);
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 1, 3, 3]), |_| rng.uniform(-5.0, 5.0));
        let t = ArrayD::zeros(IxDyn(&[2, 3, 3]));
        for kind in kinds() {
            let o = opts(SegMode::Multiclass, 0.0, None, false);
            let out = overlap_loss(kind, x.view(), t.view(), o, 1.0);
            assert!(out.loss[[]].abs() < 1e-12, "{kind:?}: {}", out.loss[[]]);
            assert!(out.grad.iter().all(|&g| g == 0.0), "{kind:?}");
        }
    }

    #[test]
    fn one_pixel_images_match_finite_differences() {
        let mut rng = Rng(17);
        for kind in kinds() {
            for mode in MODES {
                let c = if mode == SegMode::Binary { 1 } else { 3 };
                let (x, t) = case(&mut rng, mode, [2, c, 1, 1], None);
                for per_image in [false, true] {
                    let o = opts(mode, 1.0, None, per_image);
                    check_fd("1x1", &x, |x| overlap_loss(kind, x, t.view(), o, 1.0));
                }
            }
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let mut rng = Rng(19);
        for kind in kinds() {
            for mode in MODES {
                let c = if mode == SegMode::Binary { 1 } else { 3 };
                let (x, t) = case(&mut rng, mode, [2, c, 4, 5], None);
                let x = x.mapv(|v| if v > 0.0 { 1e4 } else { -1e4 });
                for per_image in [false, true] {
                    let o = opts(mode, 0.0, None, per_image);
                    let out = overlap_loss(kind, x.view(), t.view(), o, 1.0);
                    assert!(out.loss[[]].is_finite(), "{kind:?} {mode:?}");
                    assert!(out.grad.iter().all(|g| g.is_finite()), "{kind:?} {mode:?}");
                }
            }
        }
        let (x, t) = case(&mut rng, SegMode::Multiclass, [2, 3, 4, 5], Some(255));
        let x = x.mapv(|v| v * 1e4);
        let out = combo(x.view(), t.view(), 0.5, None, Some(255), 0.0, 1e-7, 1.0);
        assert!(out.loss[[]].is_finite() && out.grad.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn nan_logits_propagate() {
        let mut rng = Rng(23);
        for kind in kinds() {
            for mode in MODES {
                let c = if mode == SegMode::Binary { 1 } else { 3 };
                let (mut x, t) = case(&mut rng, mode, [2, c, 4, 5], None);
                // The last class is absent from Multiclass / Multilabel targets.
                x[[1, c - 1, 2, 2]] = f64::NAN;
                let o = opts(mode, 0.0, None, false);
                let out = overlap_loss(kind, x.view(), t.view(), o, 1.0);
                assert!(out.loss[[]].is_nan(), "{kind:?} {mode:?}");
            }
        }
        // At an ignored pixel, as smp's p·mask.
        let x = ArrayD::from_elem(IxDyn(&[1, 2, 1, 2]), f64::NAN);
        let t = ndarray::arr3(&[[[255.0, 1.0]]]).into_dyn();
        let mut x = x;
        x[[0, 0, 0, 1]] = 0.0;
        x[[0, 1, 0, 1]] = 0.0;
        let o = opts(SegMode::Multiclass, 0.0, Some(255), false);
        assert!(overlap_loss(Overlap::Dice, x.view(), t.view(), o, 1.0).loss[[]].is_nan());
    }

    #[test]
    fn empty_batch_is_zero() {
        let x = ArrayD::zeros(IxDyn(&[0, 3, 2, 2]));
        let t = ArrayD::zeros(IxDyn(&[0, 2, 2]));
        for kind in kinds() {
            for per_image in [false, true] {
                let o = opts(SegMode::Multiclass, 0.0, None, per_image);
                let out = overlap_loss(kind, x.view(), t.view(), o, 1.0);
                assert_eq!(out.loss[[]], 0.0);
                assert_eq!(out.grad.shape(), &[0, 3, 2, 2]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_label_panics() {
        let x = ArrayD::zeros(IxDyn(&[1, 3, 1, 2]));
        let t = ndarray::arr3(&[[[0.0, 3.0]]]).into_dyn();
        overlap_loss(
            Overlap::Dice,
            x.view(),
            t.view(),
            opts(SegMode::Multiclass, 0.0, Some(255), false),
            1.0,
        );
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn combo_without_ignore_index_rejects_its_sentinel() {
        let x = ArrayD::zeros(IxDyn(&[1, 3, 1, 2]));
        let t = ndarray::arr3(&[[[0.0, -100.0]]]).into_dyn();
        combo(x.view(), t.view(), 0.5, None, None, 0.0, 1e-7, 1.0);
    }
}
