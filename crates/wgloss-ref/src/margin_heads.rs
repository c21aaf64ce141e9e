//! Metric learning (F5), margin-softmax heads: sphereface, cosface, arcface, adaface.
//!
//! Every head is a softmax cross-entropy over C class logits built from cosines:
//!
//! ```text
//! ê_i    = x_i / max(‖x_i‖₂, 1e-12)          (torch F.normalize, as pml's CosineSimilarity)
//! ŵ_c    = w_c / max(‖w_c‖₂, 1e-12)
//! cos_ic = ê_i · ŵ_c
//! z_ic   = head(cos_ic)                      (a margin on the target c = y_i only)
//! loss   = (1/N) Σ_i [ logsumexp_c z_ic − z_{i,y_i} ]   (0 when N = 0)
//! ```
//!
//! Inputs: `emb` `[N, D]` raw embeddings, `weight` `[C, D]` one row per class (the transpose
//! of pml's `W` `[D, C]` and of AdaFace's `kernel`; insightface's partial-FC `weight` is
//! already `[C, D]`), `labels` `[N]` integer class ids stored as f64, each in `[0, C)`.
//!
//! Output: [`MultiGrad`] with the 0-d mean loss and `grads = [dL/demb, dL/dweight]`, each of
//! its input's shape, multiplied by `grad_scale`. The gradient goes through the
//! normalisation exactly: with `g = dL/dê`, `dL/dx = (g − (g·ê) ê)/‖x‖` when
//! `‖x‖ ≥ 1e-12`, and `g / 1e-12` below (the clamped denominator is constant there, as in
//! torch; a zero embedding therefore gets a gradient of order 1e12, finite).
//!
//! Clamps follow torch: `clamp`/`clip` pass the gradient where the input lies inside the
//! closed range and give 0 outside. Labels that are not integers in `[0, C)`, shape
//! mismatches and non-finite hyper-parameters panic.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::{scalar, MultiGrad};

/// torch `F.normalize`'s default `eps`.
const NORM_EPS: f64 = 1e-12;

/// AdaFace's `self.eps` (head.py): the cosine clamp, the angle clip and the std offset.
const ADAFACE_EPS: f64 = 1e-3;

/// One row's logits and their partial derivatives.
struct RowLogits {
    /// `z_ic` for every class.
    z: Vec<f64>,
    /// `∂z_ic/∂cos_ic`.
    dz_dcos: Vec<f64>,
    /// `∂z_ic/∂‖x_i‖` through the raw embedding norm (sphereface only; 0 elsewhere).
    dz_dnorm: Vec<f64>,
}

impl RowLogits {
    fn new(classes: usize) -> Self {
        Self {
            z: vec![0.0; classes],
            dz_dcos: vec![0.0; classes],
            dz_dnorm: vec![0.0; classes],
        }
    }
}

/// Rows of a 2-D array, row-major.
fn rows(a: &ArrayViewD<'_, f64>) -> Vec<Vec<f64>> {
    let d = a.shape()[1];
    let flat: Vec<f64> = a.iter().copied().collect();
    if d == 0 {
        return vec![Vec::new(); a.shape()[0]];
    }
    flat.chunks(d).map(<[f64]>::to_vec).collect()
}

/// Checks the shapes and labels; returns the embedding rows, weight rows and labels.
fn check_inputs(
    emb: &ArrayViewD<'_, f64>,
    weight: &ArrayViewD<'_, f64>,
    labels: &ArrayViewD<'_, f64>,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<usize>) {
    assert_eq!(emb.ndim(), 2, "emb must be [N, D]");
    assert_eq!(weight.ndim(), 2, "weight must be [C, D]");
    assert_eq!(labels.ndim(), 1, "labels must be [N]");
    let (n, d) = (emb.shape()[0], emb.shape()[1]);
    let c = weight.shape()[0];
    assert_eq!(weight.shape()[1], d, "emb and weight dims differ");
    assert_eq!(labels.len(), n, "one label per embedding");
    assert!(c > 0, "at least one class");
    let labels = labels
        .iter()
        .map(|&l| {
            assert!(
                l.is_finite() && l.fract() == 0.0 && l >= 0.0 && l < c as f64,
                "label {l} outside [0, {c})"
            );
            l as usize
        })
        .collect();
    (rows(emb), rows(weight), labels)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn l2(x: &[f64]) -> f64 {
    dot(x, x).sqrt()
}

/// torch `F.normalize`: `x / max(‖x‖, 1e-12)`.
fn normalize(x: &[f64]) -> Vec<f64> {
    let r = l2(x).max(NORM_EPS);
    x.iter().map(|v| v / r).collect()
}

/// Backward of [`normalize`] at `x` (normalised `xh`) for an upstream gradient `g = dL/dx̂`.
fn normalize_backward(x: &[f64], xh: &[f64], g: &[f64]) -> Vec<f64> {
    let r = l2(x);
    if r >= NORM_EPS {
        let gx = dot(g, xh);
        g.iter()
            .zip(xh)
            .map(|(gk, hk)| (gk - gx * hk) / r)
            .collect()
    } else {
        g.iter().map(|gk| gk / NORM_EPS).collect()
    }
}

/// The cross-entropy `log Σ_k e^{z_k} − z_t` at target `t`, as the stable
/// `ln Σ_k e^{z_k − z_t}`: `ln_1p(Σ_{k≠t} e^{z_k − z_t})` when `z_t` is the largest logit (so
/// a loss near 0 keeps its relative precision), else shifted by `max_k z_k − z_t`.
fn cross_entropy(z: &[f64], t: usize) -> f64 {
    let m = z.iter().map(|v| v - z[t]).fold(f64::NEG_INFINITY, f64::max);
    if m.is_nan() || m == f64::INFINITY {
        return m;
    }
    if m <= 0.0 {
        let rest: f64 = (0..z.len())
            .filter(|&k| k != t)
            .map(|k| (z[k] - z[t]).exp())
            .sum();
        rest.ln_1p()
    } else {
        m + z.iter().map(|v| (v - z[t] - m).exp()).sum::<f64>().ln()
    }
}

/// Shared engine: cosines, per-row logits from `head(row, cos_row, label, ‖x_row‖)`, mean
/// softmax cross-entropy, and the gradients w.r.t. `emb` and `weight`.
fn margin_softmax(
    emb: ArrayViewD<'_, f64>,
    weight: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    grad_scale: f64,
    mut head: impl FnMut(usize, &[f64], usize, f64) -> RowLogits,
) -> MultiGrad {
    let (x, w, y) = check_inputs(&emb, &weight, &labels);
    let (n, c, d) = (x.len(), w.len(), emb.shape()[1]);
    let xh: Vec<Vec<f64>> = x.iter().map(|r| normalize(r)).collect();
    let wh: Vec<Vec<f64>> = w.iter().map(|r| normalize(r)).collect();
    let per_row = if n > 0 { grad_scale / n as f64 } else { 0.0 };
    let mut total = 0.0;
    let mut gxh = vec![vec![0.0; d]; n];
    let mut gwh = vec![vec![0.0; d]; c];
    let mut gnorm = vec![0.0; n];
    for i in 0..n {
        let cos: Vec<f64> = wh.iter().map(|wk| dot(&xh[i], wk)).collect();
        let row = head(i, &cos, y[i], l2(&x[i]));
        let ce = cross_entropy(&row.z, y[i]);
        total += ce;
        for k in 0..c {
            // p_k = e^{z_k − lse} with lse = z_y + ce.
            let onehot = if k == y[i] { 1.0 } else { 0.0 };
            let dz = per_row * ((row.z[k] - row.z[y[i]] - ce).exp() - onehot);
            let gcos = dz * row.dz_dcos[k];
            for j in 0..d {
                gxh[i][j] += gcos * wh[k][j];
                gwh[k][j] += gcos * xh[i][j];
            }
            gnorm[i] += dz * row.dz_dnorm[k];
        }
    }
    let mut gx = Vec::with_capacity(n * d);
    for i in 0..n {
        let mut g = normalize_backward(&x[i], &xh[i], &gxh[i]);
        let r = l2(&x[i]);
        // ∂‖x‖/∂x = x/‖x‖, and 0 at x = 0 (torch's norm backward).
        if r > 0.0 && gnorm[i] != 0.0 {
            for (gj, xj) in g.iter_mut().zip(&x[i]) {
                *gj += gnorm[i] * xj / r;
            }
        }
        gx.extend(g);
    }
    let gw: Vec<f64> = (0..c)
        .flat_map(|k| normalize_backward(&w[k], &wh[k], &gwh[k]))
        .collect();
    let loss = if n > 0 { total / n as f64 } else { 0.0 };
    MultiGrad {
        loss: scalar(loss),
        grads: vec![
            ArrayD::from_shape_vec(IxDyn(&[n, d]), gx).expect("length matches shape"),
            ArrayD::from_shape_vec(IxDyn(&[c, d]), gw).expect("length matches shape"),
        ],
    }
}

/// CosFace (Wang et al. 2018), as pml `CosFaceLoss` (defaults `margin = 0.35`,
/// `scale = 64`): `z_ic = s·cos_ic` for `c ≠ y_i`, `z_{i,y_i} = s·(cos_{i,y_i} − m)`.
///
/// `emb` `[N, D]`, `weight` `[C, D]` (pml's `W` transposed), `labels` `[N]`; loss = mean over
/// rows of the softmax cross-entropy (see the module docs). pml does not clamp the cosines
/// (insightface's partial FC clamps them to `[−1, 1]`, a rounding-level difference); neither
/// does this. Returns `grads = [dL/demb, dL/dweight]` times `grad_scale`.
pub fn cosface(
    emb: ArrayViewD<'_, f64>,
    weight: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    scale: f64,
    margin: f64,
    grad_scale: f64,
) -> MultiGrad {
    assert!(scale.is_finite() && margin.is_finite(), "scale and margin");
    margin_softmax(emb, weight, labels, grad_scale, |_, cos, y, _| {
        let mut row = RowLogits::new(cos.len());
        for (k, &ck) in cos.iter().enumerate() {
            let m = if k == y { margin } else { 0.0 };
            row.z[k] = scale * (ck - m);
            row.dz_dcos[k] = scale;
        }
        row
    })
}

/// ArcFace (Deng et al. 2019) with insightface's non-easy margin (`arcface_torch/losses.py`,
/// `ArcFace`/`CombinedMarginLoss`, 2022 versions, `easy_margin = False`; defaults
/// `scale = 64`, `margin = 0.5` radians). Non-target logits `s·cos_ic`; with
/// `c = clamp(cos_{i,y_i}, −1, 1)`, `th = cos(π − m)` and `mm = sin(π − m)·m` (= m·sin m):
///
/// ```text
/// z_{i,y_i} = s·(c·cos m − √(1 − c²)·sin m)   = s·cos(θ + m)   if c > th   (θ + m < π)
///           = s·(c − mm)                       = s·(cos θ − m·sin m)   otherwise
/// ```
///
/// pml `ArcFaceLoss` computes the same values as `torch.where(θ ≤ π − m, cos(θ + m),
/// cos θ − m·sin m)` with `θ = acos(clamp(cos, −1, 1))` and its `margin` in degrees
/// (`np.radians`): pass `margin_deg.to_radians()`. The two differ only at `θ = π − m`
/// exactly, where this follows insightface (fallback). The current insightface computes
/// `cos(θ + m)` inside `torch.no_grad()` with no fallback (a straight-through gradient); this
/// is the 2022 formulation with the true gradient.
///
/// Gradient of the target: `∂z/∂cos = s·(cos m + c·sin m/√(1 − c²))` (= `s·sin(θ+m)/sin θ`)
/// on the first branch and `s` on the fallback; 0 where the clamp is active (`|cos| > 1`) and,
/// on the first branch, at `|cos| = 1` exactly, where the derivative is infinite while
/// `∂cos/∂x = 0` (torch gives NaN there; the loss has a cone point, 0 is a subgradient).
pub fn arcface(
    emb: ArrayViewD<'_, f64>,
    weight: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    scale: f64,
    margin: f64,
    grad_scale: f64,
) -> MultiGrad {
    assert!(scale.is_finite() && margin.is_finite(), "scale and margin");
    let (cos_m, sin_m) = (margin.cos(), margin.sin());
    let th = (std::f64::consts::PI - margin).cos();
    let mm = (std::f64::consts::PI - margin).sin() * margin;
    margin_softmax(emb, weight, labels, grad_scale, |_, cos, y, _| {
        let mut row = RowLogits::new(cos.len());
        for (k, &ck) in cos.iter().enumerate() {
            if k != y {
                row.z[k] = scale * ck;
                row.dz_dcos[k] = scale;
                continue;
            }
            let c = ck.clamp(-1.0, 1.0);
            if c > th {
                let sin_t = (1.0 - c * c).sqrt();
                row.z[k] = scale * (c * cos_m - sin_t * sin_m);
                row.dz_dcos[k] = if ck.abs() < 1.0 {
                    scale * (cos_m + c * sin_m / sin_t)
                } else {
                    0.0
                };
            } else {
                row.z[k] = scale * (c - mm);
                row.dz_dcos[k] = if ck.abs() <= 1.0 { scale } else { 0.0 };
            }
        }
        row
    })
}

/// SphereFace's `ψ` at cosine `c` for integer margin `m ≥ 1`, with `∂ψ/∂c` (k held fixed),
/// computed as pml's `LargeMarginSoftmaxLoss`:
///
/// ```text
/// cos(mθ) = Σ_{n=0}^{⌊m/2⌋} (−1)^n C(m, 2n) c^{m−2n} (1 − c²)^n   (multiple-angle formula,
///                                                                  c unclamped)
/// k       = floor(θ / (π/m)),  θ = acos(clamp(c, −1, 1))           (detached)
/// ψ       = (−1)^k cos(mθ) − 2k
/// ```
fn sphere_psi(c: f64, m: u32) -> (f64, f64) {
    let theta = c.clamp(-1.0, 1.0).acos();
    let k = (theta / (std::f64::consts::PI / f64::from(m))).floor();
    let s2 = 1.0 - c * c;
    let (mut poly, mut dpoly) = (0.0, 0.0);
    let mut binom = 1.0; // C(m, 2n)
    for n in 0..=(m / 2) {
        let p = (m - 2 * n) as i32;
        let ni = n as i32;
        let coef = if n % 2 == 0 { binom } else { -binom };
        poly += coef * c.powi(p) * s2.powi(ni);
        // torch's pow backward is 0 where the exponent is 0.
        let mut d = 0.0;
        if p > 0 {
            d += f64::from(p) * c.powi(p - 1) * s2.powi(ni);
        }
        if ni > 0 {
            d -= 2.0 * f64::from(ni) * c.powi(p + 1) * s2.powi(ni - 1);
        }
        dpoly += coef * d;
        // C(m, 2n + 2) = C(m, 2n)·(m − 2n)(m − 2n − 1)/((2n + 1)(2n + 2)).
        let (a, b) = (f64::from(m - 2 * n), f64::from(2 * n));
        binom *= a * (a - 1.0) / ((b + 1.0) * (b + 2.0));
    }
    let sign = if k % 2.0 == 0.0 { 1.0 } else { -1.0 };
    (sign * poly - 2.0 * k, sign * dpoly)
}

/// SphereFace (Liu et al. 2017, A-Softmax), as pml `SphereFaceLoss` with its default
/// `scale = 1` (a `LargeMarginSoftmaxLoss` whose class weights are normalised): with
/// `r_i = ‖x_i‖₂` (the raw embedding norm, not normalised),
///
/// ```text
/// z_ic      = r_i · cos θ_ic                 (c ≠ y_i)
/// z_{i,y_i} = r_i · ψ(θ_{i,y_i}),  ψ(θ) = (−1)^k cos(mθ) − 2k,  θ ∈ [kπ/m, (k+1)π/m]
/// ```
///
/// with `cos(mθ)` from pml's multiple-angle (Chebyshev) sum on the unclamped cosine and
/// `k = floor(acos(clamp(cos, −1, 1)) / (π/m))` detached (see `sphere_psi`); `ψ` is
/// continuous (and C¹ in θ) at `θ = kπ/m`. pml applies no lambda annealing (the paper's and
/// the original Caffe code's `f = (λ cos θ + ψ)/(1 + λ)` schedule is absent): this is λ = 0.
/// `∂r/∂x = x/r` (0 at `x = 0`, torch's norm backward). `margin ≥ 1`; `margin = 1` is a
/// normalised-weight softmax scaled by `‖x‖`.
pub fn sphereface(
    emb: ArrayViewD<'_, f64>,
    weight: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    margin: u32,
    grad_scale: f64,
) -> MultiGrad {
    assert!(margin >= 1, "sphereface margin must be at least 1");
    margin_softmax(emb, weight, labels, grad_scale, |_, cos, y, r| {
        let mut row = RowLogits::new(cos.len());
        for (k, &ck) in cos.iter().enumerate() {
            let (psi, dpsi) = if k == y {
                sphere_psi(ck, margin)
            } else {
                (ck, 1.0)
            };
            row.z[k] = r * psi;
            row.dz_dcos[k] = r * dpsi;
            row.dz_dnorm[k] = psi;
        }
        row
    })
}

/// AdaFace's running statistics of the (clipped) embedding norms: the `batch_mean` and
/// `batch_std` buffers of head.py's `AdaFace`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaFaceState {
    /// EMA of the batch mean of the norms.
    pub batch_mean: f64,
    /// EMA of the batch (unbiased) standard deviation of the norms.
    pub batch_std: f64,
}

impl Default for AdaFaceState {
    /// head.py's initial buffers: `batch_mean = 20`, `batch_std = 100`.
    fn default() -> Self {
        Self {
            batch_mean: 20.0,
            batch_std: 100.0,
        }
    }
}

/// AdaFace (Kim et al. 2022), following the official `head.py` `AdaFace.forward` (defaults
/// `margin = 0.4`, `h = 0.333`, `scale = 64`, `t_alpha = 0.01` as in its README; the class
/// default `t_alpha` is 1.0), with `eps = 1e-3`:
///
/// ```text
/// n_i    = clip(‖x_i‖, 0.001, 100)                                         (detached)
/// μ ← t_alpha·mean(n) + (1 − t_alpha)·μ,  σ ← t_alpha·std(n) + (1 − t_alpha)·σ   (first)
/// a_i    = clip(h·(n_i − μ)/(σ + eps), −1, 1)                              (new μ, σ)
/// g_ang  = −m·a_i,  g_add = m + m·a_i                                      (target only)
/// c      = clamp(cos_ic, −1 + eps, 1 − eps)                                (every class)
/// z_ic   = s·(cos(clip(acos c + g_ang·[c = y_i], eps, π − eps)) − g_add·[c = y_i])
/// ```
///
/// `std` is torch's unbiased `std()`. For N = 1 torch's is NaN (0/0), which would make the
/// loss and the state NaN for good; here the batch std of a single norm is taken as 0 (a
/// deliberate deviation). N = 0 panics.
///
/// head.py takes already-normalised embeddings and their norms as separate inputs (its
/// backbone divides by the norm without an eps, as does its `l2_norm` of the kernel); here
/// `emb` is raw, normalised with `F.normalize`, and its norm is computed from it. The norms
/// and the statistics are constants for the gradient (detached in head.py), so the gradient
/// w.r.t. `emb` flows through `ê` only. The non-target logits also see the clamp to
/// `[−1 + eps, 1 − eps]` (zero gradient outside it), as in head.py. `state` is updated in
/// place before the margins are computed.
#[allow(clippy::too_many_arguments)]
pub fn adaface(
    emb: ArrayViewD<'_, f64>,
    weight: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    state: &mut AdaFaceState,
    margin: f64,
    h: f64,
    scale: f64,
    t_alpha: f64,
    grad_scale: f64,
) -> MultiGrad {
    assert!(
        margin.is_finite() && h.is_finite() && scale.is_finite(),
        "margin, h and scale"
    );
    assert!((0.0..=1.0).contains(&t_alpha), "t_alpha must be in [0, 1]");
    assert_eq!(emb.ndim(), 2, "emb must be [N, D]");
    let norms = adaface_norms(&emb);
    let n = norms.len();
    assert!(n > 0, "adaface needs a non-empty batch");
    let mean = norms.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (norms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    state.batch_mean = mean * t_alpha + (1.0 - t_alpha) * state.batch_mean;
    state.batch_std = std * t_alpha + (1.0 - t_alpha) * state.batch_std;
    adaface_frozen(
        emb, weight, labels, &norms, *state, margin, h, scale, grad_scale,
    )
}

/// AdaFace's clipped embedding norms `clip(‖x_i‖, 0.001, 100)`.
pub fn adaface_norms(emb: &ArrayViewD<'_, f64>) -> Vec<f64> {
    rows(emb)
        .iter()
        .map(|r| l2(r).clamp(0.001, 100.0))
        .collect()
}

/// [`adaface`] after the state update: given the clipped norms `n_i` and the (already
/// updated) statistics, with no update. Also what finite differences check, since the
/// gradient treats both as constants.
#[allow(clippy::too_many_arguments)]
pub fn adaface_frozen(
    emb: ArrayViewD<'_, f64>,
    weight: ArrayViewD<'_, f64>,
    labels: ArrayViewD<'_, f64>,
    norms: &[f64],
    state: AdaFaceState,
    margin: f64,
    h: f64,
    scale: f64,
    grad_scale: f64,
) -> MultiGrad {
    use std::f64::consts::PI;
    let eps = ADAFACE_EPS;
    margin_softmax(emb, weight, labels, grad_scale, |i, cos, y, _| {
        let a = ((norms[i] - state.batch_mean) / (state.batch_std + eps) * h).clamp(-1.0, 1.0);
        let mut row = RowLogits::new(cos.len());
        for (k, &ck) in cos.iter().enumerate() {
            let (g_ang, g_add) = if k == y {
                (-margin * a, margin + margin * a)
            } else {
                (0.0, 0.0)
            };
            let c = ck.clamp(-1.0 + eps, 1.0 - eps);
            let theta = c.acos();
            let shifted = theta + g_ang;
            let theta_m = shifted.clamp(eps, PI - eps);
            row.z[k] = scale * (theta_m.cos() - g_add);
            // d cos(θ_m)/dc = sin θ_m / sin θ inside both clamps, 0 outside.
            let inside =
                (-1.0 + eps..=1.0 - eps).contains(&ck) && (eps..=PI - eps).contains(&shifted);
            row.dz_dcos[k] = if inside {
                scale * theta_m.sin() / theta.sin()
            } else {
                0.0
            };
        }
        row
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;
    use std::f64::consts::PI;

    /// Knuth's MMIX LCG, top 53 bits: reproducible test data.
    struct Lcg(u64);

    impl Lcg {
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
            let n = shape.iter().product();
            let v = (0..n).map(|_| self.uniform(lo, hi)).collect();
            ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
        }

        fn labels(&mut self, n: usize, c: usize) -> ArrayD<f64> {
            let v = (0..n)
                .map(|_| ((self.uniform(0.0, 1.0) * c as f64).floor()).min(c as f64 - 1.0))
                .collect();
            ArrayD::from_shape_vec(IxDyn(&[n]), v).unwrap()
        }
    }

    fn arr(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    fn loss(g: &MultiGrad) -> f64 {
        g.loss[[]]
    }

    /// Central differences of `f(emb, weight)` against its analytic gradients:
    /// `h = 1e-6·max(|x|, 1)`, `|fd − g| ≤ 1e-6·max|g| + 1e-5·|g|`.
    fn check_fd(
        label: &str,
        emb: &ArrayD<f64>,
        weight: &ArrayD<f64>,
        f: impl Fn(&ArrayD<f64>, &ArrayD<f64>) -> MultiGrad,
    ) {
        let out = f(emb, weight);
        assert!(loss(&out).is_finite(), "{label}: loss {}", loss(&out));
        assert_eq!(out.grads.len(), 2, "{label}");
        assert_eq!(out.grads[0].shape(), emb.shape(), "{label}");
        assert_eq!(out.grads[1].shape(), weight.shape(), "{label}");
        let gmax = out
            .grads
            .iter()
            .flat_map(|g| g.iter())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        for (which, grad) in out.grads.iter().enumerate() {
            for (j, &g) in grad.iter().enumerate() {
                let mut inputs = [emb.clone(), weight.clone()];
                let x = inputs[which].as_slice().unwrap()[j];
                let h = 1e-6 * x.abs().max(1.0);
                inputs[which].as_slice_mut().unwrap()[j] = x + h;
                let up = loss(&f(&inputs[0], &inputs[1]));
                inputs[which].as_slice_mut().unwrap()[j] = x - h;
                let down = loss(&f(&inputs[0], &inputs[1]));
                let num = (up - down) / (2.0 * h);
                assert!(
                    (num - g).abs() <= 1e-6 * gmax + 1e-5 * g.abs(),
                    "{label}: input {which} element {j}: fd {num} vs analytic {g} (max {gmax})"
                );
            }
        }
    }

    /// A named test input: embeddings, class weights, labels.
    type Case = (String, ArrayD<f64>, ArrayD<f64>, ArrayD<f64>);

    /// Every (N, D, C) in {1, 3, 5} × {2, 4} × {3, 7} with random embeddings, weights, labels.
    fn cases(seed: u64) -> Vec<Case> {
        let mut rng = Lcg(seed);
        let mut out = Vec::new();
        for n in [1, 3, 5] {
            for d in [2, 4] {
                for c in [3, 7] {
                    let emb = rng.array(&[n, d], -2.0, 2.0);
                    let weight = rng.array(&[c, d], -1.5, 1.5);
                    let labels = rng.labels(n, c);
                    out.push((format!("n{n} d{d} c{c}"), emb, weight, labels));
                }
            }
        }
        out
    }

    #[test]
    fn cosface_fd() {
        for (name, emb, weight, labels) in cases(1) {
            for (s, m) in [(64.0, 0.35), (4.0, 0.2)] {
                check_fd(&format!("cosface {name} s{s}"), &emb, &weight, |e, w| {
                    cosface(e.view(), w.view(), labels.view(), s, m, 1.0)
                });
            }
        }
    }

    #[test]
    fn arcface_fd() {
        for (name, mut emb, weight, labels) in cases(2) {
            // Put row 0 nearly opposite its class weight: the fallback branch.
            let y = labels[[0]] as usize;
            let d = emb.shape()[1];
            for j in 0..d {
                emb[[0, j]] = -1.3 * weight[[y, j]] + 0.05 * (j as f64 + 1.0);
            }
            for (s, m) in [(64.0, 0.5), (3.0, 0.7)] {
                check_fd(&format!("arcface {name} s{s}"), &emb, &weight, |e, w| {
                    arcface(e.view(), w.view(), labels.view(), s, m, 1.0)
                });
            }
        }
    }

    #[test]
    fn sphereface_fd() {
        for (name, emb, weight, labels) in cases(3) {
            for m in 1..=5 {
                check_fd(&format!("sphereface {name} m{m}"), &emb, &weight, |e, w| {
                    sphereface(e.view(), w.view(), labels.view(), m, 1.0)
                });
            }
        }
    }

    #[test]
    fn adaface_fd_frozen_state() {
        for (name, emb, weight, labels) in cases(4) {
            let norms: Vec<f64> = rows(&emb.view())
                .iter()
                .map(|r| l2(r).clamp(0.001, 100.0))
                .collect();
            // Scalers inside (−1, 1) and, with h = 3, partly clipped.
            for (h, state) in [
                (0.333, AdaFaceState::default()),
                (
                    0.333,
                    AdaFaceState {
                        batch_mean: 1.5,
                        batch_std: 0.5,
                    },
                ),
                (
                    3.0,
                    AdaFaceState {
                        batch_mean: 1.5,
                        batch_std: 0.5,
                    },
                ),
            ] {
                check_fd(&format!("adaface {name} h{h}"), &emb, &weight, |e, w| {
                    let frozen = state;
                    adaface_frozen(
                        e.view(),
                        w.view(),
                        labels.view(),
                        &norms,
                        frozen,
                        0.4,
                        h,
                        64.0,
                        1.0,
                    )
                });
            }
            // The public function is the frozen one at the clipped norms and updated state.
            let mut state = AdaFaceState::default();
            let out = adaface(
                emb.view(),
                weight.view(),
                labels.view(),
                &mut state,
                0.4,
                0.333,
                64.0,
                0.01,
                1.0,
            );
            let fro = adaface_frozen(
                emb.view(),
                weight.view(),
                labels.view(),
                &norms,
                state,
                0.4,
                0.333,
                64.0,
                1.0,
            );
            assert_eq!(out.loss, fro.loss, "{name}");
            assert_eq!(out.grads, fro.grads, "{name}");
        }
    }

    #[test]
    fn cosface_hand_value_at_cos_one() {
        // Row 0's embedding is a multiple of its class weight: cos = [1, 0, −1].
        let emb = arr(&[1, 2], &[2.0, 0.0]);
        let weight = arr(&[3, 2], &[3.0, 0.0, 0.0, 1.0, -1.0, 0.0]);
        let labels = arr(&[1], &[0.0]);
        let (s, m) = (4.0, 0.35);
        let out = cosface(emb.view(), weight.view(), labels.view(), s, m, 1.0);
        let z0 = s * (1.0 - m);
        let expect = ((z0).exp() + 1.0 + (-s).exp()).ln() - z0;
        assert!((loss(&out) - expect).abs() < 1e-14, "{}", loss(&out));
        check_fd("cosface cos=1", &emb, &weight, |e, w| {
            cosface(e.view(), w.view(), labels.view(), s, m, 1.0)
        });
    }

    #[test]
    fn arcface_hand_values() {
        let (s, m) = (4.0, 0.5);
        // Row 0 at cos = 1 (target logit s·cos m), row 1 at cos = 0.3 (s·cos(acos 0.3 + m)).
        let emb = arr(&[2, 2], &[2.0, 0.0, 0.3, (1.0f64 - 0.09).sqrt()]);
        let weight = arr(&[3, 2], &[3.0, 0.0, 0.0, 1.0, -1.0, 0.0]);
        let labels = arr(&[2], &[0.0, 0.0]);
        let out = arcface(emb.view(), weight.view(), labels.view(), s, m, 1.0);
        let ce = |z: [f64; 3]| z.iter().map(|v| v.exp()).sum::<f64>().ln() - z[0];
        let row0 = ce([s * m.cos(), 0.0, -s]);
        let c1 = 0.3f64;
        let row1 = ce([
            s * (c1.acos() + m).cos(),
            s * (1.0 - 0.09f64).sqrt(),
            -s * c1,
        ]);
        assert!((loss(&out) - (row0 + row1) / 2.0).abs() < 1e-13);
        assert!(out.grads.iter().all(|g| g.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn arcface_fallback_when_theta_plus_m_exceeds_pi() {
        let (s, m) = (4.0, 0.5);
        // θ = π − 0.05 for the target: θ + m > π.
        let theta = PI - 0.05;
        let emb = arr(&[1, 2], &[theta.cos(), theta.sin()]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = arr(&[1], &[0.0]);
        let out = arcface(emb.view(), weight.view(), labels.view(), s, m, 1.0);
        let c = theta.cos();
        assert!(c < (PI - m).cos());
        let z = [s * (c - m * m.sin()), s * theta.sin()];
        let expect = (z[0].exp() + z[1].exp()).ln() - z[0];
        assert!(loss(&out).is_finite());
        assert!(
            (loss(&out) - expect).abs() < 1e-13,
            "{} vs {expect}",
            loss(&out)
        );
        check_fd("arcface fallback", &emb, &weight, |e, w| {
            arcface(e.view(), w.view(), labels.view(), s, m, 1.0)
        });
        // Exactly opposite (cos = −1): finite, fallback value.
        let emb = arr(&[1, 2], &[-1.0, 0.0]);
        let out = arcface(emb.view(), weight.view(), labels.view(), s, m, 1.0);
        let z = [s * (-1.0 - m * m.sin()), 0.0];
        let expect = (z[0].exp() + z[1].exp()).ln() - z[0];
        assert!((loss(&out) - expect).abs() < 1e-13);
        assert!(out.grads.iter().all(|g| g.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn sphereface_psi_matches_definition_and_is_continuous() {
        for m in 1..=6u32 {
            let mf = f64::from(m);
            for step in 0..=200 {
                let theta = PI * f64::from(step) / 200.0;
                let (psi, _) = sphere_psi(theta.cos(), m);
                let k = (theta / (PI / mf)).floor().min(mf);
                let sign = if k % 2.0 == 0.0 { 1.0 } else { -1.0 };
                let expect = sign * (mf * theta).cos() - 2.0 * k;
                assert!(
                    (psi - expect).abs() < 1e-9,
                    "m{m} θ{theta}: {psi} vs {expect}"
                );
            }
            // Continuity at θ = kπ/m, where ψ = 1 − 2k.
            for k in 1..m {
                let at = f64::from(k) * PI / mf;
                for delta in [-1e-7, 1e-7] {
                    let (psi, _) = sphere_psi((at + delta).cos(), m);
                    let expect = 1.0 - 2.0 * f64::from(k);
                    assert!((psi - expect).abs() < 1e-6, "m{m} k{k} δ{delta}: {psi}");
                }
            }
            // ψ is decreasing in θ.
            let mut prev = f64::INFINITY;
            for step in 0..=400 {
                let (psi, _) = sphere_psi((PI * f64::from(step) / 400.0).cos(), m);
                assert!(psi <= prev + 1e-12, "m{m}: not decreasing at {step}");
                prev = psi;
            }
        }
    }

    #[test]
    fn sphereface_hand_value() {
        // Embedding of norm 2 at θ = 1.0 from class 0 (m = 4: k = 1); class 1 at 90° − 1.
        let (r, theta) = (2.0, 1.0f64);
        let emb = arr(&[1, 2], &[r * theta.cos(), r * theta.sin()]);
        let weight = arr(&[2, 2], &[5.0, 0.0, 0.0, 0.5]);
        let labels = arr(&[1], &[0.0]);
        let out = sphereface(emb.view(), weight.view(), labels.view(), 4, 1.0);
        let psi = -(4.0 * theta).cos() - 2.0;
        let z = [r * psi, r * theta.sin()];
        let expect = (z[0].exp() + z[1].exp()).ln() - z[0];
        assert!(
            (loss(&out) - expect).abs() < 1e-12,
            "{} vs {expect}",
            loss(&out)
        );
    }

    #[test]
    fn adaface_default_state() {
        let s = AdaFaceState::default();
        assert_eq!((s.batch_mean, s.batch_std), (20.0, 100.0));
    }

    #[test]
    fn adaface_state_update_and_value_by_hand() {
        // Norms 5, 1 and 200 (clipped to 100).
        let emb = arr(&[3, 2], &[3.0, 4.0, 0.0, 1.0, 200.0, 0.0]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 2.0]);
        let labels = arr(&[3], &[0.0, 1.0, 0.0]);
        let mut state = AdaFaceState::default();
        let (m, h, s, t) = (0.4, 0.333, 64.0, 0.01);
        let out = adaface(
            emb.view(),
            weight.view(),
            labels.view(),
            &mut state,
            m,
            h,
            s,
            t,
            1.0,
        );
        let mean: f64 = 106.0 / 3.0;
        let var = ((5.0 - mean).powi(2) + (1.0 - mean).powi(2) + (100.0 - mean).powi(2)) / 2.0;
        let bm = t * mean + (1.0 - t) * 20.0;
        let bs = t * var.sqrt() + (1.0 - t) * 100.0;
        assert!(
            (state.batch_mean - bm).abs() < 1e-12,
            "{}",
            state.batch_mean
        );
        assert!((state.batch_std - bs).abs() < 1e-12, "{}", state.batch_std);
        // Loss by hand with the updated statistics.
        let eps = 1e-3;
        let ce = |z: [f64; 2], y: usize| (z[0].exp() + z[1].exp()).ln() - z[y];
        let target = |norm: f64, cos: f64| {
            let a = ((norm - bm) / (bs + eps) * h).clamp(-1.0, 1.0);
            let c = cos.clamp(-1.0 + eps, 1.0 - eps);
            let th = (c.acos() - m * a).clamp(eps, PI - eps);
            s * (th.cos() - (m + m * a))
        };
        // Row 0: ê = (0.6, 0.8), cos = [0.6, 0.8]; row 1: ê = (0, 1), cos = [0, 1];
        // row 2: ê = (1, 0), cos = [1, 0].
        let row0 = ce([target(5.0, 0.6), s * 0.8], 0);
        let row1 = ce([0.0, target(1.0, 1.0)], 1);
        let row2 = ce([target(100.0, 1.0), 0.0], 0);
        let expect = (row0 + row1 + row2) / 3.0;
        assert!(
            (loss(&out) - expect).abs() < 1e-10,
            "{} vs {expect}",
            loss(&out)
        );
        // A second call updates from the new state.
        let before = state;
        adaface(
            emb.view(),
            weight.view(),
            labels.view(),
            &mut state,
            m,
            h,
            s,
            t,
            1.0,
        );
        assert!((state.batch_mean - (t * mean + (1.0 - t) * before.batch_mean)).abs() < 1e-12);
    }

    #[test]
    fn adaface_single_row_uses_zero_std() {
        let emb = arr(&[1, 2], &[3.0, 4.0]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = arr(&[1], &[1.0]);
        let mut state = AdaFaceState::default();
        let out = adaface(
            emb.view(),
            weight.view(),
            labels.view(),
            &mut state,
            0.4,
            0.333,
            64.0,
            0.5,
            1.0,
        );
        assert!(loss(&out).is_finite());
        assert_eq!(state.batch_mean, 0.5 * 5.0 + 0.5 * 20.0);
        assert_eq!(state.batch_std, 0.5 * 100.0);
    }

    #[test]
    fn zero_embedding_gives_finite_loss() {
        let emb = arr(&[2, 3], &[0.0, 0.0, 0.0, 1.0, -0.5, 0.25]);
        let weight = arr(&[3, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.3, 0.3, 1.0]);
        let labels = arr(&[2], &[1.0, 2.0]);
        let v = (emb.view(), weight.view(), labels.view());
        let mut state = AdaFaceState::default();
        let outs = [
            cosface(v.0.clone(), v.1.clone(), v.2.clone(), 64.0, 0.35, 1.0),
            arcface(v.0.clone(), v.1.clone(), v.2.clone(), 64.0, 0.5, 1.0),
            sphereface(v.0.clone(), v.1.clone(), v.2.clone(), 4, 1.0),
            adaface(
                v.0.clone(),
                v.1.clone(),
                v.2.clone(),
                &mut state,
                0.4,
                0.333,
                64.0,
                0.01,
                1.0,
            ),
        ];
        for out in &outs {
            assert!(loss(out).is_finite());
            assert!(out.grads.iter().all(|g| g.iter().all(|x| x.is_finite())));
        }
        // Zero row alone: cosface logits s·[0, −m, 0] at label 1; sphereface all 0 (ln 3).
        let z = arr(&[1, 3], &[0.0; 3]);
        let l = arr(&[1], &[1.0]);
        let out = cosface(z.view(), weight.view(), l.view(), 64.0, 0.35, 1.0);
        let expect = (2.0 + (-64.0f64 * 0.35).exp()).ln() + 64.0 * 0.35;
        assert!((loss(&out) - expect).abs() < 1e-12);
        let out = sphereface(z.view(), weight.view(), l.view(), 4, 1.0);
        assert!((loss(&out) - 3.0f64.ln()).abs() < 1e-15);
        assert!(out.grads[0].iter().all(|&g| g == 0.0));
    }

    #[test]
    fn single_class_gives_zero() {
        let mut rng = Lcg(9);
        let emb = rng.array(&[3, 4], -1.0, 1.0);
        let weight = rng.array(&[1, 4], -1.0, 1.0);
        let labels = Array1::zeros(3).into_dyn();
        let v = (emb.view(), weight.view(), labels.view());
        let mut state = AdaFaceState::default();
        let outs = [
            cosface(v.0.clone(), v.1.clone(), v.2.clone(), 64.0, 0.35, 1.0),
            arcface(v.0.clone(), v.1.clone(), v.2.clone(), 64.0, 0.5, 1.0),
            sphereface(v.0.clone(), v.1.clone(), v.2.clone(), 4, 1.0),
            adaface(
                v.0.clone(),
                v.1.clone(),
                v.2.clone(),
                &mut state,
                0.4,
                0.333,
                64.0,
                0.01,
                1.0,
            ),
        ];
        for out in &outs {
            assert_eq!(loss(out), 0.0);
            assert!(out.grads.iter().all(|g| g.iter().all(|&x| x == 0.0)));
        }
    }

    #[test]
    fn grad_scale_scales_gradients_only() {
        let (_, emb, weight, labels) = cases(5).swap_remove(7);
        let a = arcface(emb.view(), weight.view(), labels.view(), 64.0, 0.5, 1.0);
        let b = arcface(emb.view(), weight.view(), labels.view(), 64.0, 0.5, 2.5);
        assert_eq!(loss(&a), loss(&b));
        for (ga, gb) in a.grads.iter().zip(&b.grads) {
            for (x, y) in ga.iter().zip(gb) {
                assert!((2.5 * x - y).abs() <= 1e-13 * y.abs());
            }
        }
    }

    #[test]
    fn empty_batch_gives_zero() {
        let emb = ArrayD::zeros(IxDyn(&[0, 4]));
        let weight = arr(&[2, 4], &[1.0; 8]);
        let labels = ArrayD::zeros(IxDyn(&[0]));
        let out = cosface(emb.view(), weight.view(), labels.view(), 64.0, 0.35, 1.0);
        assert_eq!(loss(&out), 0.0);
        assert_eq!(out.grads[0].shape(), &[0, 4]);
        assert!(out.grads[1].iter().all(|&g| g == 0.0));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn label_out_of_range_panics() {
        let emb = arr(&[1, 2], &[1.0, 0.0]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = arr(&[1], &[2.0]);
        cosface(emb.view(), weight.view(), labels.view(), 64.0, 0.35, 1.0);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn fractional_label_panics() {
        let emb = arr(&[1, 2], &[1.0, 0.0]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = arr(&[1], &[0.5]);
        arcface(emb.view(), weight.view(), labels.view(), 64.0, 0.5, 1.0);
    }

    #[test]
    #[should_panic(expected = "dims differ")]
    fn dim_mismatch_panics() {
        let emb = arr(&[1, 3], &[1.0, 0.0, 0.0]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = arr(&[1], &[0.0]);
        sphereface(emb.view(), weight.view(), labels.view(), 4, 1.0);
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn sphereface_zero_margin_panics() {
        let emb = arr(&[1, 2], &[1.0, 0.0]);
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = arr(&[1], &[0.0]);
        sphereface(emb.view(), weight.view(), labels.view(), 0, 1.0);
    }

    #[test]
    #[should_panic(expected = "non-empty")]
    fn adaface_empty_batch_panics() {
        let emb = ArrayD::zeros(IxDyn(&[0, 2]));
        let weight = arr(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let labels = ArrayD::zeros(IxDyn(&[0]));
        let mut state = AdaFaceState::default();
        adaface(
            emb.view(),
            weight.view(),
            labels.view(),
            &mut state,
            0.4,
            0.333,
            64.0,
            0.01,
            1.0,
        );
    }
}
