//! F4, segmentation: the Lovász losses (Berman et al. 2018), the Lovász extension of the
//! Jaccard loss, as smp's `LovaszLoss` computes them (`segmentation_models_pytorch/losses/
//! lovasz.py`, modes `'binary'` and `'multiclass'`, `classes="present"`).
//!
//! For one group of P pixels with errors `e_i` and 0/1 ground truth `y_i`:
//!
//! ```text
//! π    = the pixels sorted by decreasing error (stable: equal errors keep their flat order)
//! g    = lovasz_grad(y_π)          (Σ_{j≤i} g_j = Jaccard loss of mispredicting π_0..π_i)
//! loss = Σ_i f(e_{π_i}) · g_i
//! ```
//!
//! * [`lovasz_hinge`] (smp `'binary'`): `s = 2t − 1`, `e = 1 − x·s`, `f = relu` (the current smp
//!   uses `F.relu`; the `elu + 1` variant is pytorch-toolbelt's, not smp's).
//! * [`lovasz_softmax`] (smp `'multiclass'`): `p = softmax(x)` over dim 1; for each class `c`
//!   present in the group's (non-ignored) labels, `fg = [label == c]`, `e = |fg − p_c|`,
//!   `f = identity`; the group's loss is the mean over its K present classes (absent classes
//!   neither add nor count).
//!
//! Groups: `per_image = false` makes one group of every pixel of the batch; `per_image = true`
//! makes one group per image (index along dim 0) and the loss is the sum of the group losses
//! divided by N (smp's `mean` over images). Pixels whose target (mask value, or label) equals
//! `ignore_index` are removed from their group before sorting (smp indexes them out): they count
//! neither in `Σ y` nor in the union, and get a zero gradient.
//!
//! Empty groups: a group with no valid pixel gives 0 and, per image, still counts in the mean
//! over N. That is smp's hinge (`logits.sum() * 0.0`); smp's softmax returns an empty `[0, C]`
//! tensor there instead (so the loss is an empty tensor, or the per-image mean fails to
//! broadcast), which this module replaces with the hinge's 0. N = 0 gives 0 (smp's
//! `mean` of nothing).
//!
//! Gradient. The sort is piecewise constant, so `∂loss/∂e_{π_i} = f'(e_{π_i}) g_i`, with
//! `f' = [e > 0]` for relu (0 at the kink, as torch) and 1 for the identity. With G = N when
//! `per_image`, else 1:
//!
//! ```text
//! hinge:   dL/dx_i = −s_i · [e_i > 0] · g_{rank(i)} / G
//! softmax: γ_{i,c} = sgn(p_{i,c} − fg_i) · g_{rank_c(i)} / (K G)   (sgn 0 = 0, torch's abs)
//!          dL/dx_{i,j} = p_{i,j} (γ_{i,j} − Σ_c p_{i,c} γ_{i,c})     (γ = 0 for absent classes)
//! ```
//!
//! Ties: the value is the Lovász extension, independent of how equal errors are ordered; the
//! gradient is a subgradient that does depend on it (which tied pixel gets which `g_i`). This
//! module uses a stable descending sort; torch's `sort` makes no stability promise, so at exact
//! ties the gradient may differ from smp's (the loss does not).
//!
//! NaN: a NaN error sorts first (as torch's descending sort) and makes the loss NaN (relu keeps
//! NaN, as torch). A NaN logit at an ignored pixel is removed with it and does not propagate.
//!
//! Other differences from smp: with C = 1 smp raises `ValueError` (its `len(classes) > 1`
//! check sees the string `"present"`); here p ≡ 1, so the loss and the gradient are 0. smp's
//! `_flatten_probas` reads a 3-D tensor as sigmoid `[B, H, W]` output, so `[N, C, L]` logits
//! fail there; here `[N, C, d...]` means C classes for any number of spatial dims (none
//! included). Hinge mask values are used as given (`s = 2t − 1`, `t` in the Lovász gradient),
//! as smp does; they are meant to be 0/1.

use ndarray::{ArrayD, ArrayViewD};

use crate::{scalar, LossGrad};

/// The Lovász gradient of a 0/1 ground truth sorted by decreasing error: with
/// gts = Σ gt, I_i = gts − cumsum(gt)_i, U_i = gts + cumsum(1 − gt)_i, J_i = 1 − I_i / U_i,
/// g_0 = J_0, g_i = J_i − J_{i−1}.
///
/// `J_i` is the Jaccard loss when the first i + 1 pixels are mispredicted, so the `g_i` sum to
/// `J_{P−1} = 1` (every pixel wrong) for any non-empty input. Empty in, empty out.
pub fn lovasz_grad(gt_sorted: &[f64]) -> Vec<f64> {
    let gts: f64 = gt_sorted.iter().sum();
    let (mut cum_gt, mut cum_neg, mut prev) = (0.0, 0.0, 0.0);
    gt_sorted
        .iter()
        .map(|&y| {
            cum_gt += y;
            cum_neg += 1.0 - y;
            let j = 1.0 - (gts - cum_gt) / (gts + cum_neg);
            let g = j - prev;
            prev = j;
            g
        })
        .collect()
}

/// smp LovaszLoss('binary'): logits [N, 1, d...] (or [N, d...]) and 0/1 masks of the same shape.
///
/// Returns the 0-d loss and `grad_scale · dL/dlogits` (see the module docs). Panics when the
/// shapes differ or the logits are 0-d.
pub fn lovasz_hinge(
    logits: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    per_image: bool,
    ignore_index: Option<i64>,
    grad_scale: f64,
) -> LossGrad {
    let rank = logits.clone();
    lovasz_hinge_ranked(logits, target, rank, per_image, ignore_index, grad_scale)
}

/// [`lovasz_hinge`] with the sort order taken from the errors of `rank_logits` rather than
/// `logits`: the loss as its gradient sees it (the order held fixed), for finite differences
/// at inputs with tied errors.
pub fn lovasz_hinge_ranked(
    logits: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    rank_logits: ArrayViewD<'_, f64>,
    per_image: bool,
    ignore_index: Option<i64>,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(logits.shape(), rank_logits.shape(), "rank_logits shape");
    let xr: Vec<f64> = rank_logits.iter().copied().collect();
    assert_eq!(
        logits.shape(),
        target.shape(),
        "logits and target shapes differ"
    );
    assert!(logits.ndim() >= 1, "logits must be [N, d...]");
    let x: Vec<f64> = logits.iter().copied().collect();
    let t: Vec<f64> = target.iter().copied().collect();
    let n = logits.shape()[0];
    let groups = if per_image { n } else { 1 };
    let size = x.len().checked_div(groups).unwrap_or(0);
    let mut loss = 0.0;
    let mut grad = vec![0.0; x.len()];
    for group in 0..groups {
        let valid: Vec<usize> = (group * size..(group + 1) * size)
            .filter(|&i| !is_ignored(t[i], ignore_index))
            .collect();
        let signs: Vec<f64> = valid.iter().map(|&i| 2.0 * t[i] - 1.0).collect();
        let errors: Vec<f64> = valid
            .iter()
            .zip(&signs)
            .map(|(&i, &s)| 1.0 - x[i] * s)
            .collect();
        let rank: Vec<f64> = valid
            .iter()
            .zip(&signs)
            .map(|(&i, &s)| 1.0 - xr[i] * s)
            .collect();
        let gt: Vec<f64> = valid.iter().map(|&i| t[i]).collect();
        let (l, de) = lovasz_flat(&errors, &rank, &gt, true);
        loss += l;
        for ((&i, &s), &d) in valid.iter().zip(&signs).zip(&de) {
            grad[i] = -s * d;
        }
    }
    let w = 1.0 / groups.max(1) as f64;
    let grad = ArrayD::from_shape_vec(
        logits.raw_dim(),
        grad.iter().map(|g| g * w * grad_scale).collect(),
    )
    .expect("length matches shape");
    LossGrad {
        loss: scalar(loss * w),
        grad,
    }
}

/// smp LovaszLoss('multiclass'): logits [N, C, d...] (softmax over dim 1), labels [N, d...]
/// (class indices as f64); classes "present" (only classes present in the labels of the
/// image, or of the batch when per_image is false, count in the mean).
///
/// Returns the 0-d loss and `grad_scale · dL/dlogits` (see the module docs). Panics on
/// mismatched shapes and on a label that is neither `ignore_index` nor an integer in [0, C).
pub fn lovasz_softmax(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    per_image: bool,
    ignore_index: Option<i64>,
    grad_scale: f64,
) -> LossGrad {
    let rank = logits.clone();
    lovasz_softmax_ranked(logits, labels, rank, per_image, ignore_index, grad_scale)
}

/// [`lovasz_softmax`] with the sort order taken from the errors of `rank_logits` (see
/// [`lovasz_hinge_ranked`]).
pub fn lovasz_softmax_ranked(
    logits: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    rank_logits: ArrayViewD<'_, f64>,
    per_image: bool,
    ignore_index: Option<i64>,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(logits.shape(), rank_logits.shape(), "rank_logits shape");
    let shape = logits.shape().to_vec();
    assert!(shape.len() >= 2, "logits must be [N, C, d...]");
    let (n, c) = (shape[0], shape[1]);
    let want: Vec<usize> = [n].into_iter().chain(shape[2..].iter().copied()).collect();
    assert_eq!(labels.shape(), &want[..], "labels must be [N, d...]");
    let inner: usize = shape[2..].iter().product();
    let y: Vec<f64> = labels.iter().copied().collect();
    for &label in &y {
        assert!(
            is_ignored(label, ignore_index)
                || (label.fract() == 0.0 && label >= 0.0 && label < c as f64),
            "label {label} out of range"
        );
    }
    let x: Vec<f64> = logits.iter().copied().collect();
    let p = softmax(&x, c, inner);
    let xr: Vec<f64> = rank_logits.iter().copied().collect();
    let pr = softmax(&xr, c, inner);
    // Flat index of class k at pixel r (r = image · inner + spatial offset).
    let at = |r: usize, k: usize| ((r / inner) * c + k) * inner + r % inner;
    let groups = if per_image { n } else { 1 };
    let size = y.len().checked_div(groups).unwrap_or(0);
    let mut loss = 0.0;
    let mut gp = vec![0.0; x.len()];
    for group in 0..groups {
        let valid: Vec<usize> = (group * size..(group + 1) * size)
            .filter(|&r| !is_ignored(y[r], ignore_index))
            .collect();
        let present: Vec<usize> = (0..c)
            .filter(|&k| valid.iter().any(|&r| y[r] == k as f64))
            .collect();
        if present.is_empty() {
            continue;
        }
        let wk = 1.0 / present.len() as f64;
        for &k in &present {
            let fg: Vec<f64> = valid
                .iter()
                .map(|&r| if y[r] == k as f64 { 1.0 } else { 0.0 })
                .collect();
            let errors: Vec<f64> = valid
                .iter()
                .zip(&fg)
                .map(|(&r, &f)| (f - p[at(r, k)]).abs())
                .collect();
            let rank: Vec<f64> = valid
                .iter()
                .zip(&fg)
                .map(|(&r, &f)| (f - pr[at(r, k)]).abs())
                .collect();
            let (l, de) = lovasz_flat(&errors, &rank, &fg, false);
            loss += wk * l;
            for ((&r, &f), &d) in valid.iter().zip(&fg).zip(&de) {
                let e = at(r, k);
                gp[e] = wk * d * sgn(p[e] - f);
            }
        }
    }
    let w = 1.0 / groups.max(1) as f64;
    // Through the softmax, at non-ignored pixels only (an ignored pixel's gradient is 0 even
    // when its logits are NaN).
    let mut gx = vec![0.0; x.len()];
    for r in (0..y.len()).filter(|&r| !is_ignored(y[r], ignore_index)) {
        let dot: f64 = (0..c).map(|k| p[at(r, k)] * gp[at(r, k)]).sum();
        for k in 0..c {
            let e = at(r, k);
            gx[e] = p[e] * (gp[e] - dot) * w * grad_scale;
        }
    }
    LossGrad {
        loss: scalar(loss * w),
        grad: ArrayD::from_shape_vec(shape, gx).expect("length matches shape"),
    }
}

/// Whether a target value is the ignore index.
fn is_ignored(v: f64, ignore_index: Option<i64>) -> bool {
    ignore_index.is_some_and(|i| v == i as f64)
}

/// Sign with sgn(0) = 0 and NaN kept (torch's `sgn`, the derivative of `abs`).
fn sgn(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else if v.is_nan() {
        v
    } else {
        0.0
    }
}

/// Softmax over the class dimension of `[N, C, inner]` logits, with the max shift. A NaN
/// logit makes its pixel's probabilities NaN.
///
/// The denominator is summed in increasing order, so a probability depends on the set of the
/// pixel's logits and not on their class order: mathematically equal errors are equal here too,
/// and tie (in pixel order) as they do in exact arithmetic.
fn softmax(x: &[f64], c: usize, inner: usize) -> Vec<f64> {
    let mut p = vec![0.0; x.len()];
    for r in 0..x.len() / c.max(1) {
        let at = |k: usize| ((r / inner) * c + k) * inner + r % inner;
        // f64::max skips NaN; the NaN then reaches the sum through its exp.
        let m = (0..c).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
        let mut terms: Vec<f64> = (0..c).map(|k| (x[at(k)] - m).exp()).collect();
        terms.sort_by(f64::total_cmp);
        let sum: f64 = terms.iter().sum();
        for k in 0..c {
            p[at(k)] = (x[at(k)] - m).exp() / sum;
        }
    }
    p
}

/// Decreasing order with NaN first (torch's descending sort), a total order for `sort_by`.
fn descending(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => b.partial_cmp(&a).expect("not NaN"),
    }
}

/// One group's Lovász loss `Σ f(e_{π_i}) g_i` and `∂loss/∂e` in the input order, π sorting
/// `rank` (the errors themselves, or those of the point the order is held at);
/// `f` = relu when `relu`, else the identity.
fn lovasz_flat(errors: &[f64], rank: &[f64], gt: &[f64], relu: bool) -> (f64, Vec<f64>) {
    let mut order: Vec<usize> = (0..errors.len()).collect();
    // Stable: equal errors keep their flat order.
    order.sort_by(|&a, &b| descending(rank[a], rank[b]));
    let gt_sorted: Vec<f64> = order.iter().map(|&i| gt[i]).collect();
    let g = lovasz_grad(&gt_sorted);
    let mut loss = 0.0;
    let mut de = vec![0.0; errors.len()];
    for (&i, &gi) in order.iter().zip(&g) {
        let e = errors[i];
        let (v, dv) = match relu {
            true if e > 0.0 || e.is_nan() => (e, 1.0),
            true => (0.0, 0.0),
            false => (e, 1.0),
        };
        loss += v * gi;
        de[i] = dv * gi;
    }
    (loss, de)
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

    fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
    }

    /// Central differences (h = 1e-6) of `f` at `x` against its analytic gradient.
    fn check_fd(label: &str, x: &ArrayD<f64>, f: impl Fn(ArrayViewD<'_, f64>) -> LossGrad) {
        let h = 1e-6;
        let out = f(x.view());
        assert!(out.loss[[]].is_finite(), "{label}: loss {}", out.loss[[]]);
        assert_eq!(out.grad.shape(), x.shape(), "{label}");
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

    /// Whether the values are pairwise more than 1e-4 apart (and, with `kink`, from 0).
    fn separated(mut v: Vec<f64>, kink: bool) -> bool {
        if kink {
            v.push(0.0);
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.windows(2).all(|w| w[1] - w[0] > 1e-4)
    }

    /// Hinge case: logits in [−3, 3] (regenerated until the batch's valid errors are separated),
    /// masks with image 0 random and, for n > 1, image 1 all background; with `ignore`, about
    /// 15% of the entries hold it.
    fn hinge_case(
        rng: &mut Rng,
        shape: &[usize],
        ignore: Option<i64>,
    ) -> (ArrayD<f64>, ArrayD<f64>) {
        let t = ArrayD::from_shape_fn(IxDyn(shape), |ix| match ignore {
            Some(i) if rng.uniform(0.0, 1.0) < 0.15 => i as f64,
            _ if ix[0] == 0 && rng.uniform(0.0, 1.0) < 0.5 => 1.0,
            _ => 0.0,
        });
        loop {
            let x = ArrayD::from_shape_fn(IxDyn(shape), |_| rng.uniform(-3.0, 3.0));
            let errors = x
                .iter()
                .zip(&t)
                .filter(|(_, &t)| !is_ignored(t, ignore))
                .map(|(&x, &t)| 1.0 - x * (2.0 * t - 1.0))
                .collect();
            if separated(errors, true) {
                return (x, t);
            }
        }
    }

    /// Softmax case on `[n, c, d...]`: image 0 uses labels 0..present0, the others
    /// 0..present1; logits in [−3, 3], regenerated until, per class, the batch's valid errors
    /// |fg − p| are separated.
    fn softmax_case(
        rng: &mut Rng,
        shape: &[usize],
        present: [usize; 2],
        ignore: Option<i64>,
    ) -> (ArrayD<f64>, ArrayD<f64>) {
        let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
        let lshape: Vec<usize> = [shape[0]]
            .into_iter()
            .chain(shape[2..].iter().copied())
            .collect();
        let y = ArrayD::from_shape_fn(IxDyn(&lshape), |ix| match ignore {
            Some(i) if rng.uniform(0.0, 1.0) < 0.15 => i as f64,
            _ => {
                let m = present[usize::from(ix[0] > 0)];
                (rng.uniform(0.0, m as f64) as usize).min(m - 1) as f64
            }
        });
        let ys: Vec<f64> = y.iter().copied().collect();
        loop {
            let x = ArrayD::from_shape_fn(IxDyn(shape), |_| rng.uniform(-3.0, 3.0));
            let p = softmax(x.as_slice().unwrap(), c, inner);
            let ok = (0..c).all(|k| {
                let errors = (0..ys.len())
                    .filter(|&r| !is_ignored(ys[r], ignore))
                    .map(|r| {
                        let fg = if ys[r] == k as f64 { 1.0 } else { 0.0 };
                        (fg - p[((r / inner) * c + k) * inner + r % inner]).abs()
                    })
                    .collect();
                separated(errors, false)
            });
            if ok {
                return (x, y);
            }
        }
    }

    #[test]
    fn hinge_grads_match_finite_differences() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for ignore in [None, Some(255)] {
            for shape in [&[2, 1, 4, 5][..], &[3, 4, 5], &[2, 1, 1, 1]] {
                let (x, t) = hinge_case(&mut rng, shape, ignore);
                if ignore.is_some() && shape.len() == 4 && shape[2] > 1 {
                    assert!(t.iter().any(|&v| v == 255.0), "some pixels are ignored");
                }
                for per_image in [false, true] {
                    let label = format!("hinge {shape:?} {ignore:?} per_image {per_image}");
                    check_fd(&label, &x, |x| {
                        lovasz_hinge(x, t.view(), per_image, ignore, 1.0)
                    });
                }
            }
        }
    }

    #[test]
    fn softmax_grads_match_finite_differences() {
        let mut rng = Rng(0x5EED);
        // Class 2 absent from image 1; in the second shape class 3 is absent from the batch.
        let cases: [(&[usize], [usize; 2]); 3] = [
            (&[2, 3, 4, 5], [3, 2]),
            (&[2, 4, 3, 3], [3, 2]),
            (&[2, 3, 1, 1], [3, 3]),
        ];
        for ignore in [None, Some(255)] {
            for (shape, present) in cases {
                let (x, y) = softmax_case(&mut rng, shape, present, ignore);
                if ignore.is_some() && shape[2] > 1 {
                    assert!(y.iter().any(|&v| v == 255.0), "some pixels are ignored");
                }
                for per_image in [false, true] {
                    let label = format!("softmax {shape:?} {ignore:?} per_image {per_image}");
                    check_fd(&label, &x, |x| {
                        lovasz_softmax(x, y.view(), per_image, ignore, 1.0)
                    });
                }
            }
        }
    }

    /// Hand-worked Lovász gradients (I = gts − cumsum(gt), U = gts + cumsum(1 − gt)):
    ///   [1, 0, 1, 0]: gts 2, I = [1, 1, 0, 0], U = [2, 3, 3, 4], J = [1/2, 2/3, 1, 1],
    ///                 g = [1/2, 1/6, 1/3, 0]
    ///   [0, 1]:       gts 1, I = [1, 0], U = [2, 2], J = [1/2, 1], g = [1/2, 1/2]
    ///   [1]:          I = [0], U = [1], J = [1], g = [1]
    ///   [0, 0, 0]:    I = [0, 0, 0], U = [1, 2, 3], J = [1, 1, 1], g = [1, 0, 0]
    ///   [1, 1, 1]:    I = [2, 1, 0], U = [3, 3, 3], J = [1/3, 2/3, 1], g = [1/3, 1/3, 1/3]
    #[test]
    fn lovasz_grad_hand_values() {
        let cases: [(&[f64], &[f64]); 5] = [
            (&[1.0, 0.0, 1.0, 0.0], &[0.5, 1.0 / 6.0, 1.0 / 3.0, 0.0]),
            (&[0.0, 1.0], &[0.5, 0.5]),
            (&[1.0], &[1.0]),
            (&[0.0, 0.0, 0.0], &[1.0, 0.0, 0.0]),
            (&[1.0, 1.0, 1.0], &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]),
        ];
        for (gt, want) in cases {
            let g = lovasz_grad(gt);
            assert_eq!(g.len(), want.len());
            for (a, b) in g.iter().zip(want) {
                assert!(close(*a, *b, 1e-15, 1e-16), "{gt:?}: {g:?}");
            }
        }
        assert!(lovasz_grad(&[]).is_empty());
    }

    /// Σ_{j≤i} g_j is the Jaccard loss 1 − |gt \ M| / |gt ∪ M| of mispredicting the set M of the
    /// first i + 1 sorted pixels; the total is that of mispredicting every pixel (the all-ones
    /// error vector), 1.
    #[test]
    fn lovasz_grad_prefix_sums_are_jaccard_losses() {
        let mut rng = Rng(41);
        for len in [1, 2, 7, 30] {
            let gt: Vec<f64> = (0..len)
                .map(|_| {
                    if rng.uniform(0.0, 1.0) < 0.4 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let g = lovasz_grad(&gt);
            let gts: f64 = gt.iter().sum();
            let mut prefix = 0.0;
            for i in 0..len {
                prefix += g[i];
                let wrong_fg: f64 = gt[..=i].iter().sum();
                let wrong_bg = (i + 1) as f64 - wrong_fg;
                let jaccard = 1.0 - (gts - wrong_fg) / (gts + wrong_bg);
                assert!(close(prefix, jaccard, 1e-14, 1e-15), "{gt:?} at {i}");
            }
            assert!(close(prefix, 1.0, 1e-14, 0.0));
        }
    }

    /// logits [2, −1, 0.5], mask [1, 0, 0]: s = [1, −1, −1], e = [−1, 0, 1.5]; sorted
    /// [1.5, 0, −1] with gt [0, 0, 1]: I = [1, 1, 0], U = [2, 3, 3], g = [1/2, 1/6, 1/3];
    /// loss = 1.5/2 + 0 + 0 = 0.75; dL/dx = −s·[e > 0]·g = [0, 0, 1/2].
    #[test]
    fn hinge_hand_value() {
        let x = ndarray::arr3(&[[[2.0, -1.0, 0.5]]]).into_dyn();
        let t = ndarray::arr3(&[[[1.0, 0.0, 0.0]]]).into_dyn();
        for per_image in [false, true] {
            let out = lovasz_hinge(x.view(), t.view(), per_image, None, 1.0);
            assert!(close(out.loss[[]], 0.75, 1e-15, 0.0));
            let g: Vec<f64> = out.grad.iter().copied().collect();
            assert_eq!(g, vec![0.0, 0.0, 0.5]);
        }
        // An ignored pixel is removed: with the e = 1.5 pixel ignored, e = [−1, 0] → loss 0.
        let t = ndarray::arr3(&[[[1.0, 0.0, 255.0]]]).into_dyn();
        let out = lovasz_hinge(x.view(), t.view(), false, Some(255), 1.0);
        assert_eq!(out.loss[[]], 0.0);
        assert!(out.grad.iter().all(|&g| g == 0.0));
    }

    /// An all-background image has g = [1, 0, ...]: loss relu(1 + max x); an all-foreground
    /// one has g_i = 1/P: loss mean relu(1 − x).
    #[test]
    fn hinge_one_class_images() {
        let x = ndarray::arr2(&[[0.3, -2.0, 1.2, -0.4]]).into_dyn();
        let bg = ArrayD::zeros(IxDyn(&[1, 4]));
        let fg = ArrayD::ones(IxDyn(&[1, 4]));
        let out = lovasz_hinge(x.view(), bg.view(), true, None, 1.0);
        assert!(close(out.loss[[]], 2.2, 1e-15, 0.0));
        let g: Vec<f64> = out.grad.iter().copied().collect();
        assert_eq!(g, vec![0.0, 0.0, 1.0, 0.0]);
        let out = lovasz_hinge(x.view(), fg.view(), true, None, 1.0);
        let want = (0.7 + 3.0 + 0.0 + 1.4) / 4.0;
        assert!(close(out.loss[[]], want, 1e-15, 0.0));
        let g: Vec<f64> = out.grad.iter().copied().collect();
        assert_eq!(g, vec![-0.25, -0.25, 0.0, -0.25]);
    }

    /// One pixel per image: hinge relu(1 − x·s); softmax 1 − p_label (one present class, g = [1]).
    #[test]
    fn one_pixel_images() {
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 1, 1, 1]), vec![0.4, -0.2]).unwrap();
        let t = ArrayD::from_shape_vec(IxDyn(&[2, 1, 1, 1]), vec![1.0, 0.0]).unwrap();
        let out = lovasz_hinge(x.view(), t.view(), true, None, 1.0);
        assert!(close(out.loss[[]], (0.6 + 0.8) / 2.0, 1e-15, 0.0));
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, 1, 1]), vec![0.5, -1.0, 2.0]).unwrap();
        let y = ndarray::arr3(&[[[1.0]]]).into_dyn();
        let e: Vec<f64> = [0.5f64, -1.0, 2.0].iter().map(|v| v.exp()).collect();
        let want = 1.0 - e[1] / e.iter().sum::<f64>();
        for per_image in [false, true] {
            let out = lovasz_softmax(x.view(), y.view(), per_image, None, 1.0);
            assert!(close(out.loss[[]], want, 1e-14, 0.0));
        }
    }

    /// Zero logits, C = 3, one image of two pixels labelled [0, 0]: p = 1/3 everywhere. Only
    /// class 0 is present: fg = [1, 1], e = [2/3, 2/3], g = [1/2, 1/2], loss 2/3. (Averaging
    /// all classes would add classes 1 and 2 with e = [1/3, 1/3], g = [1, 0], giving 4/9.)
    /// dL/dp_0 = sgn(1/3 − 1)·g = −1/2 per pixel, so dL/dx_j = p_j (γ_j − Σ p γ):
    /// class 0 −1/2·(1/3)(1 − 1/3) = −1/9, classes 1 and 2 (1/3)(0 + 1/6) = 1/18.
    #[test]
    fn softmax_hand_value_counts_present_classes_only() {
        let x = ArrayD::zeros(IxDyn(&[1, 3, 1, 2]));
        let y = ndarray::arr3(&[[[0.0, 0.0]]]).into_dyn();
        for per_image in [false, true] {
            let out = lovasz_softmax(x.view(), y.view(), per_image, None, 1.0);
            assert!(close(out.loss[[]], 2.0 / 3.0, 1e-15, 0.0));
            for (ix, &g) in out.grad.indexed_iter() {
                let want = if ix[1] == 0 { -1.0 / 9.0 } else { 1.0 / 18.0 };
                assert!(close(g, want, 1e-14, 0.0), "{ix:?}: {g}");
            }
        }
    }

    #[test]
    fn per_image_is_the_mean_over_images() {
        let mut rng = Rng(11);
        let (x, t) = hinge_case(&mut rng, &[2, 1, 4, 5], Some(255));
        let (xs, ys) = softmax_case(&mut rng, &[2, 3, 4, 5], [3, 2], Some(255));
        let hinge = |x: ArrayViewD<'_, f64>, t: ArrayViewD<'_, f64>, pi| {
            lovasz_hinge(x, t, pi, Some(255), 1.0)
        };
        let soft = |x: ArrayViewD<'_, f64>, y: ArrayViewD<'_, f64>, pi| {
            lovasz_softmax(x, y, pi, Some(255), 1.0)
        };
        let single = |n: usize| {
            let h = hinge(
                x.slice(ndarray::s![n..n + 1, .., .., ..]).into_dyn(),
                t.slice(ndarray::s![n..n + 1, .., .., ..]).into_dyn(),
                false,
            );
            let s = soft(
                xs.slice(ndarray::s![n..n + 1, .., .., ..]).into_dyn(),
                ys.slice(ndarray::s![n..n + 1, .., ..]).into_dyn(),
                false,
            );
            (h.loss[[]], s.loss[[]])
        };
        let ((h0, s0), (h1, s1)) = (single(0), single(1));
        let h = hinge(x.view(), t.view(), true).loss[[]];
        let s = soft(xs.view(), ys.view(), true).loss[[]];
        assert!(close(h, (h0 + h1) / 2.0, 1e-14, 0.0));
        assert!(close(s, (s0 + s1) / 2.0, 1e-14, 0.0));
        // The batch loss is not the mean of the image losses.
        assert!(!close(
            h,
            hinge(x.view(), t.view(), false).loss[[]],
            1e-6,
            0.0
        ));
    }

    /// An image whose pixels are all ignored gives 0 and still counts in the per-image mean.
    #[test]
    fn all_ignored_image_counts_as_zero_in_the_mean() {
        let mut rng = Rng(29);
        let (x, mut t) = hinge_case(&mut rng, &[2, 1, 3, 3], None);
        let (xs, mut ys) = softmax_case(&mut rng, &[2, 3, 3, 3], [3, 3], None);
        t.slice_mut(ndarray::s![1, .., .., ..]).fill(255.0);
        ys.slice_mut(ndarray::s![1, .., ..]).fill(255.0);
        let h = lovasz_hinge(x.view(), t.view(), true, Some(255), 1.0);
        let h0 = lovasz_hinge(
            x.slice(ndarray::s![0..1, .., .., ..]).into_dyn(),
            t.slice(ndarray::s![0..1, .., .., ..]).into_dyn(),
            true,
            Some(255),
            1.0,
        );
        assert!(close(h.loss[[]], h0.loss[[]] / 2.0, 1e-15, 0.0));
        assert!(h
            .grad
            .slice(ndarray::s![1, .., .., ..])
            .iter()
            .all(|&g| g == 0.0));
        let s = lovasz_softmax(xs.view(), ys.view(), true, Some(255), 1.0);
        let s0 = lovasz_softmax(
            xs.slice(ndarray::s![0..1, .., .., ..]).into_dyn(),
            ys.slice(ndarray::s![0..1, .., ..]).into_dyn(),
            true,
            Some(255),
            1.0,
        );
        assert!(close(s.loss[[]], s0.loss[[]] / 2.0, 1e-15, 0.0));
        assert!(s
            .grad
            .slice(ndarray::s![1, .., .., ..])
            .iter()
            .all(|&g| g == 0.0));
    }

    #[test]
    fn all_ignored_gives_zero_loss_and_gradient() {
        let x = ArrayD::from_elem(IxDyn(&[2, 1, 2, 3]), 0.7);
        let t = ArrayD::from_elem(IxDyn(&[2, 1, 2, 3]), 255.0);
        let xs = ArrayD::from_elem(IxDyn(&[2, 3, 2, 3]), 0.7);
        let ys = ArrayD::from_elem(IxDyn(&[2, 2, 3]), 255.0);
        for per_image in [false, true] {
            let out = lovasz_hinge(x.view(), t.view(), per_image, Some(255), 1.0);
            assert_eq!(out.loss[[]], 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
            let out = lovasz_softmax(xs.view(), ys.view(), per_image, Some(255), 1.0);
            assert_eq!(out.loss[[]], 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
        }
    }

    #[test]
    fn empty_batch_is_zero() {
        for per_image in [false, true] {
            let x = ArrayD::zeros(IxDyn(&[0, 1, 2, 2]));
            let out = lovasz_hinge(x.view(), x.view(), per_image, None, 1.0);
            assert_eq!(out.loss[[]], 0.0);
            assert_eq!(out.grad.shape(), &[0, 1, 2, 2]);
            let x = ArrayD::zeros(IxDyn(&[0, 3, 2, 2]));
            let y = ArrayD::zeros(IxDyn(&[0, 2, 2]));
            let out = lovasz_softmax(x.view(), y.view(), per_image, None, 1.0);
            assert_eq!(out.loss[[]], 0.0);
            assert_eq!(out.grad.shape(), &[0, 3, 2, 2]);
        }
    }

    /// Margins ≥ 1 make every hinge error ≤ 0; logit gaps of 1000 make p exactly one-hot.
    #[test]
    fn perfect_predictions_give_zero() {
        let mut rng = Rng(5);
        let (_, t) = hinge_case(&mut rng, &[2, 1, 4, 5], None);
        let x = t.mapv(|v| if v == 1.0 { 1.5 } else { -1.0 });
        let (_, y) = softmax_case(&mut rng, &[2, 3, 4, 5], [3, 2], None);
        let xs = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4, 5]), |ix| {
            if y[[ix[0], ix[2], ix[3]]] == ix[1] as f64 {
                500.0
            } else {
                -500.0
            }
        });
        for per_image in [false, true] {
            let out = lovasz_hinge(x.view(), t.view(), per_image, None, 1.0);
            assert_eq!(out.loss[[]], 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
            let out = lovasz_softmax(xs.view(), y.view(), per_image, None, 1.0);
            assert_eq!(out.loss[[]], 0.0);
            assert!(out.grad.iter().all(|&g| g == 0.0));
        }
    }

    /// C = 1: p ≡ 1 and every label is 0, so the loss and gradient are 0 (smp raises).
    #[test]
    fn one_class_softmax_is_zero() {
        let mut rng = Rng(13);
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 1, 3, 3]), |_| rng.uniform(-5.0, 5.0));
        let y = ArrayD::zeros(IxDyn(&[2, 3, 3]));
        for per_image in [false, true] {
            let out = lovasz_softmax(x.view(), y.view(), per_image, None, 1.0);
            assert!(out.loss[[]].abs() < 1e-15);
            assert!(out.grad.iter().all(|&g| g == 0.0));
        }
    }

    /// Equal errors: the value does not depend on their order, the stable sort gives the first
    /// one (in flat order) the larger g. logits [0, 0], mask [0, 0]: e = [1, 1], g = [1, 0].
    #[test]
    fn ties_keep_flat_order() {
        let x = ndarray::arr2(&[[0.0, 0.0]]).into_dyn();
        let t = ndarray::arr2(&[[0.0, 0.0]]).into_dyn();
        let out = lovasz_hinge(x.view(), t.view(), false, None, 1.0);
        assert_eq!(out.loss[[]], 1.0);
        let g: Vec<f64> = out.grad.iter().copied().collect();
        assert_eq!(g, vec![1.0, 0.0]);
    }

    #[test]
    fn grad_scale_multiplies_the_gradient_only() {
        let mut rng = Rng(7);
        let (x, t) = hinge_case(&mut rng, &[2, 1, 4, 5], Some(255));
        let (xs, ys) = softmax_case(&mut rng, &[2, 3, 4, 5], [3, 2], Some(255));
        for per_image in [false, true] {
            let pairs = [
                (
                    lovasz_hinge(x.view(), t.view(), per_image, Some(255), 1.0),
                    lovasz_hinge(x.view(), t.view(), per_image, Some(255), -2.5),
                ),
                (
                    lovasz_softmax(xs.view(), ys.view(), per_image, Some(255), 1.0),
                    lovasz_softmax(xs.view(), ys.view(), per_image, Some(255), -2.5),
                ),
            ];
            for (a, b) in pairs {
                assert_eq!(a.loss, b.loss);
                for (ga, gb) in a.grad.iter().zip(&b.grad) {
                    assert!(close(-2.5 * ga, *gb, 1e-14, 0.0));
                }
            }
        }
    }

    #[test]
    fn softmax_gradient_sums_to_zero_over_classes() {
        let mut rng = Rng(3);
        let (x, y) = softmax_case(&mut rng, &[2, 4, 3, 3], [4, 2], Some(255));
        let g = lovasz_softmax(x.view(), y.view(), false, Some(255), 1.0).grad;
        for s in g.sum_axis(ndarray::Axis(1)).iter() {
            assert!(s.abs() < 1e-15);
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let mut rng = Rng(19);
        let (x, t) = hinge_case(&mut rng, &[2, 1, 4, 5], None);
        let (xs, ys) = softmax_case(&mut rng, &[2, 3, 4, 5], [3, 2], None);
        let (x, xs) = (x.mapv(|v| v * 1e4 / 3.0), xs.mapv(|v| v * 1e4 / 3.0));
        for per_image in [false, true] {
            for out in [
                lovasz_hinge(x.view(), t.view(), per_image, None, 1.0),
                lovasz_softmax(xs.view(), ys.view(), per_image, None, 1.0),
            ] {
                assert!(out.loss[[]].is_finite());
                assert!(out.grad.iter().all(|g| g.is_finite()));
            }
        }
    }

    #[test]
    fn nan_logits_propagate_unless_ignored() {
        let mut rng = Rng(23);
        let (mut x, mut t) = hinge_case(&mut rng, &[2, 1, 4, 5], None);
        let (mut xs, mut ys) = softmax_case(&mut rng, &[2, 3, 4, 5], [3, 2], None);
        x[[1, 0, 2, 2]] = f64::NAN;
        // Class 2 is absent from image 1, but the softmax spreads the NaN to its whole pixel.
        xs[[1, 2, 2, 2]] = f64::NAN;
        for per_image in [false, true] {
            assert!(lovasz_hinge(x.view(), t.view(), per_image, Some(255), 1.0).loss[[]].is_nan());
            let out = lovasz_softmax(xs.view(), ys.view(), per_image, Some(255), 1.0);
            assert!(out.loss[[]].is_nan());
        }
        t[[1, 0, 2, 2]] = 255.0;
        ys[[1, 2, 2]] = 255.0;
        for per_image in [false, true] {
            for out in [
                lovasz_hinge(x.view(), t.view(), per_image, Some(255), 1.0),
                lovasz_softmax(xs.view(), ys.view(), per_image, Some(255), 1.0),
            ] {
                assert!(out.loss[[]].is_finite());
                assert!(out.grad.iter().all(|g| g.is_finite()));
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_label_panics() {
        let x = ArrayD::zeros(IxDyn(&[1, 3, 1, 2]));
        let y = ndarray::arr3(&[[[0.0, 3.0]]]).into_dyn();
        lovasz_softmax(x.view(), y.view(), false, Some(255), 1.0);
    }

    #[test]
    #[should_panic(expected = "shapes differ")]
    fn hinge_shape_mismatch_panics() {
        let x = ArrayD::zeros(IxDyn(&[1, 1, 2, 2]));
        let t = ArrayD::zeros(IxDyn(&[1, 2, 2]));
        lovasz_hinge(x.view(), t.view(), false, None, 1.0);
    }
}
