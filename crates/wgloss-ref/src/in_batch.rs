//! Metric learning (F5), in-batch contrastive losses: info_nce, nt_xent, supcon.
//!
//! Every loss here is a cross-entropy over a row of similarity logits `s = sim / τ`:
//!
//! * [`info_nce`]: query against the in-batch keys (plus optional extra negatives, MoCo-queue
//!   style), target the matching key; `symmetric` adds the key→query direction (CLIP).
//! * [`nt_xent_views`]: SimCLR's NT-Xent over two stacked views, the pairs `(i, i + N)`.
//! * [`nt_xent_labels`]: pytorch-metric-learning's `NTXentLoss` on labels, one term per ordered
//!   positive pair.
//! * [`supcon`]: pytorch-metric-learning's `SupConLoss` on labels, one term per anchor.
//!
//! Normalisation is torch's `F.normalize`: `x̂ = x / max(‖x‖₂, 1e-12)`, whose exact gradient is
//! `(g − (g·x̂) x̂) / ‖x‖` when `‖x‖ ≥ 1e-12` and `g / 1e-12` below the clamp (so a zero vector
//! gives `x̂ = 0`, finite similarities and a finite, if large, gradient). The cosine similarity
//! is `x̂_i · x̂_j` (pml's `CosineSimilarity`: normalise, then `matmul`).
//!
//! Every log-sum-exp is taken around its maximum, relative to the target logit (`ln_1p` when
//! the target is the maximum), so `τ` as small as 0.01 stays finite and a saturated row keeps
//! its tiny loss and gradient instead of rounding them to 0. The losses are functions of the logit matrix `S`; each function builds `G = ∂loss/∂S` and then
//! back-propagates through the matrix product and the normalisation.

use ndarray::{s, Array2, ArrayD, ArrayViewD, Ix2};

use crate::{scalar, MultiGrad};

/// torch `F.normalize`'s clamp on the norm.
const NORM_EPS: f64 = 1e-12;

/// The `[rows, D]` matrix of an embedding input; panics unless it is 2-d.
fn matrix(x: ArrayViewD<'_, f64>, name: &str) -> Array2<f64> {
    assert_eq!(x.ndim(), 2, "{name} must be [rows, D], got {:?}", x.shape());
    x.into_dimensionality::<Ix2>()
        .expect("2-d checked")
        .to_owned()
}

/// Labels `[N]` as integers held in f64; panics on a wrong length or a non-integer.
fn label_vec(labels: ArrayViewD<'_, f64>, n: usize) -> Vec<f64> {
    assert_eq!(labels.shape(), &[n], "labels must be [N] with N = {n}");
    labels
        .iter()
        .map(|&l| {
            assert!(
                l.is_finite() && l == l.trunc(),
                "labels must be integers, got {l}"
            );
            l
        })
        .collect()
}

fn check_temperature(temperature: f64) {
    assert!(
        temperature > 0.0 && temperature.is_finite(),
        "temperature must be > 0, got {temperature}"
    );
}

/// Row-wise `x / max(‖x‖₂, 1e-12)` and the row norms `‖x‖₂`.
fn normalize_rows(x: &Array2<f64>) -> (Array2<f64>, Vec<f64>) {
    let norms: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let mut y = x.clone();
    for (mut row, &n) in y.rows_mut().into_iter().zip(&norms) {
        row /= n.max(NORM_EPS);
    }
    (y, norms)
}

/// Gradient through [`normalize_rows`]: `g_y` is `∂L/∂x̂`, `y = x̂`. torch's `clamp_min`
/// passes the gradient at equality, so `‖x‖ = 1e-12` takes the unclamped branch.
fn normalize_backward(g_y: &Array2<f64>, y: &Array2<f64>, norms: &[f64]) -> Array2<f64> {
    let mut g = g_y.clone();
    for ((mut gr, yr), &n) in g.rows_mut().into_iter().zip(y.rows()).zip(norms) {
        if n >= NORM_EPS {
            let dot = gr.dot(&yr);
            gr.scaled_add(-dot, &yr);
            gr /= n;
        } else {
            gr /= NORM_EPS;
        }
    }
    g
}

/// `x` (normalised when `normalize`), with the row norms for the backward (`None` when raw).
fn maybe_normalize(x: &Array2<f64>, normalize: bool) -> (Array2<f64>, Option<Vec<f64>>) {
    if normalize {
        let (y, n) = normalize_rows(x);
        (y, Some(n))
    } else {
        (x.clone(), None)
    }
}

fn maybe_normalize_backward(
    g: Array2<f64>,
    y: &Array2<f64>,
    norms: &Option<Vec<f64>>,
) -> Array2<f64> {
    match norms {
        Some(n) => normalize_backward(&g, y, n),
        None => g,
    }
}

/// Cross-entropy of logits `x` against class `t`: `(log Σ_k e^{x_k} − x_t, softmax(x) − e_t)`.
///
/// Taken relative to the target, `log Σ_k e^{x_k − x_t}`, around `m = max_k x_k − x_t ≥ 0`;
/// when the target is the maximum (`m = 0`) it is `ln_1p(Σ_{k≠t} e^{x_k − x_t})`, so a
/// saturated row keeps its tiny loss (≈ e^{−100} at τ = 0.01) instead of rounding to 0. The
/// target's derivative is written `−Σ_{k≠t} p_k` for the same reason.
fn cross_entropy(x: &[f64], t: usize) -> (f64, Vec<f64>) {
    let xt = x[t];
    let m = x.iter().fold(xt, |a, &v| a.max(v)) - xt;
    let e: Vec<f64> = x.iter().map(|&v| (v - xt - m).exp()).collect();
    let rest: f64 = e
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != t)
        .map(|(_, v)| v)
        .sum();
    let z = (-m).exp() + rest;
    let loss = if m == 0.0 { rest.ln_1p() } else { m + z.ln() };
    let d = e
        .iter()
        .enumerate()
        .map(|(k, v)| if k == t { -rest / z } else { v / z })
        .collect();
    (loss, d)
}

/// Backward of a self-similarity loss: `S = Ŷ Ŷᵀ / τ`, `G = ∂L/∂S`, so
/// `∂L/∂Ŷ = (G + Gᵀ) Ŷ / τ`, then through the normalisation, times `grad_scale`.
fn self_sim_backward(
    g: &Array2<f64>,
    y: &Array2<f64>,
    norms: &[f64],
    temperature: f64,
    grad_scale: f64,
) -> ArrayD<f64> {
    let gy = (g + &g.t()).dot(y) / temperature;
    (normalize_backward(&gy, y, norms) * grad_scale).into_dyn()
}

/// InfoNCE / CLIP contrastive loss of `query [N, D]` against `key [N, D]`, with optional extra
/// negatives `[M, D]` (a MoCo-style queue).
///
/// With `q̂, k̂, n̂` the rows (normalised by `F.normalize` when `normalize`, raw otherwise), row
/// `i`'s logits are `q̂_i·k̂_j / τ` for the N keys `j` followed by `q̂_i·n̂_m / τ` for the M
/// negatives, and its target is column `i` (the in-batch keys `j ≠ i` and the extra negatives
/// are the negatives):
///
/// ```text
/// L_qk = (1/N) Σ_i [ log(Σ_j e^{q̂_i·k̂_j/τ} + Σ_m e^{q̂_i·n̂_m/τ}) − q̂_i·k̂_i/τ ]
/// ```
///
/// `symmetric = false` returns `L_qk`. `symmetric = true` is CLIP's
/// `(CE(logits_per_image) + CE(logits_per_text)) / 2`: `½ (L_qk + L_kq)` with
/// `L_kq = (1/N) Σ_j [ log Σ_i e^{k̂_j·q̂_i/τ} − k̂_j·q̂_j/τ ]` over the N queries only (the
/// extra negatives are not in the key→query direction).
///
/// Returns the 0-d loss and `grad_scale ·` `[∂L/∂query, ∂L/∂key]`, plus `∂L/∂negatives` when
/// `negatives` is given. N = 0 gives loss 0. Panics when `τ ≤ 0` or the shapes disagree.
pub fn info_nce(
    query: ArrayViewD<'_, f64>,
    key: ArrayViewD<'_, f64>,
    negatives: Option<ArrayViewD<'_, f64>>,
    temperature: f64,
    normalize: bool,
    symmetric: bool,
    grad_scale: f64,
) -> MultiGrad {
    check_temperature(temperature);
    let q = matrix(query, "query");
    let k = matrix(key, "key");
    assert_eq!(q.dim(), k.dim(), "query and key shapes differ");
    let (n, d) = q.dim();
    let neg = negatives.map(|x| matrix(x, "negatives"));
    let m = neg.as_ref().map_or(0, |x| x.nrows());
    if let Some(x) = &neg {
        assert_eq!(x.ncols(), d, "negatives must be [M, D] with D = {d}");
    }
    // The candidates: the N keys, then the M negatives.
    let mut c = Array2::zeros((n + m, d));
    c.slice_mut(s![..n, ..]).assign(&k);
    if let Some(x) = &neg {
        c.slice_mut(s![n.., ..]).assign(x);
    }
    let (qh, q_norms) = maybe_normalize(&q, normalize);
    let (ch, c_norms) = maybe_normalize(&c, normalize);
    let logits = qh.dot(&ch.t()) / temperature; // [N, N + M]
    let mut g = Array2::<f64>::zeros((n, n + m));
    let mut loss = 0.0;
    let w = if symmetric { 0.5 } else { 1.0 } / n.max(1) as f64;
    for i in 0..n {
        let row: Vec<f64> = logits.row(i).to_vec();
        let (l, dl) = cross_entropy(&row, i);
        loss += w * l;
        for (j, dv) in dl.into_iter().enumerate() {
            g[[i, j]] += w * dv;
        }
    }
    if symmetric {
        // Key j against the N queries: column j of the query-key block.
        for j in 0..n {
            let col: Vec<f64> = logits.slice(s![.., j]).to_vec();
            let (l, dl) = cross_entropy(&col, j);
            loss += w * l;
            for (i, dv) in dl.into_iter().enumerate() {
                g[[i, j]] += w * dv;
            }
        }
    }
    let gq = g.dot(&ch) / temperature;
    let gc = g.t().dot(&qh) / temperature;
    let gq = maybe_normalize_backward(gq, &qh, &q_norms) * grad_scale;
    let gc = maybe_normalize_backward(gc, &ch, &c_norms) * grad_scale;
    let mut grads = vec![gq.into_dyn(), gc.slice(s![..n, ..]).to_owned().into_dyn()];
    if neg.is_some() {
        grads.push(gc.slice(s![n.., ..]).to_owned().into_dyn());
    }
    MultiGrad {
        loss: scalar(loss),
        grads,
    }
}

/// SimCLR's NT-Xent over two stacked views `z [2N, D]`: rows `i` and `i + N` are the positive
/// pair, every other row is a negative.
///
/// `s_ij = ẑ_i·ẑ_j / τ` (cosine similarity, `F.normalize`), `pos(i) = (i + N) mod 2N`:
///
/// ```text
/// ℓ_i = −log( e^{s_{i,pos(i)}} / Σ_{k≠i} e^{s_ik} ),     L = (1/2N) Σ_i ℓ_i
/// ```
///
/// the paper's `1/(2N) Σ_k [ℓ(2k−1, 2k) + ℓ(2k, 2k−1)]` with the views stacked rather than
/// interleaved. (The reference TensorFlow `add_contrastive_loss` returns `loss_a + loss_b`, two
/// means over N rows each: twice this value; it also normalises with `tf.math.l2_normalize`,
/// whose clamp is on ‖x‖² rather than ‖x‖.) N = 1 gives 0 (the positive is the only
/// candidate); N = 0 gives 0.
///
/// Returns the 0-d loss and `[grad_scale · ∂L/∂z]`. Panics when `τ ≤ 0` or the row count is odd.
pub fn nt_xent_views(z: ArrayViewD<'_, f64>, temperature: f64, grad_scale: f64) -> MultiGrad {
    check_temperature(temperature);
    let z = matrix(z, "z");
    let rows = z.nrows();
    assert!(rows.is_multiple_of(2), "z must be [2N, D], got {rows} rows");
    let half = rows / 2;
    let (zh, norms) = normalize_rows(&z);
    let sim = zh.dot(&zh.t()) / temperature;
    let mut g = Array2::<f64>::zeros((rows, rows));
    let mut loss = 0.0;
    let w = 1.0 / rows.max(1) as f64;
    for i in 0..rows {
        let pos = (i + half) % rows;
        let cols: Vec<usize> = (0..rows).filter(|&k| k != i).collect();
        let x: Vec<f64> = cols.iter().map(|&k| sim[[i, k]]).collect();
        let t = cols.iter().position(|&k| k == pos).expect("pos ≠ i");
        let (l, dl) = cross_entropy(&x, t);
        loss += w * l;
        for (&k, dv) in cols.iter().zip(dl) {
            g[[i, k]] += w * dv;
        }
    }
    MultiGrad {
        loss: scalar(loss),
        grads: vec![self_sim_backward(&g, &zh, &norms, temperature, grad_scale)],
    }
}

/// pytorch-metric-learning `NTXentLoss(temperature)` with its defaults (`CosineSimilarity`,
/// `MeanReducer`, all pairs of the batch), on `emb [N, D]` and integer `labels [N]`.
///
/// `s_ij = ê_i·ê_j / τ`. Every ordered positive pair `(a, p)`, `a ≠ p`, `label_a = label_p`,
/// gives one term, its negatives being every `n` with `label_n ≠ label_a`:
///
/// ```text
/// ℓ_ap = −log( e^{s_ap} / (e^{s_ap} + Σ_{n: label_n ≠ label_a} e^{s_an}) )
/// L    = mean of ℓ_ap over all P ordered positive pairs
/// ```
///
/// pml returns its losses with `reduction_type = "pos_pair"` and `NTXentLoss` keeps
/// `BaseMetricLossFunction`'s default `MeanReducer`, so the mean is over every positive pair
/// (not only the non-zero ones). No positive pair gives loss 0 and gradient 0 (pml's
/// `zero_losses`); so does a batch with no negative pair (pml's `len(a2) > 0` check, and the
/// formula also gives exactly 0 there, every `ℓ_ap = −log 1`). pml adds `finfo.tiny` inside the
/// log (`log(num/den + tiny)`); that is left out here (it only matters when `ℓ_ap` would exceed
/// about 708 in f64, 87 in pml's usual f32).
///
/// Returns the 0-d loss and `[grad_scale · ∂L/∂emb]`. Panics when `τ ≤ 0`, `emb` is not 2-d or
/// the labels are not `[N]` integers.
pub fn nt_xent_labels(
    emb: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    temperature: f64,
    grad_scale: f64,
) -> MultiGrad {
    check_temperature(temperature);
    let e = matrix(emb, "emb");
    let n = e.nrows();
    let y = label_vec(labels, n);
    let (eh, norms) = normalize_rows(&e);
    let sim = eh.dot(&eh.t()) / temperature;
    // Per anchor a with LN_a = log Σ_{n ∉ label(a)} e^{s_an}, pair (a, p)'s loss is
    // softplus(LN_a − s_ap): its derivative is −σ(LN_a − s_ap) for s_ap and
    // σ(LN_a − s_ap) e^{s_an − LN_a} for each negative s_an, so one pass per anchor serves all its
    // pairs (O(N²); `tests::nt_xent_labels_direct` is the per-pair cross-entropy it equals).
    let pairs: usize = (0..n)
        .map(|a| (0..n).filter(|&p| p != a && y[p] == y[a]).count())
        .sum();
    let w = 1.0 / pairs.max(1) as f64;
    let mut g = Array2::<f64>::zeros((n, n));
    let mut loss = 0.0;
    for a in 0..n {
        let negs: Vec<usize> = (0..n).filter(|&k| y[k] != y[a]).collect();
        let ln = if negs.is_empty() {
            f64::NEG_INFINITY
        } else {
            let m = negs
                .iter()
                .map(|&k| sim[[a, k]])
                .fold(f64::NEG_INFINITY, f64::max);
            m + negs
                .iter()
                .map(|&k| (sim[[a, k]] - m).exp())
                .sum::<f64>()
                .ln()
        };
        let mut rate = 0.0;
        for p in (0..n).filter(|&p| p != a && y[p] == y[a]) {
            let z = ln - sim[[a, p]];
            // softplus(z) and σ(z), without overflow; z = −∞ (no negatives) gives 0 and 0.
            let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
            let sigma = if z >= 0.0 {
                1.0 / (1.0 + (-z).exp())
            } else {
                let e = z.exp();
                e / (1.0 + e)
            };
            loss += w * softplus;
            g[[a, p]] -= w * sigma;
            rate += sigma;
        }
        for &k in &negs {
            g[[a, k]] += w * rate * (sim[[a, k]] - ln).exp();
        }
    }
    MultiGrad {
        loss: scalar(loss),
        grads: vec![self_sim_backward(&g, &eh, &norms, temperature, grad_scale)],
    }
}

/// pytorch-metric-learning `SupConLoss(temperature)` with its defaults (`CosineSimilarity`,
/// `AvgNonZeroReducer`, all pairs of the batch), on `emb [N, D]` and integer `labels [N]`.
///
/// `s_ij = ê_i·ê_j / τ`; `P(a)` = the positives of anchor `a` (`p ≠ a`, same label):
///
/// ```text
/// log_prob(a, k) = s_ak − log Σ_{k' ≠ a} e^{s_ak'}
/// ℓ_a = −(1/|P(a)|) Σ_{p ∈ P(a)} log_prob(a, p)
/// L   = mean of ℓ_a over the anchors with |P(a)| ≥ 1
/// ```
///
/// pml computes `ℓ_a` for every anchor (0 for an anchor without positives: `0 / (0 + tiny)`)
/// and reduces with `AvgNonZeroReducer` (the mean of the losses `> 0`). An anchor with a
/// positive and at least one other candidate has `ℓ_a > 0`, so that is the mean over anchors
/// with positives; this function uses that count (it differs from pml only if some `ℓ_a`
/// underflows to exactly 0). The denominator runs over `k' ≠ a` (pml's `pos_mask + neg_mask`).
///
/// Degenerate batches follow pml's `pos_mask.any() and neg_mask.any()` check: no positive pair,
/// or no negative pair (every label equal), gives loss 0 and gradient 0. (The formula alone
/// would give a non-zero loss for all-equal labels; pml, and so this function, does not.)
///
/// Returns the 0-d loss and `[grad_scale · ∂L/∂emb]`. Panics when `τ ≤ 0`, `emb` is not 2-d or
/// the labels are not `[N]` integers.
pub fn supcon(
    emb: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    temperature: f64,
    grad_scale: f64,
) -> MultiGrad {
    check_temperature(temperature);
    let e = matrix(emb, "emb");
    let n = e.nrows();
    let y = label_vec(labels, n);
    let positives: Vec<Vec<usize>> = (0..n)
        .map(|a| (0..n).filter(|&p| p != a && y[p] == y[a]).collect())
        .collect();
    let any_neg = (0..n).any(|a| (0..n).any(|k| y[k] != y[a]));
    let anchors: Vec<usize> = (0..n).filter(|&a| !positives[a].is_empty()).collect();
    if anchors.is_empty() || !any_neg {
        return MultiGrad {
            loss: scalar(0.0),
            grads: vec![Array2::<f64>::zeros(e.raw_dim()).into_dyn()],
        };
    }
    let (eh, norms) = normalize_rows(&e);
    let sim = eh.dot(&eh.t()) / temperature;
    let mut g = Array2::<f64>::zeros((n, n));
    let mut loss = 0.0;
    let w = 1.0 / anchors.len() as f64;
    for &a in &anchors {
        // ℓ_a = LSE_{k ≠ a} s_ak − mean_p s_ap; ∂ℓ_a/∂s_ak = softmax_k − [k ∈ P(a)] / |P(a)|.
        // LSE as m + ln_1p(Σ_{k ≠ argmax} e^{s_ak − m}), and with one positive its derivative
        // as −Σ_{k ≠ p} softmax_k, so that saturated rows (τ small) keep their tiny values.
        let others: Vec<usize> = (0..n).filter(|&k| k != a).collect();
        let top =
            others.iter().copied().fold(
                others[0],
                |b, k| if sim[[a, k]] > sim[[a, b]] { k } else { b },
            );
        let m = sim[[a, top]];
        let rest: f64 = others
            .iter()
            .filter(|&&k| k != top)
            .map(|&k| (sim[[a, k]] - m).exp())
            .sum();
        let lse = m + rest.ln_1p();
        let pos = &positives[a];
        let mean_pos = pos.iter().map(|&p| sim[[a, p]]).sum::<f64>() / pos.len() as f64;
        loss += w * ((m - mean_pos) + rest.ln_1p());
        let softmax = |k: usize| (sim[[a, k]] - lse).exp();
        for &k in &others {
            g[[a, k]] += w * softmax(k);
        }
        if let [p] = pos[..] {
            let away: f64 = others
                .iter()
                .filter(|&&k| k != p)
                .map(|&k| softmax(k))
                .sum();
            g[[a, p]] = -w * away;
        } else {
            for &p in pos {
                g[[a, p]] -= w / pos.len() as f64;
            }
        }
    }
    MultiGrad {
        loss: scalar(loss),
        grads: vec![self_sim_backward(&g, &eh, &norms, temperature, grad_scale)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{all_finite, check_fd, close, loss_of, Rng, GS};
    use ndarray::{arr1, arr2, Array1, Axis};

    /// [`super::nt_xent_labels`] pair by pair: the cross-entropy of the positive against the
    /// anchor's negatives, O(N³).
    fn nt_xent_labels_direct(
        emb: ArrayViewD<'_, f64>,
        labels: ArrayViewD<'_, f64>,
        temperature: f64,
        grad_scale: f64,
    ) -> MultiGrad {
        let e = matrix(emb, "emb");
        let n = e.nrows();
        let y = label_vec(labels, n);
        let (eh, norms) = normalize_rows(&e);
        let sim = eh.dot(&eh.t()) / temperature;
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).map(move |p| (a, p)))
            .filter(|&(a, p)| a != p && y[a] == y[p])
            .collect();
        let mut g = Array2::<f64>::zeros((n, n));
        let mut loss = 0.0;
        let w = 1.0 / pairs.len().max(1) as f64;
        for &(a, p) in &pairs {
            let cols: Vec<usize> = std::iter::once(p)
                .chain((0..n).filter(|&k| y[k] != y[a]))
                .collect();
            let x: Vec<f64> = cols.iter().map(|&k| sim[[a, k]]).collect();
            let (l, dl) = cross_entropy(&x, 0);
            loss += w * l;
            for (&k, dv) in cols.iter().zip(dl) {
                g[[a, k]] += w * dv;
            }
        }
        MultiGrad {
            loss: scalar(loss),
            grads: vec![self_sim_backward(&g, &eh, &norms, temperature, grad_scale)],
        }
    }

    #[test]
    fn nt_xent_labels_equals_the_per_pair_cross_entropy() {
        let mut rng = Rng(91);
        for (n, d, classes, tau) in [
            (7, 3, 3, 0.5),
            (9, 2, 2, 0.1),
            (6, 4, 6, 0.07),
            (5, 3, 1, 0.2),
        ] {
            let e = rng.matrix(n, d);
            let y = Array1::from_shape_fn(n, |i| ((i * 7 + 3) % classes) as f64).into_dyn();
            let fast = super::nt_xent_labels(e.view(), y.view(), tau, 0.7);
            let direct = nt_xent_labels_direct(e.view(), y.view(), tau, 0.7);
            let (a, b) = (fast.loss.sum(), direct.loss.sum());
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "loss {a} vs {b}");
            for (x, z) in fast.grads[0].iter().zip(direct.grads[0].iter()) {
                assert!((x - z).abs() <= 1e-12 * z.abs().max(1.0), "grad {x} vs {z}");
            }
        }
    }

    #[test]
    fn info_nce_grads_match_finite_differences() {
        let mut rng = Rng(0x1234_5678);
        for n in [2, 3, 7] {
            for d in [1, 3, 5] {
                for m in [None, Some(1), Some(4)] {
                    let q = rng.matrix(n, d);
                    let k = rng.matrix(n, d);
                    let mut inputs = vec![q, k];
                    if let Some(m) = m {
                        inputs.push(rng.matrix(m, d));
                    }
                    for normalize in [false, true] {
                        for symmetric in [false, true] {
                            for tau in [0.5, 0.07] {
                                let label = format!(
                                    "info_nce n {n} d {d} m {m:?} norm {normalize} sym \
                                     {symmetric} tau {tau}"
                                );
                                check_fd(&label, &inputs, |x| {
                                    info_nce(
                                        x[0].view(),
                                        x[1].view(),
                                        x.get(2).map(|v| v.view()),
                                        tau,
                                        normalize,
                                        symmetric,
                                        GS,
                                    )
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nt_xent_views_grads_match_finite_differences() {
        let mut rng = Rng(0xABCD);
        for n in [1, 2, 3, 7] {
            for d in [1, 3, 5] {
                let z = rng.matrix(2 * n, d);
                for tau in [0.5, 0.1, 0.01] {
                    let label = format!("nt_xent_views n {n} d {d} tau {tau}");
                    check_fd(&label, std::slice::from_ref(&z), |x| {
                        nt_xent_views(x[0].view(), tau, GS)
                    });
                }
            }
        }
    }

    #[test]
    fn label_losses_grads_match_finite_differences() {
        let mut rng = Rng(0x5EED_0001);
        for n in [2, 3, 7] {
            for d in [1, 3, 5] {
                for classes in [1, 2, 3] {
                    let e = rng.matrix(n, d);
                    let y = rng.labels(n, classes);
                    for tau in [0.5, 0.1, 0.01] {
                        let label = format!("nt_xent_labels n {n} d {d} y {y} tau {tau}");
                        check_fd(&label, std::slice::from_ref(&e), |x| {
                            nt_xent_labels(x[0].view(), y.view(), tau, GS)
                        });
                        let label = format!("supcon n {n} d {d} y {y} tau {tau}");
                        check_fd(&label, std::slice::from_ref(&e), |x| {
                            supcon(x[0].view(), y.view(), tau, GS)
                        });
                    }
                }
            }
        }
    }

    /// Fixed labels with singletons and a larger class, so every branch is exercised.
    #[test]
    fn label_losses_grads_match_fd_with_singleton_classes() {
        let mut rng = Rng(77);
        let y = arr1(&[0.0, 1.0, 1.0, 2.0, 1.0, 3.0, 3.0]).into_dyn();
        let e = rng.matrix(7, 3);
        for tau in [1.0, 0.2] {
            check_fd("nt_xent_labels singletons", std::slice::from_ref(&e), |x| {
                nt_xent_labels(x[0].view(), y.view(), tau, GS)
            });
            check_fd("supcon singletons", std::slice::from_ref(&e), |x| {
                supcon(x[0].view(), y.view(), tau, GS)
            });
        }
    }

    fn unit(rows: &[[f64; 3]]) -> ArrayD<f64> {
        arr2(rows).into_dyn()
    }

    const E1: [f64; 3] = [1.0, 0.0, 0.0];
    const E2: [f64; 3] = [0.0, 1.0, 0.0];
    const E3: [f64; 3] = [0.0, 0.0, 1.0];

    /// N = 2, q = k = [e1, e2]: the logit matrix is I/τ.
    ///   no negatives, τ = 0.5: each row [2, 0] → ln(1 + e^{−2}); symmetric the same.
    ///   negatives [e1], τ = 1: row 0 [1, 0, 1] → ln(2e + 1) − 1, row 1 [0, 1, 0] →
    ///     ln(e + 2) − 1; symmetric: ½(that mean + ln(1 + e^{−1})) (no negatives key→query).
    ///   raw q = [2e1, e2], k = [e1, 3e2], τ = 1: S = diag(2, 3) → rows ln(1 + e^{−2}),
    ///     ln(1 + e^{−3}), both directions the same; normalised S = I → ln(1 + e^{−1}).
    #[test]
    fn info_nce_hand_values() {
        let e = std::f64::consts::E;
        let qk = unit(&[E1, E2]);
        for sym in [false, true] {
            let out = info_nce(qk.view(), qk.view(), None, 0.5, true, sym, 1.0);
            assert!(close(loss_of(&out), (-2.0f64).exp().ln_1p(), 1e-14, 0.0));
            assert_eq!(out.grads.len(), 2);
        }
        let neg = unit(&[E1]);
        let one_way = 0.5 * (((2.0 * e + 1.0).ln() - 1.0) + ((e + 2.0).ln() - 1.0));
        let out = info_nce(
            qk.view(),
            qk.view(),
            Some(neg.view()),
            1.0,
            true,
            false,
            1.0,
        );
        assert!(close(loss_of(&out), one_way, 1e-14, 0.0));
        assert_eq!(out.grads.len(), 3);
        assert_eq!(out.grads[2].shape(), &[1, 3]);
        let out = info_nce(qk.view(), qk.view(), Some(neg.view()), 1.0, true, true, 1.0);
        let sym = 0.5 * (one_way + (-1.0f64).exp().ln_1p());
        assert!(close(loss_of(&out), sym, 1e-14, 0.0));

        let q = unit(&[[2.0, 0.0, 0.0], E2]);
        let k = unit(&[E1, [0.0, 3.0, 0.0]]);
        let raw = 0.5 * ((-2.0f64).exp().ln_1p() + (-3.0f64).exp().ln_1p());
        for sym in [false, true] {
            let out = info_nce(q.view(), k.view(), None, 1.0, false, sym, 1.0);
            assert!(close(loss_of(&out), raw, 1e-14, 0.0));
            let out = info_nce(q.view(), k.view(), None, 1.0, true, sym, 1.0);
            assert!(close(loss_of(&out), (-1.0f64).exp().ln_1p(), 1e-14, 0.0));
        }
    }

    /// N = 1: the positive is the only candidate, so ℓ = −log 1 = 0 whatever z is.
    /// N = 2, z = [e1, e2, e1, e2]: row i sees s = 1/τ for its positive and 0 for the two
    /// others: ℓ = ln(e^{1/τ} + 2) − 1/τ = ln(1 + 2e^{−1/τ}) for every row.
    /// τ = 0.01 with four identical rows: every logit is 100, ℓ = ln 3.
    #[test]
    fn nt_xent_views_hand_values() {
        let z = unit(&[[0.3, -1.0, 2.0], [4.0, 0.5, -0.2]]);
        let out = nt_xent_views(z.view(), 0.1, 1.0);
        assert!(loss_of(&out).abs() < 1e-15);
        assert!(out.grads[0].iter().all(|g| g.abs() < 1e-12));
        let z = unit(&[E1, E2, E1, E2]);
        for tau in [1.0f64, 0.5, 0.01] {
            let want = (2.0 * (-1.0 / tau).exp()).ln_1p();
            let out = nt_xent_views(z.view(), tau, 1.0);
            assert!(close(loss_of(&out), want, 1e-12, 1e-300), "tau {tau}");
        }
        let z = unit(&[E3, E3, E3, E3]);
        let out = nt_xent_views(z.view(), 0.01, 1.0);
        assert!(close(loss_of(&out), 3f64.ln(), 1e-13, 0.0));
        assert!(all_finite(&out));
    }

    /// With labels [0, 1, …, N−1, 0, 1, …, N−1] each anchor has exactly one positive (its
    /// other view) and every other row as negative, so pml's NTXentLoss (mean over the 2N
    /// ordered pairs), SupConLoss (mean over the 2N anchors) and SimCLR's NT-Xent coincide.
    #[test]
    fn views_labels_and_supcon_agree_on_paired_labels() {
        let mut rng = Rng(99);
        for n in [2, 3, 7] {
            for d in [1, 3, 5] {
                let z = rng.matrix(2 * n, d);
                let y = ArrayD::from_shape_fn(ndarray::IxDyn(&[2 * n]), |ix| (ix[0] % n) as f64);
                for tau in [0.5, 0.05] {
                    let a = nt_xent_views(z.view(), tau, GS);
                    let b = nt_xent_labels(z.view(), y.view(), tau, GS);
                    let c = supcon(z.view(), y.view(), tau, GS);
                    for other in [&b, &c] {
                        assert!(close(loss_of(other), loss_of(&a), 1e-12, 1e-14));
                        for (x, w) in other.grads[0].iter().zip(a.grads[0].iter()) {
                            assert!(close(*x, *w, 1e-10, 1e-12), "n {n} d {d}: {x} vs {w}");
                        }
                    }
                }
            }
        }
    }

    /// emb = [e1, e1, e2, e3], labels [0, 0, 0, 1], τ = 1: s_01 = 1, every other off-diagonal
    /// similarity 0. Anchor 3 (label 1) is a singleton: no positives.
    ///   NTXent: (0,1), (1,0): −log(e/(e + e^{s_03} = 1)) = ln(1 + e^{−1});
    ///           (0,2), (2,0), (1,2), (2,1): −log(1/(1 + 1)) = ln 2;  L = (2 ln(1+e^{−1}) + 4 ln 2)/6.
    ///   SupCon: anchors 0, 1: ln(e + 2) − (1 + 0)/2; anchor 2: ln 3 − 0; anchor 3 left out:
    ///           L = (2 (ln(e + 2) − ½) + ln 3) / 3.
    /// Labels [0, 0, 1], emb [e1, e1, e2], τ = 0.5: both give ln(1 + e^{−2}).
    #[test]
    fn label_losses_hand_values() {
        let e = std::f64::consts::E;
        let emb = unit(&[E1, E1, E2, E3]);
        let y = arr1(&[0.0, 0.0, 0.0, 1.0]).into_dyn();
        let want = (2.0 * (-1.0f64).exp().ln_1p() + 4.0 * 2f64.ln()) / 6.0;
        assert!(close(
            loss_of(&nt_xent_labels(emb.view(), y.view(), 1.0, 1.0)),
            want,
            1e-14,
            0.0
        ));
        let want = (2.0 * ((e + 2.0).ln() - 0.5) + 3f64.ln()) / 3.0;
        assert!(close(
            loss_of(&supcon(emb.view(), y.view(), 1.0, 1.0)),
            want,
            1e-14,
            0.0
        ));

        let emb = unit(&[E1, E1, E2]);
        let y = arr1(&[0.0, 0.0, 1.0]).into_dyn();
        let want = (-2.0f64).exp().ln_1p();
        assert!(close(
            loss_of(&nt_xent_labels(emb.view(), y.view(), 0.5, 1.0)),
            want,
            1e-14,
            0.0
        ));
        assert!(close(
            loss_of(&supcon(emb.view(), y.view(), 0.5, 1.0)),
            want,
            1e-14,
            0.0
        ));
    }

    /// All classes singletons: no positive pair → 0, gradient 0 (pml's `zero_losses`).
    /// All labels equal: no negative pair. NTXent: every ℓ_ap = −log(e^{s}/e^{s}) = 0 (and
    /// pml returns `zero_losses`); SupCon: pml's `neg_mask.any()` check returns 0.
    #[test]
    fn degenerate_label_sets() {
        let mut rng = Rng(5);
        let e = rng.matrix(4, 3);
        let distinct = arr1(&[0.0, 1.0, 2.0, 3.0]).into_dyn();
        let same = arr1(&[2.0, 2.0, 2.0, 2.0]).into_dyn();
        for y in [&distinct, &same] {
            for tau in [1.0, 0.01] {
                for out in [
                    nt_xent_labels(e.view(), y.view(), tau, 1.0),
                    supcon(e.view(), y.view(), tau, 1.0),
                ] {
                    assert!(all_finite(&out));
                    assert_eq!(loss_of(&out), 0.0, "labels {y}");
                    assert_eq!(out.grads[0].shape(), &[4, 3]);
                    assert!(out.grads[0].iter().all(|g| g.abs() < 1e-12), "labels {y}");
                }
            }
        }
        // One element: no pairs at all.
        let one = rng.matrix(1, 3);
        let y1 = arr1(&[0.0]).into_dyn();
        assert_eq!(
            loss_of(&nt_xent_labels(one.view(), y1.view(), 0.1, 1.0)),
            0.0
        );
        assert_eq!(loss_of(&supcon(one.view(), y1.view(), 0.1, 1.0)), 0.0);
    }

    /// A zero row: F.normalize gives 0 (the 1e-12 clamp), its similarities are 0, and the
    /// gradient g/1e-12 is large but finite. info_nce with a zero query row: that row's logits
    /// are all 0, so its loss is ln(N + M).
    #[test]
    fn zero_vectors_stay_finite() {
        let mut rng = Rng(11);
        let mut e = rng.matrix(4, 3);
        e.index_axis_mut(Axis(0), 1).fill(0.0);
        let y = arr1(&[0.0, 0.0, 1.0, 1.0]).into_dyn();
        for tau in [1.0, 0.01] {
            for out in [
                nt_xent_views(e.view(), tau, 1.0),
                nt_xent_labels(e.view(), y.view(), tau, 1.0),
                supcon(e.view(), y.view(), tau, 1.0),
                info_nce(e.view(), e.view(), Some(e.view()), tau, true, true, 1.0),
                info_nce(e.view(), e.view(), None, tau, false, false, 1.0),
            ] {
                assert!(all_finite(&out), "tau {tau}");
            }
        }
        let all_zero = ArrayD::zeros(ndarray::IxDyn(&[4, 3]));
        let out = supcon(all_zero.view(), y.view(), 0.1, 1.0);
        assert!(all_finite(&out));
        // All similarities 0: anchor 0 sees 3 candidates, log_prob = −ln 3 for its positive.
        assert!(close(loss_of(&out), 3f64.ln(), 1e-14, 0.0));

        // Query row 0 is zero; keys e1, e2, negative e3, τ = 1: row 0 logits [0, 0, 0] → ln 3,
        // row 1 logits [0, 1, 0] → ln(e + 2) − 1.
        let q = unit(&[[0.0; 3], E2]);
        let k = unit(&[E1, E2]);
        let neg = unit(&[E3]);
        let out = info_nce(q.view(), k.view(), Some(neg.view()), 1.0, true, false, 1.0);
        let want = 0.5 * (3f64.ln() + (std::f64::consts::E + 2.0).ln() - 1.0);
        assert!(close(loss_of(&out), want, 1e-14, 0.0));
        assert!(all_finite(&out));
    }

    /// τ = 0.01 (logits up to ±100) and, unnormalised, larger still: the log-sum-exp keeps
    /// every value finite; orthogonal unit vectors give ln(1 + e^{−100}) ≈ e^{−100}.
    #[test]
    fn small_temperatures_stay_finite() {
        let mut rng = Rng(3);
        let x = rng.matrix(7, 5) * 10.0;
        let k = rng.matrix(7, 5) * 10.0;
        let y = rng.labels(7, 3);
        for tau in [0.01, 1e-4] {
            for out in [
                info_nce(x.view(), k.view(), Some(x.view()), tau, false, true, 1.0),
                info_nce(x.view(), k.view(), None, tau, true, true, 1.0),
                nt_xent_labels(x.view(), y.view(), tau, 1.0),
                supcon(x.view(), y.view(), tau, 1.0),
            ] {
                assert!(all_finite(&out), "tau {tau}");
            }
            let z = x.slice(s![..6, ..]).to_owned().into_dyn();
            assert!(all_finite(&nt_xent_views(z.view(), tau, 1.0)));
        }
        let qk = unit(&[E1, E2]);
        let out = info_nce(qk.view(), qk.view(), None, 0.01, true, true, 1.0);
        assert!(close(loss_of(&out), (-100.0f64).exp(), 1e-12, 0.0));
    }

    #[test]
    fn grad_scale_scales_only_the_gradients() {
        let mut rng = Rng(21);
        let e = rng.matrix(5, 3);
        let y = arr1(&[0.0, 1.0, 0.0, 1.0, 2.0]).into_dyn();
        let a = supcon(e.view(), y.view(), 0.3, 1.0);
        let b = supcon(e.view(), y.view(), 0.3, -2.5);
        assert_eq!(loss_of(&a), loss_of(&b));
        for (x, w) in a.grads[0].iter().zip(b.grads[0].iter()) {
            assert!(close(-2.5 * x, *w, 1e-15, 0.0));
        }
    }

    #[test]
    #[should_panic(expected = "temperature")]
    fn zero_temperature_panics() {
        let z = ArrayD::zeros(ndarray::IxDyn(&[2, 3]));
        nt_xent_views(z.view(), 0.0, 1.0);
    }

    #[test]
    #[should_panic(expected = "temperature")]
    fn negative_temperature_panics() {
        let e = ArrayD::zeros(ndarray::IxDyn(&[2, 3]));
        let y = arr1(&[0.0, 0.0]).into_dyn();
        supcon(e.view(), y.view(), -1.0, 1.0);
    }

    #[test]
    #[should_panic(expected = "query and key shapes differ")]
    fn info_nce_shape_mismatch_panics() {
        let q = ArrayD::zeros(ndarray::IxDyn(&[2, 3]));
        let k = ArrayD::zeros(ndarray::IxDyn(&[3, 3]));
        info_nce(q.view(), k.view(), None, 0.1, true, false, 1.0);
    }

    #[test]
    #[should_panic(expected = "negatives must be [M, D]")]
    fn info_nce_negative_width_panics() {
        let q = ArrayD::zeros(ndarray::IxDyn(&[2, 3]));
        let n = ArrayD::zeros(ndarray::IxDyn(&[4, 2]));
        info_nce(q.view(), q.view(), Some(n.view()), 0.1, true, false, 1.0);
    }

    #[test]
    #[should_panic(expected = "[2N, D]")]
    fn odd_views_panic() {
        let z = ArrayD::zeros(ndarray::IxDyn(&[3, 2]));
        nt_xent_views(z.view(), 0.1, 1.0);
    }

    #[test]
    #[should_panic(expected = "labels must be [N]")]
    fn label_length_mismatch_panics() {
        let e = ArrayD::zeros(ndarray::IxDyn(&[3, 2]));
        let y = arr1(&[0.0, 1.0]).into_dyn();
        nt_xent_labels(e.view(), y.view(), 0.1, 1.0);
    }

    #[test]
    #[should_panic(expected = "integers")]
    fn fractional_labels_panic() {
        let e = ArrayD::zeros(ndarray::IxDyn(&[2, 2]));
        let y = arr1(&[0.0, 0.5]).into_dyn();
        supcon(e.view(), y.view(), 0.1, 1.0);
    }
}
