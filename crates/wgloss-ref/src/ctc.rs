//! Sequence loss: connectionist temporal classification, torch's `F.ctc_loss` semantics.
//!
//! Forward (Graves et al. 2006, in log space as in torch's `ctc_loss_cpu_template`): for a
//! target `l = (l_1, …, l_S)` the extended sequence is `l' = (∅, l_1, ∅, l_2, …, l_S, ∅)` of
//! length `2S + 1`, `∅` the blank. With `y_t(c) = log_probs[t, n, c]` and `T_n` the input
//! length,
//!
//! ```text
//! α_0(0) = y_0(∅),  α_0(1) = y_0(l_1),  α_0(s) = −∞ otherwise
//! α_t(s) = lse(α_{t−1}(s), α_{t−1}(s−1), α_{t−1}(s−2) [only if l'_s ≠ l'_{s−2}]) + y_t(l'_s)
//! log p  = lse(α_{T_n−1}(2S), α_{T_n−1}(2S−1))       (α_{T_n−1}(0) when S = 0)
//! nll_n  = −log p
//! ```
//!
//! `lse` is log-sum-exp with `lse(−∞, …, −∞) = −∞` (never NaN). The skip `s−2 → s` exists only
//! between different labels, so a repeated label needs a blank between its copies; a target
//! that cannot be aligned (`T_n < S + #repeats`) gives `nll = +∞`. `T_n = 0` gives `nll = 0`
//! for an empty target and `+∞` otherwise (torch).

use ndarray::{Array2, Array3, ArrayView2, ArrayViewD, Axis, Ix3};

use crate::{scalar, LossGrad, Reduction};

/// torch's `F.ctc_loss(log_probs [T, N, C], targets, input_lengths, target_lengths, blank,
/// reduction, zero_infinity)`, with the targets given one label sequence per batch item
/// (`target_lengths[n] = targets[n].len()`), and its gradient w.r.t. `log_probs`.
///
/// Per sample, `nll_n` as in the module doc over the first `input_lengths[n]` frames; with
/// `zero_infinity` an infinite `nll_n` becomes 0. Reductions (torch's): `None` → the `[N]`
/// losses, `Sum` → `Σ_n nll_n`, `Mean` → `(1/N) Σ_n nll_n / max(S_n, 1)` (0 for N = 0).
///
/// The gradient is the true partial derivative of the reduced loss (of `Σ_n nll_n` for
/// `None`) w.r.t. each `log_probs[t, n, c]` as an independent variable, times `grad_scale`:
///
/// ```text
/// ∂nll_n/∂y_t(c) = −Σ_{s : l'_s = c} exp(α_t(s) + β_t(s) − log p)        (t < T_n)
/// β_{T_n−1}(s) = 0 for s ∈ {2S, 2S−1}, −∞ otherwise
/// β_t(s) = lse over s' ∈ {s, s+1, s+2 [only if l'_{s+2} ≠ l'_s]} of β_{t+1}(s') + y_{t+1}(l'_{s'})
/// ```
///
/// `β_t(s)` here excludes the emission at `t` (torch's β includes it and subtracts `y_t(c)`
/// once: `exp(α + β_torch − y_t(c) − log p)`, the same number), so `α_t(s) + β_t(s)` is the
/// log-mass of the paths through state `s` at `t` and a `−∞` entry of `log_probs` gives a 0
/// derivative rather than `−∞ − (−∞)`. This holds for unnormalised `log_probs` too, and per
/// frame `Σ_c ∂nll_n/∂y_t(c) = −1`.
///
/// torch's backward instead returns `exp(y_t(c)) − occupation` (`(exp(lp) − exp(lcab + nll −
/// lp))·grad_out` in `ctc_loss_backward_cpu_template`): the gradient w.r.t. the logits `z` of
/// `log_probs = log_softmax(z)`, assumed by torch. The two agree after a `log_softmax`: with
/// `g` ours, `∂/∂z_c = g_c − softmax_c Σ_c' g_c' = g_c + exp(y_t(c))`.
///
/// Zero gradient for frames `t ≥ input_lengths[n]` and for samples whose `nll_n` is infinite:
/// with `zero_infinity` (torch zero-fills them), and also without it, where torch's CPU kernel
/// evaluates `exp(−∞ + ∞ − lp)` and returns NaN for the whole sample; here the infinite loss is
/// reported in `loss` and its gradient is 0 (the loss is `+∞` on a neighbourhood of finite
/// `log_probs`, so 0 is its derivative there).
///
/// Returns the loss (`[N]` for `None`, 0-d otherwise) and the `[T, N, C]` gradient. Panics
/// unless `log_probs` is 3-d without NaN or `+∞`, `targets` and `input_lengths` have N
/// entries, `blank < C`, every label is `< C` and `≠ blank`, and `input_lengths[n] ≤ T`.
pub fn ctc(
    log_probs: ArrayViewD<'_, f64>,
    targets: &[Vec<usize>],
    input_lengths: &[usize],
    blank: usize,
    reduction: Reduction,
    zero_infinity: bool,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        log_probs.ndim(),
        3,
        "log_probs must be [T, N, C], got {:?}",
        log_probs.shape()
    );
    let lp = log_probs.into_dimensionality::<Ix3>().expect("3-d checked");
    let (t_max, n, c) = lp.dim();
    assert!(
        lp.iter().all(|v| !v.is_nan() && *v != f64::INFINITY),
        "log_probs must not hold NaN or +inf"
    );
    assert_eq!(targets.len(), n, "targets must have N = {n} sequences");
    assert_eq!(
        input_lengths.len(),
        n,
        "input_lengths must have N = {n} entries"
    );
    assert!(blank < c, "blank {blank} must be < C = {c}");
    for (i, (target, &len)) in targets.iter().zip(input_lengths).enumerate() {
        assert!(
            len <= t_max,
            "input_lengths[{i}] = {len} exceeds T = {t_max}"
        );
        for &l in target {
            assert!(l < c, "targets[{i}] holds label {l} ≥ C = {c}");
            assert!(l != blank, "targets[{i}] holds the blank {blank}");
        }
    }

    let mut losses = Vec::with_capacity(n);
    let mut grad = Array3::zeros((t_max, n, c));
    for (i, (target, &len)) in targets.iter().zip(input_lengths).enumerate() {
        let (nll, dnll) = sample(lp.index_axis(Axis(1), i), target, len, blank);
        let weight = match reduction {
            Reduction::None | Reduction::Sum => 1.0,
            Reduction::Mean => 1.0 / (n as f64 * target.len().max(1) as f64),
        };
        if let Some(d) = dnll {
            grad.index_axis_mut(Axis(1), i)
                .slice_mut(ndarray::s![..len, ..])
                .assign(&(d * (grad_scale * weight)));
        }
        losses.push(if zero_infinity && nll == f64::INFINITY {
            0.0
        } else {
            nll
        });
    }

    let loss = match reduction {
        Reduction::None => ndarray::Array1::from(losses).into_dyn(),
        Reduction::Sum => scalar(losses.iter().sum()),
        Reduction::Mean if n == 0 => scalar(0.0),
        Reduction::Mean => scalar(
            losses
                .iter()
                .zip(targets)
                .map(|(l, t)| l / t.len().max(1) as f64)
                .sum::<f64>()
                / n as f64,
        ),
    };
    LossGrad {
        loss,
        grad: grad.into_dyn(),
    }
}

/// `log Σ exp(v)` with `−∞` for an empty or all-`−∞` input.
fn lse(v: &[f64]) -> f64 {
    let m = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}

/// `nll` of one sample over its first `len` frames of `lp [T, C]`, and `∂nll/∂lp[..len]`
/// (`None` when `nll` is infinite or `len = 0`).
fn sample(
    lp: ArrayView2<'_, f64>,
    target: &[usize],
    len: usize,
    blank: usize,
) -> (f64, Option<Array2<f64>>) {
    let s_len = target.len();
    if len == 0 {
        return (if s_len == 0 { 0.0 } else { f64::INFINITY }, None);
    }
    // l' = (∅, l_1, ∅, …, l_S, ∅).
    let ext: Vec<usize> = (0..2 * s_len + 1)
        .map(|s| if s % 2 == 0 { blank } else { target[s / 2] })
        .collect();
    let width = ext.len();
    let skip_ok = |s: usize| s >= 2 && ext[s] != ext[s - 2];

    let mut alpha = Array2::from_elem((len, width), f64::NEG_INFINITY);
    alpha[[0, 0]] = lp[[0, blank]];
    if s_len > 0 {
        alpha[[0, 1]] = lp[[0, ext[1]]];
    }
    let mut terms = Vec::with_capacity(3);
    for t in 1..len {
        for s in 0..width {
            terms.clear();
            terms.push(alpha[[t - 1, s]]);
            if s >= 1 {
                terms.push(alpha[[t - 1, s - 1]]);
            }
            if skip_ok(s) {
                terms.push(alpha[[t - 1, s - 2]]);
            }
            alpha[[t, s]] = lse(&terms) + lp[[t, ext[s]]];
        }
    }
    let last = len - 1;
    let log_p = if s_len == 0 {
        alpha[[last, 0]]
    } else {
        lse(&[alpha[[last, width - 1]], alpha[[last, width - 2]]])
    };
    let nll = -log_p;
    if nll == f64::INFINITY {
        return (nll, None);
    }

    // β_t(s): log-mass of finishing from state s at t, emissions after t only.
    let mut beta = Array2::from_elem((len, width), f64::NEG_INFINITY);
    beta[[last, width - 1]] = 0.0;
    if s_len > 0 {
        beta[[last, width - 2]] = 0.0;
    }
    for t in (0..last).rev() {
        for s in 0..width {
            terms.clear();
            terms.push(beta[[t + 1, s]] + lp[[t + 1, ext[s]]]);
            if s + 1 < width {
                terms.push(beta[[t + 1, s + 1]] + lp[[t + 1, ext[s + 1]]]);
            }
            if s + 2 < width && skip_ok(s + 2) {
                terms.push(beta[[t + 1, s + 2]] + lp[[t + 1, ext[s + 2]]]);
            }
            beta[[t, s]] = lse(&terms);
        }
    }

    let mut d = Array2::zeros((len, lp.ncols()));
    for t in 0..len {
        for (s, &label) in ext.iter().enumerate() {
            d[[t, label]] -= (alpha[[t, s]] + beta[[t, s]] + nll).exp();
        }
    }
    (nll, Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_fd, close, Rng, GS};
    use crate::MultiGrad;
    use ndarray::{ArrayD, IxDyn};

    /// `[T, N, C]` log-probabilities: genuine `log_softmax` rows or raw values in [−3, 1].
    fn log_probs(rng: &mut Rng, t: usize, n: usize, c: usize, normalised: bool) -> ArrayD<f64> {
        let mut x = ArrayD::from_shape_fn(IxDyn(&[t, n, c]), |_| rng.uniform(-3.0, 1.0));
        if normalised {
            log_softmax_last(&mut x);
        }
        x
    }

    fn log_softmax_last(x: &mut ArrayD<f64>) {
        for mut row in x.lanes_mut(Axis(2)) {
            let m = lse(row.as_slice().unwrap());
            row.mapv_inplace(|v| v - m);
        }
    }

    /// The loss as a 0-d `MultiGrad` (summing `None`'s per-sample losses).
    fn as_multi(out: LossGrad) -> MultiGrad {
        let loss = scalar(out.loss.sum());
        MultiGrad {
            loss,
            grads: vec![out.grad],
        }
    }

    /// Σ over all `C^T` label paths of the path probability, for paths whose collapse
    /// (merge repeats, drop blanks) is `target`; and per (t, c) the same sum restricted to
    /// paths with `π_t = c`.
    fn brute_force(lp: ArrayView2<'_, f64>, target: &[usize], blank: usize) -> (f64, Array2<f64>) {
        let (t_len, c) = lp.dim();
        let mut total = 0.0;
        let mut through = Array2::zeros((t_len, c));
        let mut path = vec![0usize; t_len];
        for code in 0..c.pow(t_len as u32) {
            let mut k = code;
            for p in path.iter_mut() {
                *p = k % c;
                k /= c;
            }
            let mut collapsed = Vec::new();
            let mut prev = None;
            for &p in &path {
                if Some(p) != prev && p != blank {
                    collapsed.push(p);
                }
                prev = Some(p);
            }
            if collapsed == target {
                let prob = path
                    .iter()
                    .enumerate()
                    .map(|(t, &p)| lp[[t, p]])
                    .sum::<f64>()
                    .exp();
                total += prob;
                for (t, &p) in path.iter().enumerate() {
                    through[[t, p]] += prob;
                }
            }
        }
        (total, through)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = Rng(17);
        type Case = (usize, usize, Vec<Vec<usize>>, Vec<usize>, usize, Reduction);
        let cases: Vec<Case> = vec![
            // (T, C, targets, input lengths, blank, reduction)
            (
                6,
                4,
                vec![vec![1, 2], vec![1, 1], vec![]],
                vec![6, 4, 5],
                0,
                Reduction::Mean,
            ),
            // [1, 1, 2] needs exactly 4 frames; [2, 1, 2] needs 3.
            (
                5,
                3,
                vec![vec![1, 1, 2], vec![2, 1, 2]],
                vec![4, 5],
                0,
                Reduction::Sum,
            ),
            (
                4,
                3,
                vec![vec![0, 1], vec![0, 0]],
                vec![4, 3],
                2,
                Reduction::None,
            ),
            (
                3,
                2,
                vec![vec![1], vec![1, 1]],
                vec![1, 3],
                0,
                Reduction::Mean,
            ),
            (7, 5, vec![vec![4, 3, 3, 1]], vec![7], 2, Reduction::Sum),
            (2, 3, vec![vec![]], vec![2], 1, Reduction::None),
        ];
        for (t, c, targets, lens, blank, reduction) in cases {
            for normalised in [true, false] {
                let n = targets.len();
                let x = log_probs(&mut rng, t, n, c, normalised);
                let label = format!("T{t} C{c} {targets:?} {lens:?} normalised {normalised}");
                check_fd(&label, &[x], |inp| {
                    as_multi(ctc(
                        inp[0].view(),
                        &targets,
                        &lens,
                        blank,
                        reduction,
                        false,
                        GS,
                    ))
                });
            }
        }
    }

    #[test]
    fn matches_brute_force_path_enumeration() {
        let mut rng = Rng(29);
        let cases: Vec<(usize, Vec<usize>, usize)> = vec![
            (2, vec![], 0),
            (2, vec![1], 0),
            (3, vec![1, 2], 0),
            (3, vec![1, 1], 0),
            (3, vec![2, 0], 1),
            (3, vec![0, 0], 2),
            (3, vec![1, 2, 1], 0),
            (2, vec![1, 1, 1], 0),
        ];
        for (c, target, blank) in cases {
            for t_len in 1..=5 {
                for normalised in [true, false] {
                    let x = log_probs(&mut rng, t_len, 1, c, normalised);
                    let lp = x.index_axis(Axis(1), 0);
                    let lp = lp.into_dimensionality::<ndarray::Ix2>().unwrap();
                    let (p, through) = brute_force(lp, &target, blank);
                    let out = ctc(
                        x.view(),
                        std::slice::from_ref(&target),
                        &[t_len],
                        blank,
                        Reduction::Sum,
                        false,
                        1.0,
                    );
                    let nll = out.loss[[]];
                    let label = format!("C{c} T{t_len} {target:?} blank {blank}");
                    if p == 0.0 {
                        assert_eq!(nll, f64::INFINITY, "{label}");
                        assert!(out.grad.iter().all(|&g| g == 0.0), "{label}");
                        continue;
                    }
                    assert!(
                        close((-nll).exp(), p, 1e-12, 1e-12),
                        "{label}: {nll} vs {p}"
                    );
                    for tt in 0..t_len {
                        for k in 0..c {
                            let g = out.grad[[tt, 0, k]];
                            assert!(
                                close(g, -through[[tt, k]] / p, 1e-10, 1e-12),
                                "{label}: t {tt} c {k}: {g}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn impossible_alignment_is_infinite() {
        let mut rng = Rng(3);
        // [1, 1] needs 3 frames, [1, 2, 3] needs 3: lengths 2 make both impossible; the
        // third sample is fine.
        let x = log_probs(&mut rng, 4, 3, 4, true);
        let targets = vec![vec![1, 1], vec![1, 2, 3], vec![2]];
        let lens = [2, 2, 4];
        let raw = ctc(x.view(), &targets, &lens, 0, Reduction::None, false, 1.0);
        assert_eq!(raw.loss[[0]], f64::INFINITY);
        assert_eq!(raw.loss[[1]], f64::INFINITY);
        assert!(raw.loss[[2]].is_finite());
        assert!(raw.grad.iter().all(|g| g.is_finite()));
        for i in 0..2 {
            assert!(raw.grad.index_axis(Axis(1), i).iter().all(|&g| g == 0.0));
        }
        let zeroed = ctc(x.view(), &targets, &lens, 0, Reduction::None, true, 1.0);
        assert_eq!(zeroed.loss[[0]], 0.0);
        assert_eq!(zeroed.loss[[1]], 0.0);
        assert_eq!(zeroed.loss[[2]], raw.loss[[2]]);
        assert_eq!(zeroed.grad, raw.grad);
        let mean = ctc(x.view(), &targets, &lens, 0, Reduction::Mean, false, 1.0);
        assert_eq!(mean.loss[[]], f64::INFINITY);
        let mean0 = ctc(x.view(), &targets, &lens, 0, Reduction::Mean, true, 1.0);
        assert!(close(mean0.loss[[]], raw.loss[[2]] / 3.0, 1e-15, 0.0));
    }

    #[test]
    fn zero_input_length() {
        let mut rng = Rng(4);
        let x = log_probs(&mut rng, 3, 2, 3, true);
        let out = ctc(
            x.view(),
            &[vec![], vec![2]],
            &[0, 0],
            0,
            Reduction::None,
            false,
            1.0,
        );
        assert_eq!(out.loss[[0]], 0.0);
        assert_eq!(out.loss[[1]], f64::INFINITY);
        assert!(out.grad.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn empty_target_is_blank_sum() {
        let mut rng = Rng(6);
        let x = log_probs(&mut rng, 5, 2, 3, false);
        let out = ctc(
            x.view(),
            &[vec![], vec![]],
            &[5, 3],
            1,
            Reduction::None,
            false,
            1.0,
        );
        for (i, len) in [(0usize, 5usize), (1, 3)] {
            let want: f64 = -(0..len).map(|t| x[[t, i, 1]]).sum::<f64>();
            assert!(close(out.loss[[i]], want, 1e-14, 0.0));
            for t in 0..5 {
                for c in 0..3 {
                    let g = if t < len && c == 1 { -1.0 } else { 0.0 };
                    assert!(close(out.grad[[t, i, c]], g, 1e-14, 0.0));
                }
            }
        }
    }

    #[test]
    fn reductions() {
        let mut rng = Rng(9);
        let x = log_probs(&mut rng, 6, 3, 4, true);
        let targets = vec![vec![1, 2, 3], vec![], vec![2, 2]];
        let lens = [6, 6, 5];
        let none = ctc(x.view(), &targets, &lens, 0, Reduction::None, false, 1.0);
        let sum = ctc(x.view(), &targets, &lens, 0, Reduction::Sum, false, 1.0);
        let mean = ctc(x.view(), &targets, &lens, 0, Reduction::Mean, false, 1.0);
        let l = &none.loss;
        assert_eq!(l.shape(), &[3]);
        assert!(close(sum.loss[[]], l.sum(), 1e-15, 0.0));
        let want = (l[[0]] / 3.0 + l[[1]] / 1.0 + l[[2]] / 2.0) / 3.0;
        assert!(close(mean.loss[[]], want, 1e-15, 0.0));
        assert_eq!(none.grad, sum.grad);
        for (i, div) in [(0, 9.0), (1, 3.0), (2, 6.0)] {
            let a = none.grad.index_axis(Axis(1), i);
            let b = mean.grad.index_axis(Axis(1), i);
            for (u, v) in a.iter().zip(b) {
                assert!(close(*v, u / div, 1e-15, 0.0));
            }
        }
        // Frames past the input length get no gradient; earlier frames sum to −1.
        assert!(none
            .grad
            .slice(ndarray::s![5, 2, ..])
            .iter()
            .all(|&g| g == 0.0));
        for t in 0..5 {
            assert!(close(
                none.grad.slice(ndarray::s![t, 2, ..]).sum(),
                -1.0,
                1e-12,
                0.0
            ));
        }
        let empty = ctc(
            ArrayD::zeros(IxDyn(&[4, 0, 3])).view(),
            &[],
            &[],
            0,
            Reduction::Mean,
            false,
            1.0,
        );
        assert_eq!(empty.loss[[]], 0.0);
    }

    /// torch's gradient `exp(lp) − occupation` is ours composed with `log_softmax`.
    #[test]
    fn torch_gradient_is_ours_through_log_softmax() {
        let mut rng = Rng(12);
        let z = log_probs(&mut rng, 5, 2, 4, false);
        let targets = vec![vec![1, 3], vec![2, 2]];
        let lens = [5, 4];
        let through = |z: &ArrayD<f64>| {
            let mut lp = z.clone();
            log_softmax_last(&mut lp);
            let out = ctc(lp.view(), &targets, &lens, 0, Reduction::Sum, false, GS);
            let mut g = out.grad.clone();
            for ((t, i, c), v) in g
                .view_mut()
                .into_dimensionality::<Ix3>()
                .unwrap()
                .indexed_iter_mut()
            {
                if t < lens[i] {
                    *v += GS * lp[[t, i, c]].exp();
                }
            }
            MultiGrad {
                loss: scalar(out.loss[[]]),
                grads: vec![g],
            }
        };
        check_fd("log_softmax", &[z], |inp| through(&inp[0]));
    }

    #[test]
    fn extreme_log_probs_stay_finite() {
        // Every entry −1e4: p = K·e^{−1e4·T} with K the number of valid alignments.
        let (t_len, c) = (5, 3);
        let x = ArrayD::from_elem(IxDyn(&[t_len, 1, c]), -1e4);
        let target = vec![1, 2];
        let ones = ArrayD::zeros(IxDyn(&[t_len, c]));
        let (k, _) = brute_force(
            ones.view().into_dimensionality::<ndarray::Ix2>().unwrap(),
            &target,
            0,
        );
        let out = ctc(
            x.view(),
            std::slice::from_ref(&target),
            &[t_len],
            0,
            Reduction::Sum,
            false,
            1.0,
        );
        assert!(close(out.loss[[]], 1e4 * t_len as f64 - k.ln(), 1e-14, 0.0));
        assert!(out.grad.iter().all(|g| g.is_finite()));
        // α + β + nll cancels terms of size 5e4: ~1e-11 relative rounding.
        for t in 0..t_len {
            assert!(close(
                out.grad.slice(ndarray::s![t, 0, ..]).sum(),
                -1.0,
                1e-10,
                0.0
            ));
        }
        // A mix of −1e4 and ordinary values, with an alignment only through the ordinary ones.
        let mut rng = Rng(41);
        let mut x = log_probs(&mut rng, 6, 2, 4, true);
        for ((t, _, c), v) in x
            .view_mut()
            .into_dimensionality::<Ix3>()
            .unwrap()
            .indexed_iter_mut()
        {
            if (t + c) % 3 == 0 {
                *v = -1e4;
            }
        }
        let targets = vec![vec![1, 2, 3], vec![3, 3]];
        let out = ctc(x.view(), &targets, &[6, 6], 0, Reduction::Mean, false, 1.0);
        assert!(out.loss[[]].is_finite());
        assert!(out.grad.iter().all(|g| g.is_finite()));
        // −∞ entries: no alignment may use them, the rest still works.
        let mut x = log_probs(&mut rng, 4, 1, 3, true);
        x[[0, 0, 1]] = f64::NEG_INFINITY;
        x[[2, 0, 0]] = f64::NEG_INFINITY;
        let out = ctc(x.view(), &[vec![1]], &[4], 0, Reduction::Sum, false, 1.0);
        assert!(out.loss[[]].is_finite());
        assert!(out.grad.iter().all(|g| g.is_finite()));
        assert_eq!(out.grad[[0, 0, 1]], 0.0);
        assert_eq!(out.grad[[2, 0, 0]], 0.0);
    }

    #[test]
    #[should_panic(expected = "holds the blank")]
    fn rejects_blank_in_target() {
        let x = ArrayD::zeros(IxDyn(&[3, 1, 3]));
        let _ = ctc(x.view(), &[vec![0]], &[3], 0, Reduction::Sum, false, 1.0);
    }

    #[test]
    #[should_panic(expected = "exceeds T")]
    fn rejects_long_input() {
        let x = ArrayD::zeros(IxDyn(&[3, 1, 3]));
        let _ = ctc(x.view(), &[vec![1]], &[4], 0, Reduction::Sum, false, 1.0);
    }

    #[test]
    #[should_panic(expected = "must be < C")]
    fn rejects_blank_out_of_range() {
        let x = ArrayD::zeros(IxDyn(&[3, 1, 3]));
        let _ = ctc(x.view(), &[vec![1]], &[3], 3, Reduction::Sum, false, 1.0);
    }

    #[test]
    #[should_panic(expected = "≥ C")]
    fn rejects_label_out_of_range() {
        let x = ArrayD::zeros(IxDyn(&[3, 1, 3]));
        let _ = ctc(x.view(), &[vec![3]], &[3], 0, Reduction::Sum, false, 1.0);
    }

    #[test]
    #[should_panic(expected = "N = 1")]
    fn rejects_length_mismatch() {
        let x = ArrayD::zeros(IxDyn(&[3, 1, 3]));
        let _ = ctc(
            x.view(),
            &[vec![1], vec![2]],
            &[3, 3],
            0,
            Reduction::Sum,
            false,
            1.0,
        );
    }
}
