//! F5, metric learning: pair and triplet losses of embeddings `[N, D]`.
//!
//! * [`cosine_embedding`]: torch `cosine_embedding_loss` on row pairs `(x1_i, x2_i)`.
//! * [`contrastive_pairs`]: Hadsell et al. (2006) contrastive loss on row pairs.
//! * [`contrastive_batch`]: pytorch-metric-learning `ContrastiveLoss()` with its defaults, over
//!   every ordered pair of a labelled batch.
//! * [`triplet`]: torch `triplet_margin_loss` on row triplets `(a_i, p_i, n_i)`.
//! * [`triplet_mined`]: triplets mined inside a labelled batch, batch-hard (Hermans et al. 2017)
//!   or semi-hard (FaceNet, TensorFlow Addons `triplet_semihard_loss`).
//!
//! Row-wise losses ([`cosine_embedding`], [`contrastive_pairs`], [`triplet`]) take a
//! [`Reduction`] over the N rows: `None` gives the `[N]` per-row losses and the gradients of
//! their sum, `Sum` the 0-d sum, `Mean` the 0-d mean (0 for N = 0, where torch gives NaN) and
//! the gradients divided by N. The batch losses return a 0-d loss. Every gradient is multiplied
//! by `grad_scale`; `grads` follow the order of the embedding arguments, each `[N, D]`.
//!
//! Kinks. Each hinge follows its anchor's subgradient at exactly 0: torch's `clamp_min` (cosine
//! embedding, triplet) and TensorFlow's `maximum` (mined triplets) pass the gradient when the
//! hinge argument is `≥ 0`; torch's `relu` (pml contrastive) passes it only when `> 0`. A
//! Euclidean distance `‖u − v‖₂` that is exactly 0 has gradient 0 (torch's `norm_backward`
//! and `cdist` backward mask it), and so does `|x|` at `x = 0`.
//!
//! Labels are compared as `f64` with `==`. Shape mismatches and invalid targets or parameters
//! panic.

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayViewD, Ix2, IxDyn};

use crate::numerics::sign;
use crate::{scalar, MultiGrad, Reduction};

/// torch's `EPSILON` in `aten/src/ATen/native/Loss.cpp` (`constexpr float EPSILON = 1e-12`,
/// so the f32 nearest to 1e-12, added to double sums as such).
const COSINE_EPS: f64 = 1e-12_f32 as f64;

/// The `eps` of torch's `F.normalize` as pml's `LpDistance` calls it (the default).
const NORMALIZE_EPS: f64 = 1e-12;

/// A `[N, D]` input as an owned matrix; panics on any other rank.
fn matrix(x: ArrayViewD<'_, f64>, name: &str) -> Array2<f64> {
    assert_eq!(x.ndim(), 2, "{name} must be [N, D], got {:?}", x.shape());
    x.into_dimensionality::<Ix2>()
        .expect("rank checked")
        .to_owned()
}

/// A `[n]` input as a vector; panics on any other shape.
fn column(y: ArrayViewD<'_, f64>, n: usize, name: &str) -> Vec<f64> {
    assert_eq!(y.shape(), &[n], "{name} must be [N] with N = {n}");
    y.iter().copied().collect()
}

/// `‖u − v‖₂` and its gradient w.r.t. `u` (`(u − v)/‖u − v‖`, 0 where the distance is 0); the
/// gradient w.r.t. `v` is its negative.
fn euclidean(u: ArrayView1<'_, f64>, v: ArrayView1<'_, f64>) -> (f64, Array1<f64>) {
    let diff = &u - &v;
    let d = diff.dot(&diff).sqrt();
    if d > 0.0 {
        (d, diff / d)
    } else {
        (d, Array1::zeros(u.len()))
    }
}

/// Per-row losses and the per-row gradients of each input (of the sum of the row losses),
/// reduced as [`Reduction`] says and scaled by `grad_scale` (`/ N` for `Mean`).
fn reduce_rows(
    losses: Vec<f64>,
    grads: Vec<Array2<f64>>,
    reduction: Reduction,
    grad_scale: f64,
) -> MultiGrad {
    let n = losses.len();
    let scale = match reduction {
        Reduction::Mean if n > 0 => grad_scale / n as f64,
        _ => grad_scale,
    };
    let total: f64 = losses.iter().sum();
    let loss = match reduction {
        Reduction::None => ArrayD::from_shape_vec(IxDyn(&[n]), losses).expect("[N] losses"),
        Reduction::Sum => scalar(total),
        Reduction::Mean if n == 0 => scalar(0.0),
        Reduction::Mean => scalar(total / n as f64),
    };
    let grads = grads.into_iter().map(|g| (g * scale).into_dyn()).collect();
    MultiGrad { loss, grads }
}

/// torch `cosine_embedding_loss(x1, x2, y, margin)`, per row i:
///
/// ```text
/// cos  = Σ x1·x2 / sqrt((Σ x1² + EPS)(Σ x2² + EPS))      EPS = torch's EPSILON, f32(1e-12)
/// loss = 1 − cos              if y = 1
///        max(0, cos − margin) if y = −1
/// ```
///
/// `x1`, `x2`: `[N, D]`; `y`: `[N]`, each ±1 (anything else panics; torch would silently give
/// that row 0). Returns `grads = [d/dx1, d/dx2]`, with `∂cos/∂x1 = x2/√(ab) − cos·x1/a`
/// (a = Σ x1² + EPS, b = Σ x2² + EPS) and symmetrically for `x2`. At `cos − margin = 0` the
/// gradient of the `y = −1` branch is passed (torch's `clamp_min` backward is `x ≥ min`). Zero
/// rows are finite: `cos = 0` there (the EPS keeps the denominator positive).
pub fn cosine_embedding(
    x1: ArrayViewD<'_, f64>,
    x2: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    margin: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> MultiGrad {
    let (a, b) = (matrix(x1, "x1"), matrix(x2, "x2"));
    assert_eq!(a.shape(), b.shape(), "x1 and x2 shapes differ");
    let n = a.nrows();
    let y = column(y, n, "y");
    assert!(
        y.iter().all(|&t| t == 1.0 || t == -1.0),
        "cosine_embedding targets must be 1 or -1"
    );
    let (mut g1, mut g2) = (Array2::zeros(a.raw_dim()), Array2::zeros(a.raw_dim()));
    let mut losses = Vec::with_capacity(n);
    for (i, &t) in y.iter().enumerate() {
        let (u, v) = (a.row(i), b.row(i));
        let mag1 = u.dot(&u) + COSINE_EPS;
        let mag2 = v.dot(&v) + COSINE_EPS;
        let denom = (mag1 * mag2).sqrt();
        let cos = u.dot(&v) / denom;
        // loss and dloss/dcos.
        let (loss, w) = if t == 1.0 {
            (1.0 - cos, -1.0)
        } else if cos - margin >= 0.0 {
            (cos - margin, 1.0)
        } else {
            (0.0, 0.0)
        };
        losses.push(loss);
        if w != 0.0 {
            g1.row_mut(i)
                .assign(&((&v / denom - &u * (cos / mag1)) * w));
            g2.row_mut(i)
                .assign(&((&u / denom - &v * (cos / mag2)) * w));
        }
    }
    reduce_rows(losses, vec![g1, g2], reduction, grad_scale)
}

/// Hadsell, Chopra & LeCun (2006) contrastive loss on row pairs, with `y = 1` for a similar
/// pair and `y = 0` for a dissimilar one:
///
/// ```text
/// D    = ‖x1 − x2‖₂
/// loss = ½ [y·D² + (1 − y)·max(0, margin − D)²]
/// ```
///
/// `x1`, `x2`: `[N, D]`; `y`: `[N]`, each 0 or 1 (anything else panics). Returns
/// `grads = [d/dx1, d/dx2]`: `y·(x1 − x2)` for a similar pair and
/// `−max(0, margin − D)·(x1 − x2)/D` for a dissimilar one. Where `D = 0` the dissimilar term
/// (loss ½ margin² for a positive margin) has no gradient; its subgradient 0 is used.
pub fn contrastive_pairs(
    x1: ArrayViewD<'_, f64>,
    x2: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    margin: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> MultiGrad {
    let (a, b) = (matrix(x1, "x1"), matrix(x2, "x2"));
    assert_eq!(a.shape(), b.shape(), "x1 and x2 shapes differ");
    let n = a.nrows();
    let y = column(y, n, "y");
    assert!(
        y.iter().all(|&t| t == 0.0 || t == 1.0),
        "contrastive_pairs targets must be 0 or 1"
    );
    let (mut g1, mut g2) = (Array2::zeros(a.raw_dim()), Array2::zeros(a.raw_dim()));
    let mut losses = Vec::with_capacity(n);
    for (i, &t) in y.iter().enumerate() {
        let diff = &a.row(i) - &b.row(i);
        let d = diff.dot(&diff).sqrt();
        let (loss, g) = if t == 1.0 {
            (0.5 * d * d, diff)
        } else {
            let h = (margin - d).max(0.0);
            let g = if h > 0.0 && d > 0.0 {
                diff * (-h / d)
            } else {
                Array1::zeros(a.ncols())
            };
            (0.5 * h * h, g)
        };
        losses.push(loss);
        g2.row_mut(i).assign(&-&g);
        g1.row_mut(i).assign(&g);
    }
    reduce_rows(losses, vec![g1, g2], reduction, grad_scale)
}

/// pytorch-metric-learning `ContrastiveLoss(pos_margin, neg_margin)` with its defaults
/// (`LpDistance(normalize_embeddings=True, p=2, power=1)`, `AvgNonZeroReducer`, pairs from
/// `get_all_pairs_indices`), as in pml 2.8:
///
/// ```text
/// ê_i   = e_i / max(‖e_i‖₂, 1e-12)                            (torch F.normalize)
/// D_ij  = ‖ê_i − ê_j‖₂
/// pos   = ordered pairs (i, j), i ≠ j, label_i = label_j;  ℓ = relu(D_ij − pos_margin)
/// neg   = ordered pairs (i, j),        label_i ≠ label_j;  ℓ = relu(neg_margin − D_ij)
/// loss  = mean of the pos ℓ > 0 (0 if none) + mean of the neg ℓ > 0 (0 if none)
/// ```
///
/// Both (i, j) and (j, i) are pairs, so every unordered pair counts twice in its group (which
/// the means cancel), and each group has 0 or at least 2 pairs (so pml's early zero return when
/// every index list has at most one entry only fires for N ≤ 1). The current pml applies no power to the pair losses (the `power`
/// argument of pre-1.0 versions is gone). `emb`: `[N, D]`; `labels`: `[N]`. Returns the 0-d
/// loss and `grads = [d/demb]`.
///
/// Gradient: the set of non-zero pair losses (hence the counts) is held fixed, as autograd
/// does; a pair at exactly `ℓ = 0` gets none (relu). `∂D_ij/∂ê_i = (ê_i − ê_j)/D_ij`, and 0
/// where `ê_i = ê_j`. Through the normalisation, `∂ê/∂e = (I − ê êᵀ)/‖e‖` where
/// `‖e‖ ≥ 1e-12` and `I/1e-12` below (torch's `clamp_min` cuts the path through the norm),
/// so a zero row gets a finite but ~1e12-scaled gradient, as in torch.
pub fn contrastive_batch(
    emb: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    pos_margin: f64,
    neg_margin: f64,
    grad_scale: f64,
) -> MultiGrad {
    let x = matrix(emb, "emb");
    let n = x.nrows();
    let labels = column(labels, n, "labels");
    let norms: Vec<f64> = x.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
    let mut e = x.clone();
    for (mut row, &norm) in e.rows_mut().into_iter().zip(&norms) {
        row /= norm.max(NORMALIZE_EPS);
    }
    // (i, j, D_ij, ∂D_ij/∂ê_i) of the pairs with a positive loss, per group.
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut pos_sum, mut neg_sum) = (0.0, 0.0);
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (d, g) = euclidean(e.row(i), e.row(j));
            if labels[i] == labels[j] {
                let l = (d - pos_margin).max(0.0);
                if l > 0.0 {
                    pos_sum += l;
                    pos.push((i, j, g));
                }
            } else {
                let l = (neg_margin - d).max(0.0);
                if l > 0.0 {
                    neg_sum += l;
                    neg.push((i, j, g));
                }
            }
        }
    }
    let mean = |sum: f64, count: usize| if count > 0 { sum / count as f64 } else { 0.0 };
    let loss = mean(pos_sum, pos.len()) + mean(neg_sum, neg.len());
    // Gradient w.r.t. the normalised embeddings: dL/dD = 1/|pos| or −1/|neg|.
    let mut ge = Array2::<f64>::zeros(x.raw_dim());
    for (pairs, w) in [
        (&pos, 1.0 / pos.len().max(1) as f64),
        (&neg, -1.0 / neg.len().max(1) as f64),
    ] {
        for (i, j, g) in pairs {
            let mut gi = ge.row_mut(*i);
            gi.scaled_add(w, g);
            let mut gj = ge.row_mut(*j);
            gj.scaled_add(-w, g);
        }
    }
    // Back through ê = e / max(‖e‖, eps).
    let mut grad = Array2::<f64>::zeros(x.raw_dim());
    for (i, &norm) in norms.iter().enumerate() {
        let (g, u) = (ge.row(i), e.row(i));
        if norm >= NORMALIZE_EPS {
            let along = u.dot(&g);
            grad.row_mut(i)
                .assign(&((&g - &(&u * along)) * (grad_scale / norm)));
        } else {
            grad.row_mut(i).assign(&(&g * (grad_scale / NORMALIZE_EPS)));
        }
    }
    MultiGrad {
        loss: scalar(loss),
        grads: vec![grad.into_dyn()],
    }
}

/// torch `pairwise_distance(u, v, p, eps)` of one row pair, `‖u − v + eps‖_p`, and its
/// gradient w.r.t. `u` (w.r.t. `v` it is the negative), as torch's `norm_backward`:
/// `sign(x)` for p = 1 (sign(0) = 0), `sign(x)|x|^(p−1) / ‖x‖_p^(p−1)` otherwise, 0 where the
/// norm is 0.
fn lp_distance(
    u: ArrayView1<'_, f64>,
    v: ArrayView1<'_, f64>,
    p: f64,
    eps: f64,
) -> (f64, Array1<f64>) {
    let x = (&u - &v) + eps;
    if p == 1.0 {
        (x.iter().map(|t| t.abs()).sum(), x.mapv(sign))
    } else if p == 2.0 {
        let d = x.dot(&x).sqrt();
        let g = if d > 0.0 {
            &x / d
        } else {
            Array1::zeros(x.len())
        };
        (d, g)
    } else {
        let d = x.iter().map(|t| t.abs().powf(p)).sum::<f64>().powf(1.0 / p);
        let g = if d > 0.0 {
            let scale = d.powf(p - 1.0);
            x.mapv(|t| sign(t) * t.abs().powf(p - 1.0) / scale)
        } else {
            Array1::zeros(x.len())
        };
        (d, g)
    }
}

/// torch `triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap)`, per row i:
///
/// ```text
/// d(u, v) = ‖u − v + eps‖_p                 (torch pairwise_distance: eps added to the difference)
/// d_an'   = min(d(a, n), d(p, n)) if swap, else d(a, n)
/// loss    = max(0, margin + d(a, p) − d_an')
/// ```
///
/// All three inputs `[N, D]`; `p` finite and `≥ 1` (else panic). Returns
/// `grads = [d/danchor, d/dpositive, d/dnegative]`. The hinge passes its gradient at exactly 0
/// (torch's `clamp_min` backward is `x ≥ min`); with `swap`, a tie `d(a, n) = d(p, n)` splits
/// the gradient of the minimum evenly between the two distances (torch's `min.other` backward),
/// which happens e.g. whenever anchor and positive coincide. Norm gradients as torch's
/// `norm_backward`: `sign(x)` for p = 1 (sign(0) = 0), `sign(x)|x|^(p−1)/d^(p−1)` else, 0 at
/// `d = 0`.
#[allow(clippy::too_many_arguments)]
pub fn triplet(
    anchor: ArrayViewD<'_, f64>,
    positive: ArrayViewD<'_, f64>,
    negative: ArrayViewD<'_, f64>,
    margin: f64,
    p: f64,
    eps: f64,
    swap: bool,
    reduction: Reduction,
    grad_scale: f64,
) -> MultiGrad {
    let (a, pos, neg) = (
        matrix(anchor, "anchor"),
        matrix(positive, "positive"),
        matrix(negative, "negative"),
    );
    assert_eq!(a.shape(), pos.shape(), "anchor and positive shapes differ");
    assert_eq!(a.shape(), neg.shape(), "anchor and negative shapes differ");
    assert!(
        p.is_finite() && p >= 1.0,
        "triplet needs a finite p >= 1, got {p}"
    );
    let n = a.nrows();
    let mut g = [(); 3].map(|_| Array2::<f64>::zeros(a.raw_dim()));
    let mut losses = Vec::with_capacity(n);
    for i in 0..n {
        let (ai, pi, ni) = (a.row(i), pos.row(i), neg.row(i));
        let (d_ap, g_ap) = lp_distance(ai, pi, p, eps);
        let (d_an, g_an) = lp_distance(ai, ni, p, eps);
        // Weights of d(a, n) and d(p, n) in the negative distance.
        let (d_neg, w_an, w_pn, g_pn) = if swap {
            let (d_pn, g_pn) = lp_distance(pi, ni, p, eps);
            let (w_an, w_pn) = if d_an < d_pn {
                (1.0, 0.0)
            } else if d_an > d_pn {
                (0.0, 1.0)
            } else {
                (0.5, 0.5)
            };
            (d_an.min(d_pn), w_an, w_pn, g_pn)
        } else {
            (d_an, 1.0, 0.0, Array1::zeros(a.ncols()))
        };
        let h = margin + d_ap - d_neg;
        if h >= 0.0 {
            losses.push(h);
            g[0].row_mut(i).assign(&(&g_ap - &(&g_an * w_an)));
            g[1].row_mut(i).assign(&(-&g_ap - &(&g_pn * w_pn)));
            g[2].row_mut(i).assign(&(&g_an * w_an + &g_pn * w_pn));
        } else {
            losses.push(0.0);
        }
    }
    reduce_rows(losses, g.into(), reduction, grad_scale)
}

/// How [`triplet_mined`] picks its triplets inside the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TripletMining {
    /// One triplet per anchor: its farthest positive and its closest negative.
    BatchHard,
    /// One triplet per ordered positive pair: the closest negative farther than the positive,
    /// else the farthest negative.
    SemiHard,
}

/// The pairwise distance matrix of the rows of `e`: `‖e_i − e_j‖₂`, or its square.
fn distance_matrix(e: &Array2<f64>, squared: bool) -> Array2<f64> {
    let n = e.nrows();
    Array2::from_shape_fn((n, n), |(i, j)| {
        let diff = &e.row(i) - &e.row(j);
        let d2 = diff.dot(&diff);
        if squared {
            d2
        } else {
            d2.sqrt()
        }
    })
}

/// The `(anchor, positive, negative)` index triplets [`triplet_mined`] uses, from the distance
/// matrix `d` and the labels.
fn mine_triplets(d: &Array2<f64>, labels: &[f64], mining: TripletMining) -> Vec<[usize; 3]> {
    let n = labels.len();
    let mut triplets = Vec::new();
    for a in 0..n {
        let positives: Vec<usize> = (0..n)
            .filter(|&j| j != a && labels[j] == labels[a])
            .collect();
        let negatives: Vec<usize> = (0..n).filter(|&j| labels[j] != labels[a]).collect();
        if positives.is_empty() || negatives.is_empty() {
            continue;
        }
        // First index of the extreme under `better` (strict, so ties keep the lowest index).
        let pick = |set: &[usize], better: &dyn Fn(f64, f64) -> bool| {
            set.iter()
                .copied()
                .fold(None, |best: Option<usize>, j| match best {
                    Some(b) if !better(d[[a, j]], d[[a, b]]) => Some(b),
                    _ => Some(j),
                })
        };
        match mining {
            TripletMining::BatchHard => {
                let p = pick(&positives, &|x, y| x > y).expect("non-empty");
                let ng = pick(&negatives, &|x, y| x < y).expect("non-empty");
                triplets.push([a, p, ng]);
            }
            TripletMining::SemiHard => {
                for &p in &positives {
                    let farther: Vec<usize> = negatives
                        .iter()
                        .copied()
                        .filter(|&j| d[[a, j]] > d[[a, p]])
                        .collect();
                    let ng = pick(&farther, &|x, y| x < y)
                        .or_else(|| pick(&negatives, &|x, y| x > y))
                        .expect("non-empty");
                    triplets.push([a, p, ng]);
                }
            }
        }
    }
    triplets
}

/// Triplet loss with triplets mined inside a labelled batch. `emb`: `[N, D]`, `labels`: `[N]`;
/// no normalisation. With `d_ij = ‖e_i − e_j‖₂` (`squared`: `‖e_i − e_j‖²`):
///
/// * `BatchHard` (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss"): for each
///   anchor a with at least one positive (same label, ≠ a) and one negative (other label),
///   `p = argmax d_ap` over its positives and `n = argmin d_an` over its negatives; the loss is
///   the mean over those anchors of `max(0, d_ap − d_an + margin)` (0 if there is none).
/// * `SemiHard` (Schroff et al. 2015, FaceNet, as TensorFlow Addons `triplet_semihard_loss`):
///   for each ordered positive pair (a, p), `n` = the negative of smallest `d_an` among those
///   with `d_an > d_ap`, or if there is none the negative of largest `d_an`; the loss is the
///   mean over the positive pairs of `max(0, d_ap − d_an + margin)` (0 if there is none).
///
/// Ties in any argmin / argmax go to the lowest index. Returns the 0-d loss and
/// `grads = [d/demb]`, with the mined triplets held fixed; a hinge at exactly 0 passes its
/// gradient (TF's `maximum` backward is `x ≥ y`), and `∂d_ij/∂e_i = (e_i − e_j)/d_ij` (0 where
/// `d_ij = 0`), or `2(e_i − e_j)` when squared.
///
/// Difference from TF Addons: when every label is the same there are positive pairs but no
/// negative; TFA's masked maximum then falls back to the anchor's own distance 0 and gives
/// `mean(d_ap + margin)`, while here a positive pair without any negative forms no triplet,
/// so the loss is 0 (any batch with two labels gives every anchor a negative, and the two
/// agree). TFA divides by the number of positive pairs even when it is 0 (NaN); here 0.
pub fn triplet_mined(
    emb: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    margin: f64,
    mining: TripletMining,
    squared: bool,
    grad_scale: f64,
) -> MultiGrad {
    let triplets = mined_triplets(emb.view(), labels, mining, squared);
    triplet_fixed(emb, &triplets, margin, squared, grad_scale)
}

/// The `(anchor, positive, negative)` triplets [`triplet_mined`] picks in `emb` (`[N, D]`)
/// with `labels` (`[N]`).
pub fn mined_triplets(
    emb: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    mining: TripletMining,
    squared: bool,
) -> Vec<[usize; 3]> {
    let e = matrix(emb, "emb");
    let labels = column(labels, e.nrows(), "labels");
    mine_triplets(&distance_matrix(&e, squared), &labels, mining)
}

/// [`triplet_mined`]'s loss and gradient with its triplets given (held fixed): what finite
/// differences check, since the mining is constant for the gradient.
pub fn triplet_fixed(
    emb: ArrayViewD<'_, f64>,
    triplets: &[[usize; 3]],
    margin: f64,
    squared: bool,
    grad_scale: f64,
) -> MultiGrad {
    let e = matrix(emb, "emb");
    let d = distance_matrix(&e, squared);
    let mut grad = Array2::<f64>::zeros(e.raw_dim());
    if triplets.is_empty() {
        return MultiGrad {
            loss: scalar(0.0),
            grads: vec![grad.into_dyn()],
        };
    }
    let w = grad_scale / triplets.len() as f64;
    // ∂d_ij/∂e_i (∂/∂e_j is its negative).
    let dd = |i: usize, j: usize| {
        let diff = &e.row(i) - &e.row(j);
        if squared {
            diff * 2.0
        } else if d[[i, j]] > 0.0 {
            diff / d[[i, j]]
        } else {
            Array1::zeros(e.ncols())
        }
    };
    let mut total = 0.0;
    for &[a, p, ng] in triplets {
        let h = d[[a, p]] - d[[a, ng]] + margin;
        if h >= 0.0 {
            total += h;
            let (gp, gn) = (dd(a, p), dd(a, ng));
            grad.row_mut(a).scaled_add(w, &(&gp - &gn));
            grad.row_mut(p).scaled_add(-w, &gp);
            grad.row_mut(ng).scaled_add(w, &gn);
        }
    }
    MultiGrad {
        loss: scalar(total / triplets.len() as f64),
        grads: vec![grad.into_dyn()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Axis};

    /// A tiny deterministic generator (64-bit LCG, Knuth's MMIX constants).
    struct Lcg(u64);

    impl Lcg {
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lo + (hi - lo) * (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn matrix(&mut self, n: usize, d: usize) -> ArrayD<f64> {
            Array2::from_shape_fn((n, d), |_| self.uniform(-1.0, 1.0)).into_dyn()
        }

        fn below(&mut self, k: usize) -> usize {
            ((self.uniform(0.0, 1.0) * k as f64) as usize).min(k - 1)
        }
    }

    fn m(x: &[&[f64]]) -> ArrayD<f64> {
        let rows = x.len();
        let cols = x.first().map_or(0, |r| r.len());
        Array2::from_shape_vec((rows, cols), x.concat())
            .unwrap()
            .into_dyn()
    }

    fn v(x: &[f64]) -> ArrayD<f64> {
        arr1(x).into_dyn()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    fn assert_all_close(got: &ArrayD<f64>, want: &ArrayD<f64>, tol: f64, what: &str) {
        assert_eq!(got.shape(), want.shape(), "{what}: shape");
        for (g, w) in got.iter().zip(want) {
            assert!(close(*g, *w, tol), "{what}: got {got} want {want}");
        }
    }

    /// Sum of the loss entries: the function whose gradient `grads` holds (for `None`).
    fn total(out: &MultiGrad) -> f64 {
        out.loss.iter().sum()
    }

    /// Central finite differences of `total(f(inputs))` against `f(inputs).grads`, with
    /// `h = 1e-6·max(|x|, 1)` and tolerance `1e-6·max|grad| + 1e-5·|fd| + 1e-8`. Returns
    /// whether the gradient was non-zero (so the tests can make sure most cases are active).
    fn check_fd(
        what: &str,
        inputs: &[ArrayD<f64>],
        f: &dyn Fn(&[ArrayD<f64>]) -> MultiGrad,
    ) -> bool {
        let out = f(inputs);
        assert_eq!(
            out.grads.len(),
            inputs.len(),
            "{what}: one gradient per input"
        );
        let gmax = out
            .grads
            .iter()
            .flat_map(|g| g.iter())
            .fold(0.0f64, |acc, x| acc.max(x.abs()));
        for (k, input) in inputs.iter().enumerate() {
            assert_eq!(
                out.grads[k].shape(),
                input.shape(),
                "{what}: grad {k} shape"
            );
            for idx in 0..input.len() {
                let x0 = input.as_slice().unwrap()[idx];
                let h = 1e-6 * x0.abs().max(1.0);
                let at = |x: f64| {
                    let mut moved = inputs.to_vec();
                    moved[k].as_slice_mut().unwrap()[idx] = x;
                    total(&f(&moved))
                };
                let fd = (at(x0 + h) - at(x0 - h)) / (2.0 * h);
                let an = out.grads[k].as_slice().unwrap()[idx];
                assert!(
                    (an - fd).abs() <= 1e-6 * gmax + 1e-5 * fd.abs() + 1e-8,
                    "{what}: input {k} element {idx}: analytic {an} vs FD {fd}\ninputs {inputs:?}"
                );
            }
        }
        gmax > 0.0
    }

    const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

    fn row(x: &ArrayD<f64>, i: usize) -> ArrayView1<'_, f64> {
        x.view()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .index_axis_move(Axis(0), i)
    }

    fn norm(x: ArrayView1<'_, f64>) -> f64 {
        x.dot(&x).sqrt()
    }

    // ---------------------------------------------------------------- cosine_embedding

    #[test]
    fn cosine_embedding_hand_values() {
        let eps = COSINE_EPS;
        // Orthogonal: cos = 0.
        let (x1, x2) = (
            m(&[&[1.0, 0.0], &[1.0, 0.0]]),
            m(&[&[0.0, 1.0], &[0.0, 1.0]]),
        );
        let y = v(&[1.0, -1.0]);
        let out = cosine_embedding(x1.view(), x2.view(), y.view(), 0.0, Reduction::None, 1.0);
        assert_eq!(out.loss.as_slice().unwrap(), &[1.0, 0.0]);
        // Row 0: −∂cos/∂x1 = −x2/(1 + eps); row 1 sits on the hinge (cos − 0 = 0) and, as
        // torch's clamp_min, passes +∂cos/∂x1.
        let s = 1.0 / (1.0 + eps);
        assert_all_close(
            &out.grads[0],
            &m(&[&[0.0, -s], &[0.0, s]]),
            1e-15,
            "orth dx1",
        );
        assert_all_close(
            &out.grads[1],
            &m(&[&[-s, 0.0], &[s, 0.0]]),
            1e-15,
            "orth dx2",
        );

        // Parallel: cos ≈ 1, gradient 0 (x2/√ab − cos·x1/a = (6,8)/50 − (3,4)/25).
        let (x1, x2) = (
            m(&[&[3.0, 4.0], &[3.0, 4.0]]),
            m(&[&[6.0, 8.0], &[6.0, 8.0]]),
        );
        let y = v(&[1.0, -1.0]);
        let out = cosine_embedding(x1.view(), x2.view(), y.view(), 0.5, Reduction::None, 1.0);
        assert!(out.loss[[0]].abs() < 1e-12);
        assert!((out.loss[[1]] - 0.5).abs() < 1e-12);
        assert!(out.grads.iter().all(|g| g.iter().all(|x| x.abs() < 1e-12)));
        // Mean and Sum of the same rows.
        let mean = cosine_embedding(x1.view(), x2.view(), y.view(), 0.5, Reduction::Mean, 2.0);
        let sum = cosine_embedding(x1.view(), x2.view(), y.view(), 0.5, Reduction::Sum, 2.0);
        assert!((mean.loss[[]] - out.loss.sum() / 2.0).abs() < 1e-15);
        assert!((sum.loss[[]] - out.loss.sum()).abs() < 1e-15);

        // Antiparallel, y = −1, margin −0.5: cos − margin = −0.5 < 0, no loss, no gradient.
        let (x1, x2) = (m(&[&[1.0, 2.0]]), m(&[&[-2.0, -4.0]]));
        let out = cosine_embedding(
            x1.view(),
            x2.view(),
            v(&[-1.0]).view(),
            -0.5,
            Reduction::Sum,
            1.0,
        );
        assert_eq!(out.loss[[]], 0.0);
        assert!(out.grads.iter().all(|g| g.iter().all(|&x| x == 0.0)));

        // A zero row: cos = 0 exactly, gradient x2/√(eps (1 + eps)), finite.
        let (x1, x2) = (m(&[&[0.0, 0.0]]), m(&[&[1.0, 0.0]]));
        let out = cosine_embedding(
            x1.view(),
            x2.view(),
            v(&[1.0]).view(),
            0.0,
            Reduction::Mean,
            1.0,
        );
        assert_eq!(out.loss[[]], 1.0);
        let g = -1.0 / (eps * (1.0 + eps)).sqrt();
        assert!((out.grads[0][[0, 0]] - g).abs() < 1e-9 * g.abs());
        assert_eq!(out.grads[1][[0, 0]], 0.0);
        assert!(out.grads.iter().all(|g| g.iter().all(|x| x.is_finite())));

        // Empty batch.
        let z = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let out = cosine_embedding(z.view(), z.view(), v(&[]).view(), 0.0, Reduction::Mean, 1.0);
        assert_eq!(out.loss[[]], 0.0);
        assert_eq!(out.grads[0].shape(), &[0, 3]);
    }

    #[test]
    #[should_panic(expected = "1 or -1")]
    fn cosine_embedding_rejects_other_targets() {
        let x = m(&[&[1.0, 0.0]]);
        cosine_embedding(
            x.view(),
            x.view(),
            v(&[0.0]).view(),
            0.0,
            Reduction::Mean,
            1.0,
        );
    }

    #[test]
    fn cosine_embedding_grads_match_finite_differences() {
        let mut rng = Lcg(1);
        let (mut checked, mut active) = (0, 0);
        for (s, &margin) in [-0.3, 0.0, 0.5].iter().enumerate() {
            for (r, &reduction) in REDUCTIONS.iter().enumerate() {
                for &dim in &[1usize, 3, 5] {
                    let (n, scale) = (5, [1.0, 0.3, 2.0][(s + r) % 3]);
                    let (x1, x2, y) = loop {
                        let (x1, x2) = (rng.matrix(n, dim) * scale, rng.matrix(n, dim));
                        let y = v(&(0..n)
                            .map(|_| {
                                if rng.uniform(0.0, 1.0) < 0.5 {
                                    1.0
                                } else {
                                    -1.0
                                }
                            })
                            .collect::<Vec<_>>());
                        let ok = (0..n).all(|i| {
                            let (u, w) = (row(&x1, i), row(&x2, i));
                            let cos = u.dot(&w) / (norm(u) * norm(w));
                            norm(u) > 0.1 && norm(w) > 0.1 && (cos - margin).abs() > 1e-3
                        });
                        if ok {
                            break (x1, x2, y);
                        }
                    };
                    let f = |inp: &[ArrayD<f64>]| {
                        cosine_embedding(
                            inp[0].view(),
                            inp[1].view(),
                            y.view(),
                            margin,
                            reduction,
                            1.0,
                        )
                    };
                    let what = format!("cosine m={margin} {reduction:?} D={dim}");
                    active += usize::from(check_fd(&what, &[x1, x2], &f));
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 27);
        assert!(active >= 24, "only {active} of 27 cases had a gradient");
    }

    // ---------------------------------------------------------------- contrastive_pairs

    #[test]
    fn contrastive_pairs_hand_values() {
        // D = 5 on every row.
        let x1 = m(&[&[0.0, 0.0], &[0.0, 0.0], &[0.0, 0.0]]);
        let x2 = m(&[&[3.0, 4.0], &[3.0, 4.0], &[3.0, 4.0]]);
        let out = contrastive_pairs(
            x1.view(),
            x2.view(),
            v(&[1.0, 0.0, 0.0]).view(),
            7.0,
            Reduction::None,
            1.0,
        );
        // ½·25, ½·(7 − 5)², the third row is the same as the second.
        assert_all_close(&out.loss, &v(&[12.5, 2.0, 2.0]), 1e-15, "loss");
        // Similar: x1 − x2; dissimilar: −(m − D)(x1 − x2)/D = −2·(−3, −4)/5.
        let want = m(&[&[-3.0, -4.0], &[1.2, 1.6], &[1.2, 1.6]]);
        assert_all_close(&out.grads[0], &want, 1e-15, "dx1");
        assert_all_close(&out.grads[1], &-&want, 1e-15, "dx2");
        // Margin 4 < D: the dissimilar rows are 0; Mean with grad_scale 3 divides by 3, times 3.
        let out = contrastive_pairs(
            x1.view(),
            x2.view(),
            v(&[1.0, 0.0, 0.0]).view(),
            4.0,
            Reduction::Mean,
            3.0,
        );
        assert!((out.loss[[]] - 12.5 / 3.0).abs() < 1e-14);
        assert_all_close(
            &out.grads[0],
            &m(&[&[-3.0, -4.0], &[0.0, 0.0], &[0.0, 0.0]]),
            1e-15,
            "dx1 mean",
        );

        // D = 0: a similar pair costs 0, a dissimilar one ½m² with the subgradient 0.
        let z = m(&[&[1.0, 2.0], &[1.0, 2.0]]);
        let out = contrastive_pairs(
            z.view(),
            z.view(),
            v(&[1.0, 0.0]).view(),
            1.5,
            Reduction::None,
            1.0,
        );
        assert_eq!(out.loss.as_slice().unwrap(), &[0.0, 1.125]);
        assert!(out.grads.iter().all(|g| g.iter().all(|&x| x == 0.0)));
    }

    #[test]
    #[should_panic(expected = "0 or 1")]
    fn contrastive_pairs_rejects_other_targets() {
        let x = m(&[&[1.0, 0.0]]);
        contrastive_pairs(
            x.view(),
            x.view(),
            v(&[-1.0]).view(),
            1.0,
            Reduction::Mean,
            1.0,
        );
    }

    #[test]
    fn contrastive_pairs_grads_match_finite_differences() {
        let mut rng = Lcg(2);
        let mut active = 0;
        for &margin in &[0.5, 1.0, 2.0] {
            for &reduction in &REDUCTIONS {
                let n = 6;
                let (x1, x2, y) = loop {
                    let (x1, x2) = (rng.matrix(n, 3), rng.matrix(n, 3));
                    let y: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
                    let ok = (0..n).all(|i| {
                        let d = norm((&row(&x1, i) - &row(&x2, i)).view());
                        d > 1e-3 && (margin - d).abs() > 1e-3
                    });
                    if ok {
                        break (x1, x2, v(&y));
                    }
                };
                let f = |inp: &[ArrayD<f64>]| {
                    contrastive_pairs(
                        inp[0].view(),
                        inp[1].view(),
                        y.view(),
                        margin,
                        reduction,
                        1.0,
                    )
                };
                let what = format!("contrastive_pairs m={margin} {reduction:?}");
                active += usize::from(check_fd(&what, &[x1, x2], &f));
            }
        }
        assert_eq!(active, 9);
    }

    // ---------------------------------------------------------------- triplet

    #[test]
    fn triplet_hand_values() {
        // 3-4-5 triangle: d(a, p) = 3, d(a, n) = 4, d(p, n) = 5; margin 2 → 1.
        let (a, p, n) = (m(&[&[0.0, 0.0]]), m(&[&[3.0, 0.0]]), m(&[&[0.0, 4.0]]));
        for swap in [false, true] {
            let out = triplet(
                a.view(),
                p.view(),
                n.view(),
                2.0,
                2.0,
                0.0,
                swap,
                Reduction::Mean,
                1.0,
            );
            assert!((out.loss[[]] - 1.0).abs() < 1e-15);
            // ∂/∂a = (a − p)/3 − (a − n)/4, ∂/∂p = −(a − p)/3, ∂/∂n = (a − n)/4.
            assert_all_close(&out.grads[0], &m(&[&[-1.0, 1.0]]), 1e-15, "da");
            assert_all_close(&out.grads[1], &m(&[&[1.0, 0.0]]), 1e-15, "dp");
            assert_all_close(&out.grads[2], &m(&[&[0.0, -1.0]]), 1e-15, "dn");
        }
        // The swap matters: n = (3, 4) is 5 from a but 4 from p.
        let n2 = m(&[&[3.0, 4.0]]);
        let plain = triplet(
            a.view(),
            p.view(),
            n2.view(),
            2.0,
            2.0,
            0.0,
            false,
            Reduction::Sum,
            1.0,
        );
        assert_eq!(plain.loss[[]], 0.0);
        let swapped = triplet(
            a.view(),
            p.view(),
            n2.view(),
            2.0,
            2.0,
            0.0,
            true,
            Reduction::Sum,
            1.0,
        );
        assert!((swapped.loss[[]] - 1.0).abs() < 1e-15);
        // d = d(a, p) − d(p, n): ∂/∂a = (a − p)/3, ∂/∂p = −(a − p)/3 − (p − n)/4, ∂/∂n = (p − n)/4.
        assert_all_close(&swapped.grads[0], &m(&[&[-1.0, 0.0]]), 1e-15, "swap da");
        assert_all_close(&swapped.grads[1], &m(&[&[1.0, 1.0]]), 1e-15, "swap dp");
        assert_all_close(&swapped.grads[2], &m(&[&[0.0, -1.0]]), 1e-15, "swap dn");

        // p = 1: d(a, p) = 1 + 2 = 3, d(a, n) = 3 + 4 = 7; margin 5 → 1; gradients are signs.
        let (p1, n1) = (m(&[&[1.0, 2.0]]), m(&[&[3.0, 4.0]]));
        let out = triplet(
            a.view(),
            p1.view(),
            n1.view(),
            5.0,
            1.0,
            0.0,
            false,
            Reduction::None,
            1.0,
        );
        assert_eq!(out.loss.as_slice().unwrap(), &[1.0]);
        assert_all_close(&out.grads[0], &m(&[&[0.0, 0.0]]), 0.0, "l1 da");
        assert_all_close(&out.grads[1], &m(&[&[1.0, 1.0]]), 0.0, "l1 dp");
        assert_all_close(&out.grads[2], &m(&[&[-1.0, -1.0]]), 0.0, "l1 dn");

        // eps is added to the difference: a = p gives d(a, p) = ‖(eps, eps)‖ = eps·√2 (p = 2)
        // and 2·eps (p = 1).
        let eps = 1e-6;
        let out2 = triplet(
            a.view(),
            a.view(),
            n.view(),
            10.0,
            2.0,
            eps,
            false,
            Reduction::Sum,
            1.0,
        );
        let d_an = ((0.0 + eps).powi(2) + (-4.0 + eps).powi(2)).sqrt();
        assert!((out2.loss[[]] - (10.0 + eps * 2f64.sqrt() - d_an)).abs() < 1e-14);
        let out1 = triplet(
            a.view(),
            a.view(),
            n.view(),
            10.0,
            1.0,
            eps,
            false,
            Reduction::Sum,
            1.0,
        );
        assert!((out1.loss[[]] - (10.0 + 2.0 * eps - (eps + 4.0 - eps))).abs() < 1e-14);

        // Swap tie (a = p, eps = 0): d(a, n) = d(p, n) = 5, the gradient of the min is split.
        let (z, n3) = (m(&[&[0.0, 0.0]]), m(&[&[3.0, 4.0]]));
        let out = triplet(
            z.view(),
            z.view(),
            n3.view(),
            10.0,
            2.0,
            0.0,
            true,
            Reduction::Sum,
            1.0,
        );
        assert_eq!(out.loss[[]], 5.0);
        assert_all_close(&out.grads[0], &m(&[&[0.3, 0.4]]), 1e-15, "tie da");
        assert_all_close(&out.grads[1], &m(&[&[0.3, 0.4]]), 1e-15, "tie dp");
        assert_all_close(&out.grads[2], &m(&[&[-0.6, -0.8]]), 1e-15, "tie dn");

        // All-zero rows with eps = 0: every distance 0, loss = margin, zero gradient, finite.
        let out = triplet(
            z.view(),
            z.view(),
            z.view(),
            0.3,
            1.5,
            0.0,
            true,
            Reduction::Mean,
            1.0,
        );
        assert_eq!(out.loss[[]], 0.3);
        assert!(out.grads.iter().all(|g| g.iter().all(|&x| x == 0.0)));
    }

    #[test]
    #[should_panic(expected = "p >= 1")]
    fn triplet_rejects_p_below_one() {
        let x = m(&[&[1.0, 0.0]]);
        triplet(
            x.view(),
            x.view(),
            x.view(),
            1.0,
            0.5,
            0.0,
            false,
            Reduction::Mean,
            1.0,
        );
    }

    #[test]
    fn triplet_grads_match_finite_differences() {
        let mut rng = Lcg(3);
        let (mut case, mut active) = (0, 0);
        for &p in &[1.0, 1.5, 2.0, 3.0] {
            for &eps in &[0.0, 1e-6, 0.1] {
                for swap in [false, true] {
                    for &margin in &[0.2, 1.0] {
                        let reduction = REDUCTIONS[case % 3];
                        case += 1;
                        let n = 4;
                        let dist = |u: ArrayView1<'_, f64>, w: ArrayView1<'_, f64>| {
                            lp_distance(u, w, p, eps)
                        };
                        let (a, pos, neg) = loop {
                            let (a, pos, neg) =
                                (rng.matrix(n, 3), rng.matrix(n, 3), rng.matrix(n, 3));
                            let ok = (0..n).all(|i| {
                                let (ai, pi, ni) = (row(&a, i), row(&pos, i), row(&neg, i));
                                let (d_ap, d_an, d_pn) =
                                    (dist(ai, pi).0, dist(ai, ni).0, dist(pi, ni).0);
                                let d_neg = if swap { d_an.min(d_pn) } else { d_an };
                                // Away from the hinge, the swap's tie and |x| = 0.
                                let coords_ok = [(ai, pi), (ai, ni), (pi, ni)]
                                    .iter()
                                    .all(|(u, w)| (u - w).iter().all(|x| (x + eps).abs() > 1e-3));
                                (margin + d_ap - d_neg).abs() > 1e-3
                                    && (!swap || (d_an - d_pn).abs() > 1e-3)
                                    && coords_ok
                            });
                            if ok {
                                break (a, pos, neg);
                            }
                        };
                        let f = |inp: &[ArrayD<f64>]| {
                            triplet(
                                inp[0].view(),
                                inp[1].view(),
                                inp[2].view(),
                                margin,
                                p,
                                eps,
                                swap,
                                reduction,
                                1.0,
                            )
                        };
                        let what =
                            format!("triplet p={p} eps={eps} swap={swap} m={margin} {reduction:?}");
                        active += usize::from(check_fd(&what, &[a, pos, neg], &f));
                    }
                }
            }
        }
        assert!(active >= 40, "only {active} of {case} cases had a gradient");
    }

    #[test]
    fn grad_scale_multiplies_every_gradient() {
        let mut rng = Lcg(4);
        let (a, p, n) = (rng.matrix(3, 4), rng.matrix(3, 4), rng.matrix(3, 4));
        let one = triplet(
            a.view(),
            p.view(),
            n.view(),
            1.0,
            2.0,
            1e-6,
            true,
            Reduction::Mean,
            1.0,
        );
        let two = triplet(
            a.view(),
            p.view(),
            n.view(),
            1.0,
            2.0,
            1e-6,
            true,
            Reduction::Mean,
            2.5,
        );
        assert_eq!(one.loss, two.loss);
        for (g1, g2) in one.grads.iter().zip(&two.grads) {
            assert_all_close(&(g1 * 2.5), g2, 1e-15, "triplet grad_scale");
        }
        let labels = v(&[0.0, 0.0, 1.0]);
        let one = contrastive_batch(a.view(), labels.view(), 0.0, 1.5, 1.0);
        let two = contrastive_batch(a.view(), labels.view(), 0.0, 1.5, -0.5);
        assert_all_close(
            &(&one.grads[0] * -0.5),
            &two.grads[0],
            1e-15,
            "contrastive grad_scale",
        );
    }

    // ---------------------------------------------------------------- contrastive_batch

    #[test]
    fn contrastive_batch_hand_values() {
        // Normalised: (1, 0), (0, 1) in class 0 and (−1, 0), (0, −1) in class 1; neighbours on
        // the circle are √2 apart, opposite points 2.
        let emb = m(&[&[2.0, 0.0], &[0.0, 3.0], &[-1.0, 0.0], &[0.0, -0.5]]);
        let labels = v(&[0.0, 0.0, 1.0, 1.0]);
        let r2 = 2f64.sqrt();
        // pml defaults (0, 1): every positive pair costs √2, no negative is closer than 1.
        let out = contrastive_batch(emb.view(), labels.view(), 0.0, 1.0, 1.0);
        assert!((out.loss[[]] - r2).abs() < 1e-15);
        // neg_margin 1.5: the 4 ordered neighbour negatives cost 1.5 − √2, the opposite 0;
        // the sum of the two means is 1.5.
        let out = contrastive_batch(emb.view(), labels.view(), 0.0, 1.5, 1.0);
        assert!((out.loss[[]] - 1.5).abs() < 1e-15);
        // pos_margin 0.5: √2 − 0.5 + 1.5 − √2.
        let out = contrastive_batch(emb.view(), labels.view(), 0.5, 1.5, 1.0);
        assert!((out.loss[[]] - 1.0).abs() < 1e-15);
        // Scale invariance: the gradient is orthogonal to each embedding.
        for i in 0..4 {
            let g = row(&out.grads[0], i);
            assert!(g.dot(&row(&emb, i)).abs() < 1e-14, "row {i}: {g}");
        }
        // By hand for row 0 (e = (2, 0), ê = (1, 0)): positive (0, 1) pulls with
        // (ê0 − ê1)/√2 /4 per ordered pair, twice; negatives (0, 3) with −(ê0 − ê3)/√2 /4,
        // twice; pairs with ê2 cost 0. Sum: ((1, −1) − (1, 1))/(2√2) = (0, −1/√2), then
        // projected off ê0 and divided by ‖e0‖ = 2.
        assert!((out.grads[0][[0, 0]]).abs() < 1e-15);
        assert!((out.grads[0][[0, 1]] + 1.0 / (2.0 * r2)).abs() < 1e-15);

        // All the same label: only positives, the mean of the positive distances.
        let same = v(&[3.0, 3.0, 3.0, 3.0]);
        let out = contrastive_batch(emb.view(), same.view(), 0.0, 1.0, 1.0);
        assert!((out.loss[[]] - (8.0 * r2 + 4.0 * 2.0) / 12.0).abs() < 1e-15);
        // All labels distinct: only negatives; with neg_margin 1 none is active.
        let distinct = v(&[0.0, 1.0, 2.0, 3.0]);
        let out = contrastive_batch(emb.view(), distinct.view(), 0.0, 1.0, 1.0);
        assert_eq!(out.loss[[]], 0.0);
        assert!(out.grads[0].iter().all(|&x| x == 0.0));
        // A single embedding: no pair at all.
        let one = m(&[&[1.0, 2.0]]);
        let out = contrastive_batch(one.view(), v(&[0.0]).view(), 0.0, 1.0, 1.0);
        assert_eq!(out.loss[[]], 0.0);
        assert!(out.grads[0].iter().all(|&x| x == 0.0));

        // A zero row normalises to 0: 1 away from every unit vector, finite everything.
        let emb = m(&[&[0.0, 0.0], &[1.0, 0.0], &[0.0, 2.0]]);
        let out = contrastive_batch(emb.view(), v(&[0.0, 1.0, 1.0]).view(), 0.0, 1.5, 1.0);
        // Negatives (0, 1), (0, 2) and reversed cost 0.5 each; positive (1, 2) √2 each way.
        assert!((out.loss[[]] - (0.5 + r2)).abs() < 1e-15);
        assert!(out.grads[0].iter().all(|x| x.is_finite()));
        // Coincident normalised embeddings: D = 0, gradient 0 from that pair.
        let emb = m(&[&[1.0, 1.0], &[2.0, 2.0]]);
        let out = contrastive_batch(emb.view(), v(&[0.0, 1.0]).view(), 0.0, 1.0, 1.0);
        assert_eq!(out.loss[[]], 1.0);
        assert!(out.grads[0].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn contrastive_batch_grads_match_finite_differences() {
        let mut rng = Lcg(5);
        let mut active = 0;
        for &(pos_margin, neg_margin) in &[(0.0, 1.0), (0.3, 1.2), (0.1, 0.8), (0.5, 1.6)] {
            for &classes in &[2usize, 3] {
                let n = 6;
                let (emb, labels) = loop {
                    let emb = rng.matrix(n, 3);
                    let labels: Vec<f64> = (0..n).map(|_| rng.below(classes) as f64).collect();
                    let e: Vec<Array1<f64>> = (0..n)
                        .map(|i| row(&emb, i).to_owned() / norm(row(&emb, i)))
                        .collect();
                    let ok = (0..n).all(|i| norm(row(&emb, i)) > 0.3)
                        && (0..n).all(|i| {
                            (0..n).filter(|&j| j != i).all(|j| {
                                let d = norm((&e[i] - &e[j]).view());
                                let hinge = if labels[i] == labels[j] {
                                    d - pos_margin
                                } else {
                                    neg_margin - d
                                };
                                hinge.abs() > 1e-3 && d > 1e-3
                            })
                        });
                    if ok {
                        break (emb, v(&labels));
                    }
                };
                let f = |inp: &[ArrayD<f64>]| {
                    contrastive_batch(inp[0].view(), labels.view(), pos_margin, neg_margin, 1.0)
                };
                let what = format!("contrastive_batch ({pos_margin}, {neg_margin}) C={classes}");
                active += usize::from(check_fd(&what, &[emb], &f));
            }
        }
        assert_eq!(active, 8);
    }

    // ---------------------------------------------------------------- triplet_mined

    fn line(points: &[f64]) -> ArrayD<f64> {
        Array2::from_shape_fn((points.len(), 1), |(i, _)| points[i]).into_dyn()
    }

    #[test]
    fn batch_hard_on_a_line() {
        // Points 0, 1 (class 0) and 3, 7 (class 1); margin 1.5.
        // a0: p1 (1), n2 (3) → −0.5 → 0.     a1: p0 (1), n2 (2) → 0.5.
        // a2: p3 (4), n1 (2) → 3.5.           a3: p2 (4), n1 (6) → −0.5 → 0.
        let (emb, labels) = (line(&[0.0, 1.0, 3.0, 7.0]), v(&[0.0, 0.0, 1.0, 1.0]));
        let out = triplet_mined(
            emb.view(),
            labels.view(),
            1.5,
            TripletMining::BatchHard,
            false,
            1.0,
        );
        assert_eq!(out.loss[[]], 1.0);
        // a1: |e1 − e0| − |e1 − e2| → (−1, 2, −1, 0); a2: |e2 − e3| − |e2 − e1| → (0, 1, −2, 1).
        assert_all_close(
            &out.grads[0],
            &line(&[-0.25, 0.75, -0.75, 0.25]),
            0.0,
            "batch hard",
        );
        // Squared: a0: 1 − 9 + 1.5 < 0; a1: 1 − 4 + 1.5 < 0; a2: 16 − 4 + 1.5 = 13.5;
        // a3: 16 − 36 + 1.5 < 0.
        let out = triplet_mined(
            emb.view(),
            labels.view(),
            1.5,
            TripletMining::BatchHard,
            true,
            1.0,
        );
        assert_eq!(out.loss[[]], 13.5 / 4.0);
        // ∂/∂e2 of (e2 − e3)² − (e2 − e1)² = 2(3 − 7) − 2(3 − 1) = −12, e3: 8, e1: 4.
        assert_all_close(
            &out.grads[0],
            &line(&[0.0, 1.0, -3.0, 2.0]),
            0.0,
            "batch hard sq",
        );

        // Ties go to the lowest index: anchor 0 with positives at ±2 and negatives at ±5.
        let emb = line(&[0.0, 2.0, -2.0, 5.0, -5.0]);
        let d = distance_matrix(&matrix(emb.view(), "emb"), false);
        let t = mine_triplets(&d, &[0.0, 0.0, 0.0, 1.0, 1.0], TripletMining::BatchHard);
        assert_eq!(t[0], [0, 1, 3]);

        // A singleton class: its anchor has no positive and is skipped. Anchors 0, 1 only:
        // a0: p1 (1), n2 (3): 1 − 3 + 2.5 = 0.5; a1: p0 (1), n2 (2): 1.5. Mean 1.
        let (emb, labels) = (line(&[0.0, 1.0, 3.0]), v(&[0.0, 0.0, 1.0]));
        let out = triplet_mined(
            emb.view(),
            labels.view(),
            2.5,
            TripletMining::BatchHard,
            false,
            1.0,
        );
        assert_eq!(out.loss[[]], 1.0);
    }

    #[test]
    fn semi_hard_on_a_line() {
        // Points 0, 1 (class 0) and 3, 7 (class 1); margin 3.
        // (0, 1): d 1, negatives 3, 7 → 3: 1.      (1, 0): d 1, negatives 2, 6 → 2: 2.
        // (2, 3): d 4, negatives 3, 2, none > 4 → the largest, 3 (e0): 4.
        // (3, 2): d 4, negatives 7, 6 → 6 (e1): 1.     Mean 2.
        let (emb, labels) = (line(&[0.0, 1.0, 3.0, 7.0]), v(&[0.0, 0.0, 1.0, 1.0]));
        let out = triplet_mined(
            emb.view(),
            labels.view(),
            3.0,
            TripletMining::SemiHard,
            false,
            1.0,
        );
        assert_eq!(out.loss[[]], 2.0);
        let d = distance_matrix(&matrix(emb.view(), "emb"), false);
        let t = mine_triplets(&d, &[0.0, 0.0, 1.0, 1.0], TripletMining::SemiHard);
        assert_eq!(t, vec![[0, 1, 2], [1, 0, 2], [2, 3, 0], [3, 2, 1]]);

        // Fallback everywhere it matters: 0, 5 (class 0) and 1, 2.2 (class 1); margin 0.5.
        // (0, 1): d 5, negatives 1, 2.2 → largest 2.2: 3.3.  (1, 0): d 5, negatives 4, 2.8 →
        // largest 4: 1.5.  (2, 3): d 1.2 → 4: < 0.  (3, 2): d 1.2 → 2.2: < 0.  Mean 1.2.
        let (emb, labels) = (line(&[0.0, 5.0, 1.0, 2.2]), v(&[0.0, 0.0, 1.0, 1.0]));
        let out = triplet_mined(
            emb.view(),
            labels.view(),
            0.5,
            TripletMining::SemiHard,
            false,
            1.0,
        );
        assert!((out.loss[[]] - 1.2).abs() < 1e-15);
        // (0, 1, 3): |e0 − e1| − |e0 − e3| → (0, 1, 0, −1); (1, 0, 2): → (−1, 0, 1, 0).
        assert_all_close(
            &out.grads[0],
            &line(&[-0.25, 0.25, 0.25, -0.25]),
            1e-15,
            "semi hard",
        );
    }

    #[test]
    fn mined_degenerate_batches() {
        let mut rng = Lcg(6);
        let emb = rng.matrix(5, 3);
        for mining in [TripletMining::BatchHard, TripletMining::SemiHard] {
            for squared in [false, true] {
                // All one label (no negative), all distinct (no positive), empty batch.
                for labels in [v(&[2.0; 5]), v(&[0.0, 1.0, 2.0, 3.0, 4.0])] {
                    let out = triplet_mined(emb.view(), labels.view(), 1.0, mining, squared, 1.0);
                    assert_eq!(out.loss[[]], 0.0);
                    assert!(out.grads[0].iter().all(|&x| x == 0.0));
                }
                let z = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
                let out = triplet_mined(z.view(), v(&[]).view(), 1.0, mining, squared, 1.0);
                assert_eq!(out.loss[[]], 0.0);
                assert_eq!(out.grads[0].shape(), &[0, 3]);
                // Coincident points (d = 0) and zero vectors stay finite.
                let emb = m(&[&[0.0, 0.0], &[0.0, 0.0], &[0.0, 0.0], &[1.0, 1.0]]);
                let out = triplet_mined(
                    emb.view(),
                    v(&[0.0, 0.0, 1.0, 1.0]).view(),
                    1.0,
                    mining,
                    squared,
                    1.0,
                );
                assert!(out.loss[[]].is_finite() && out.grads[0].iter().all(|x| x.is_finite()));
                assert!(out.loss[[]] > 0.0);
            }
        }
    }

    #[test]
    fn mined_grads_match_finite_differences() {
        let mut rng = Lcg(7);
        let mut active = 0;
        for mining in [TripletMining::BatchHard, TripletMining::SemiHard] {
            for squared in [false, true] {
                for &margin in &[0.2, 1.0] {
                    let n = 8;
                    let (emb, labels) = loop {
                        let emb = rng.matrix(n, 3);
                        let labels: Vec<f64> = (0..n).map(|_| rng.below(3) as f64).collect();
                        let d = distance_matrix(&matrix(emb.view(), "emb"), squared);
                        // Every anchor's distances pairwise apart (no mining tie, no d_an at
                        // d_ap) and no zero distance; every mined hinge away from 0.
                        let spread = (0..n).all(|a| {
                            let mut ds: Vec<f64> =
                                (0..n).filter(|&j| j != a).map(|j| d[[a, j]]).collect();
                            ds.sort_by(f64::total_cmp);
                            ds[0] > 1e-3 && ds.windows(2).all(|w| w[1] - w[0] > 1e-3)
                        });
                        let triplets = mine_triplets(&d, &labels, mining);
                        let hinges_ok = triplets
                            .iter()
                            .all(|&[a, p, ng]| (d[[a, p]] - d[[a, ng]] + margin).abs() > 1e-3);
                        if spread && hinges_ok && !triplets.is_empty() {
                            break (emb, v(&labels));
                        }
                    };
                    let f = |inp: &[ArrayD<f64>]| {
                        triplet_mined(inp[0].view(), labels.view(), margin, mining, squared, 1.0)
                    };
                    let what = format!("{mining:?} squared={squared} m={margin}");
                    active += usize::from(check_fd(&what, &[emb], &f));
                }
            }
        }
        assert!(active >= 7, "only {active} of 8 cases had a gradient");
    }
}
