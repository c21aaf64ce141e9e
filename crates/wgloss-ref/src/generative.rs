//! Generative-model losses: GAN discriminator / generator objectives, the WGAN-GP gradient
//! penalty, KL divergences (torch `kl_div`, the VAE Gaussian KL), diffusion and denoising
//! score-matching regressions, perceptual / style (Gram) feature losses and CycleGAN's cycle
//! consistency.
//!
//! Conventions shared by the file:
//!
//! * `softplus(x) = ln(1 + eˣ)` is evaluated as `max(x, 0) + ln(1 + e^{−|x|})` and `σ(x)`
//!   through `e^{−|x|}`, so logits of any magnitude give finite losses and gradients.
//! * `relu` propagates NaN (torch's does) and its derivative at the kink is 0.
//! * `sign` is ±1, 0 at 0 and NaN for NaN (the derivative of `|x|`).
//! * "Batched" inputs are `[N, ...]`: sample `i` is the row-major block of the
//!   `prod(shape[1..])` elements after the first index. Per-sample reductions: `Mean` divides
//!   by `N` (0 when `N = 0`), `Sum` adds, `None` returns the `[N]` per-sample losses with the
//!   gradient of `Sum`.
//! * Every returned gradient is multiplied by `grad_scale`.

use ndarray::{Array1, ArrayD, ArrayViewD, IxDyn};

use crate::numerics::{sigmoid, sign, softplus};
use crate::{elementwise, elementwise_indexed, flat, scalar, LossGrad, MultiGrad, Reduction};

/// `max(v, 0)` that keeps NaN (torch `relu`).
fn relu(v: f64) -> f64 {
    if v <= 0.0 {
        0.0
    } else {
        v
    }
}

/// `relu'(v)`: 1 for `v > 0`, else 0 (0 at the kink and for NaN, as torch's backward).
fn relu_deriv(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// `eˣ − 1 − x` without the cancellation of `expm1(x) − x` near 0 (Taylor series for
/// `|x| < 0.25`, where 16 terms reach full precision).
fn exp_m1_minus_x(x: f64) -> f64 {
    if x.abs() < 0.25 {
        let mut term = 0.5 * x * x;
        let mut sum = term;
        for k in 3..=18 {
            term *= x / k as f64;
            sum += term;
        }
        sum
    } else {
        x.exp_m1() - x
    }
}

/// `(N, elements per sample)` of a batched `[N, ...]` shape; panics on a 0-d shape.
fn batch_dims(shape: &[usize], name: &str) -> (usize, usize) {
    assert!(
        !shape.is_empty(),
        "{name} must be batched ([N, ...]), got a 0-d array"
    );
    (shape[0], shape[1..].iter().product())
}

/// The factor a per-sample gradient is multiplied by: `grad_scale / N` for `Mean` (`N > 0`),
/// `grad_scale` otherwise.
fn sample_scale(n: usize, reduction: Reduction, grad_scale: f64) -> f64 {
    match reduction {
        Reduction::Mean if n > 0 => grad_scale / n as f64,
        _ => grad_scale,
    }
}

/// Per-sample losses reduced: `[N]` for `None`, their sum, or their mean (0 when empty).
fn reduce_samples(losses: Vec<f64>, reduction: Reduction) -> ArrayD<f64> {
    let n = losses.len();
    match reduction {
        Reduction::None => Array1::from(losses).into_dyn(),
        Reduction::Sum => scalar(losses.iter().sum()),
        Reduction::Mean if n == 0 => scalar(0.0),
        Reduction::Mean => scalar(losses.iter().sum::<f64>() / n as f64),
    }
}

/// `Vec` laid out in `shape` (row-major).
fn shaped(shape: &[usize], v: Vec<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("length matches shape")
}

/// The GAN objective family of [`gan_discriminator`] and [`gan_generator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GanKind {
    /// Goodfellow's minimax game: BCE-with-logits discriminator, generator minimises
    /// `ln(1 − σ(D(G(z))))`.
    Minimax,
    /// Same discriminator; generator minimises `BCE(D(G(z)), 1) = softplus(−x)`.
    NonSaturating,
    /// LSGAN: squared distances to the labels `a` (fake), `b` (real), `c` (generator).
    LeastSquares,
    /// WGAN critic: `−D(x) + D(G(z))`, generator `−D(G(z))`.
    Wasserstein,
    /// Hinge (SNGAN / BigGAN): `relu(1 − D(x)) + relu(1 + D(G(z)))`, generator `−D(G(z))`.
    Hinge,
}

/// Discriminator term of a real score `x`: `(loss, dloss/dx)`.
fn disc_real(x: f64, kind: GanKind, b: f64) -> (f64, f64) {
    match kind {
        GanKind::Minimax | GanKind::NonSaturating => (softplus(-x), -sigmoid(-x)),
        GanKind::LeastSquares => {
            let r = x - b;
            (0.5 * r * r, r)
        }
        GanKind::Wasserstein => (-x, -1.0),
        GanKind::Hinge => (relu(1.0 - x), -relu_deriv(1.0 - x)),
    }
}

/// Discriminator term of a fake score `x`: `(loss, dloss/dx)`.
fn disc_fake(x: f64, kind: GanKind, a: f64) -> (f64, f64) {
    match kind {
        GanKind::Minimax | GanKind::NonSaturating => (softplus(x), sigmoid(x)),
        GanKind::LeastSquares => {
            let r = x - a;
            (0.5 * r * r, r)
        }
        GanKind::Wasserstein => (x, 1.0),
        GanKind::Hinge => (relu(1.0 + x), relu_deriv(1.0 + x)),
    }
}

/// GAN discriminator (critic) loss of the scores / logits `real = D(x)` and
/// `fake = D(G(z))` (any shapes, any lengths). Per element, real term / fake term:
///
/// * `Minimax`, `NonSaturating` (BCE with logits, targets 1 / 0): `softplus(−x)`, derivative
///   `−σ(−x)` / `softplus(x)`, derivative `σ(x)`.
/// * `LeastSquares`: `½(x − b)²`, derivative `x − b` / `½(x − a)²`, derivative `x − a`
///   (LSGAN's usual labels are `a = 0`, `b = 1`).
/// * `Wasserstein`: `−x`, derivative −1 / `x`, derivative 1.
/// * `Hinge`: `relu(1 − x)`, derivative `−[x < 1]` / `relu(1 + x)`, derivative `[x > −1]`
///   (0 at the kinks).
///
/// `Mean`: mean of the real terms plus mean of the fake terms (an empty set adds 0), so a
/// real element's gradient is divided by `real.len()` and a fake one's by `fake.len()`;
/// `Sum`: sum of all terms; `None`: the `[real.len() + fake.len()]` terms, real's then fake's,
/// each flattened row-major, with the gradients of `Sum`. `grads = [d/d real, d/d fake]`.
pub fn gan_discriminator(
    real: ArrayViewD<'_, f64>,
    fake: ArrayViewD<'_, f64>,
    kind: GanKind,
    a: f64,
    b: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> MultiGrad {
    let (nr, nf) = (real.len(), fake.len());
    let (sr, sf) = (
        sample_scale(nr, reduction, grad_scale),
        sample_scale(nf, reduction, grad_scale),
    );
    let (lr, gr): (Vec<f64>, Vec<f64>) = flat(&real)
        .iter()
        .map(|&x| {
            let (l, d) = disc_real(x, kind, b);
            (l, sr * d)
        })
        .unzip();
    let (lf, gf): (Vec<f64>, Vec<f64>) = flat(&fake)
        .iter()
        .map(|&x| {
            let (l, d) = disc_fake(x, kind, a);
            (l, sf * d)
        })
        .unzip();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let loss = match reduction {
        Reduction::None => Array1::from_iter(lr.into_iter().chain(lf)).into_dyn(),
        Reduction::Sum => scalar(lr.iter().sum::<f64>() + lf.iter().sum::<f64>()),
        Reduction::Mean => scalar(mean(&lr) + mean(&lf)),
    };
    MultiGrad {
        loss,
        grads: vec![shaped(real.shape(), gr), shaped(fake.shape(), gf)],
    }
}

/// GAN generator loss of the fake scores / logits `x = D(G(z))`, per element:
///
/// * `Minimax`: `ln(1 − σ(x)) = −softplus(x)`, derivative `−σ(x)`.
/// * `NonSaturating`: `BCE(x, 1) = softplus(−x)`, derivative `−σ(−x)`.
/// * `LeastSquares`: `½(x − c)²`, derivative `x − c` (LSGAN's usual `c = 1`).
/// * `Wasserstein`, `Hinge`: `−x`, derivative −1.
///
/// Ordinary element-wise reduction (`None`: per element, `Mean`, `Sum`).
pub fn gan_generator(
    fake: ArrayViewD<'_, f64>,
    kind: GanKind,
    c: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    elementwise(
        fake.clone(),
        fake,
        reduction,
        grad_scale,
        |x, _| match kind {
            GanKind::Minimax => (-softplus(x), -sigmoid(x)),
            GanKind::NonSaturating => (softplus(-x), -sigmoid(-x)),
            GanKind::LeastSquares => {
                let r = x - c;
                (0.5 * r * r, r)
            }
            GanKind::Wasserstein | GanKind::Hinge => (-x, -1.0),
        },
    )
}

/// `‖v‖₂` computed around `max |vᵢ|`, so huge finite entries do not overflow (and tiny ones
/// do not underflow); 0 for an all-zero `v`, NaN if any entry is NaN, ∞ for an infinite one.
fn norm2(v: &[f64]) -> f64 {
    let m = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if m == 0.0 || m.is_infinite() {
        v.iter().map(|x| x * x).sum::<f64>().sqrt()
    } else {
        m * v.iter().map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
    }
}

/// WGAN-GP gradient penalty of the critic's input gradients `grads = ∇ₓ̂ D(x̂)`, `[N, ...]`:
/// per sample `nᵢ = ‖gᵢ‖₂` over its non-batch elements (computed with scaling, so huge
/// finite entries do not overflow) and `λ(nᵢ − 1)²`; `Mean` over `N` is WGAN-GP's penalty.
///
/// Derivative `2λ(nᵢ − 1)·gᵢ/nᵢ`, 0 for the whole sample when `nᵢ = 0` (torch's norm
/// backward at 0).
pub fn gradient_penalty(
    grads: ArrayViewD<'_, f64>,
    lambda: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let (n, per) = batch_dims(grads.shape(), "gradient_penalty grads");
    let scale = sample_scale(n, reduction, grad_scale);
    let g = flat(&grads);
    let mut losses = Vec::with_capacity(n);
    let mut out = vec![0.0; g.len()];
    for i in 0..n {
        let gi = &g[i * per..(i + 1) * per];
        let norm = norm2(gi);
        let r = norm - 1.0;
        losses.push(lambda * r * r);
        if norm != 0.0 {
            let f = scale * 2.0 * lambda * (r / norm);
            for (o, &x) in out[i * per..(i + 1) * per].iter_mut().zip(gi) {
                *o = f * x;
            }
        }
    }
    LossGrad {
        loss: reduce_samples(losses, reduction),
        grad: shaped(grads.shape(), out),
    }
}

/// WGAN-GP interpolates `x̂ = εᵢ·real + (1 − εᵢ)·fake`, with `eps` of shape `[N]` broadcast
/// over sample `i` of the `[N, ...]` inputs (no gradient).
pub fn gan_interpolate(
    real: ArrayViewD<'_, f64>,
    fake: ArrayViewD<'_, f64>,
    eps: ArrayViewD<'_, f64>,
) -> ArrayD<f64> {
    assert_eq!(real.shape(), fake.shape(), "real and fake shapes differ");
    let (n, per) = batch_dims(real.shape(), "gan_interpolate real");
    assert_eq!(eps.shape(), &[n], "eps must be [N] with N = {n}");
    let (r, f, e) = (flat(&real), flat(&fake), flat(&eps));
    let out = r
        .iter()
        .zip(f.iter())
        .enumerate()
        .map(|(k, (&x, &z))| {
            let t = e[k / per];
            t * x + (1.0 - t) * z
        })
        .collect();
    shaped(real.shape(), out)
}

/// Reduction of [`kl_div`], torch's `reduction=` of `F.kl_div`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KlReduction {
    /// Point-wise losses, the input's shape.
    None,
    /// Sum divided by `input.shape[0]` (by 1 for a 0-d input): the true KL per sample.
    BatchMean,
    /// Sum of the point-wise losses.
    Sum,
    /// Sum divided by the number of elements.
    Mean,
}

/// torch `xlogy(x, y)`: NaN if `y` is NaN, else 0 if `x = 0`, else `x·ln y`.
fn xlogy(x: f64, y: f64) -> f64 {
    if y.is_nan() {
        f64::NAN
    } else if x == 0.0 {
        0.0
    } else {
        x * y.ln()
    }
}

/// torch `F.kl_div(input, target, reduction, log_target)`, `input = ln q` (shapes equal).
/// Point-wise:
///
/// * `log_target = false`: `xlogy(t, t) − t·input` (0 where `t = 0`, NaN where `t` is NaN or
///   negative), derivative `−t`;
/// * `log_target = true`: `eᵗ·(t − input)`, derivative `−eᵗ`.
///
/// `BatchMean` divides the sum by `input.shape[0]` (1 for a 0-d input), `Mean` by the
/// element count; an empty input gives loss 0 (where torch would divide 0 by 0). The
/// gradient is w.r.t. `input` only.
pub fn kl_div(
    input: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: KlReduction,
    log_target: bool,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        input.shape(),
        target.shape(),
        "input and target shapes differ"
    );
    let divisor = match reduction {
        KlReduction::None | KlReduction::Sum => 1,
        KlReduction::BatchMean => input.shape().first().copied().unwrap_or(1),
        KlReduction::Mean => input.len(),
    };
    let gs = if divisor == 0 {
        grad_scale
    } else {
        grad_scale / divisor as f64
    };
    let (losses, grad): (Vec<f64>, Vec<f64>) = flat(&input)
        .iter()
        .zip(flat(&target).iter())
        .map(|(&x, &t)| {
            if log_target {
                let e = t.exp();
                (e * (t - x), -gs * e)
            } else {
                (xlogy(t, t) - t * x, -gs * t)
            }
        })
        .unzip();
    let loss = match reduction {
        KlReduction::None => shaped(input.shape(), losses),
        _ if divisor == 0 => scalar(0.0),
        _ => scalar(losses.iter().sum::<f64>() / divisor as f64),
    };
    LossGrad {
        loss,
        grad: shaped(input.shape(), grad),
    }
}

/// VAE KL of `N(μ, e^{lv})` from `N(0, 1)`, `mu` and `logvar` `[N, L...]`: per sample
/// `−½·β·Σⱼ(1 + lv − μ² − e^{lv})`, evaluated as `½·β·Σⱼ(μ² + (e^{lv} − 1 − lv))` with
/// `e^{lv} − 1 − lv` free of cancellation near 0. `Mean` over `N` is the usual VAE
/// convention (sum over latent dimensions, mean over the batch).
///
/// `grads = [β·μ, β·½·(e^{lv} − 1)]` (`exp_m1`), times the reduction's scaling.
pub fn gaussian_kl(
    mu: ArrayViewD<'_, f64>,
    logvar: ArrayViewD<'_, f64>,
    beta: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> MultiGrad {
    assert_eq!(mu.shape(), logvar.shape(), "mu and logvar shapes differ");
    let (n, per) = batch_dims(mu.shape(), "gaussian_kl mu");
    let scale = sample_scale(n, reduction, grad_scale) * beta;
    let (m, lv) = (flat(&mu), flat(&logvar));
    let losses = (0..n)
        .map(|i| {
            let s: f64 = (i * per..(i + 1) * per)
                .map(|k| m[k] * m[k] + exp_m1_minus_x(lv[k]))
                .sum();
            0.5 * beta * s
        })
        .collect();
    let g_mu = m.iter().map(|&x| scale * x).collect();
    let g_lv = lv.iter().map(|&x| scale * 0.5 * x.exp_m1()).collect();
    MultiGrad {
        loss: reduce_samples(losses, reduction),
        grads: vec![shaped(mu.shape(), g_mu), shaped(logvar.shape(), g_lv)],
    }
}

/// Diffusion noise-prediction MSE, `pred = ε̂` and `noise = ε` `[N, ...]`: per element
/// `wᵢ·(ε̂ − ε)²`, `wᵢ` the weight of the element's sample (`weights` `[N]`, e.g. min-SNR;
/// `None` means 1). Element-wise reduction over all elements (`Mean` divides by the total
/// count, so with equal sample sizes it is `meanᵢ wᵢ·meanⱼ r²`). Derivative `2wᵢ(ε̂ − ε)`
/// w.r.t. `pred` only.
pub fn diffusion_mse(
    pred: ArrayViewD<'_, f64>,
    noise: ArrayViewD<'_, f64>,
    weights: Option<ArrayViewD<'_, f64>>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    let (n, per) = batch_dims(pred.shape(), "diffusion_mse pred");
    let w: Option<Vec<f64>> = weights.map(|w| {
        assert_eq!(w.shape(), &[n], "weights must be [N] with N = {n}");
        w.iter().copied().collect()
    });
    elementwise_indexed(pred, noise, reduction, grad_scale, |k, p, t| {
        let wi = w.as_ref().map_or(1.0, |w| w[k / per]);
        let r = p - t;
        (wi * r * r, 2.0 * wi * r)
    })
}

/// NCSN denoising score matching of `score = s_θ(x̃, σ)` with `noisy = x̃`, `clean = x`
/// (all `[N, ...]`) and `sigma` `[N]`, each `σᵢ > 0`: per sample
/// `½σᵢ²·‖sᵢ + (x̃ᵢ − xᵢ)/σᵢ²‖²`, evaluated as `½‖σᵢsᵢ + (x̃ᵢ − xᵢ)/σᵢ‖²` (no σ² overflow or
/// underflow). Per-sample reduction (`Mean` over `N` is NCSN's).
///
/// Derivative w.r.t. `score` only: `σᵢ·(σᵢsᵢ + (x̃ᵢ − xᵢ)/σᵢ)`.
pub fn score_matching(
    score: ArrayViewD<'_, f64>,
    noisy: ArrayViewD<'_, f64>,
    clean: ArrayViewD<'_, f64>,
    sigma: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        score.shape(),
        noisy.shape(),
        "score and noisy shapes differ"
    );
    assert_eq!(
        score.shape(),
        clean.shape(),
        "score and clean shapes differ"
    );
    let (n, per) = batch_dims(score.shape(), "score_matching score");
    assert_eq!(sigma.shape(), &[n], "sigma must be [N] with N = {n}");
    assert!(
        sigma.iter().all(|&s| s > 0.0),
        "score_matching sigmas must be > 0"
    );
    let scale = sample_scale(n, reduction, grad_scale);
    let (s, xt, x, sg) = (flat(&score), flat(&noisy), flat(&clean), flat(&sigma));
    let mut losses = Vec::with_capacity(n);
    let mut grad = vec![0.0; s.len()];
    for (i, &si) in sg.iter().enumerate() {
        let mut acc = 0.0;
        for k in i * per..(i + 1) * per {
            let u = si * s[k] + (xt[k] - x[k]) / si;
            acc += u * u;
            grad[k] = scale * si * u;
        }
        losses.push(0.5 * acc);
    }
    LossGrad {
        loss: reduce_samples(losses, reduction),
        grad: shaped(score.shape(), grad),
    }
}

/// Feature distance of [`perceptual`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PerceptualDistance {
    /// Mean squared difference, derivative `2(p − t)/n`.
    Mse,
    /// Mean absolute difference, derivative `sign(p − t)/n` (0 at 0).
    L1,
}

/// Panics unless the per-layer lists have the same length.
fn check_layers(pred: usize, target: usize, weights: usize) {
    assert_eq!(pred, target, "pred and target have different layer counts");
    assert_eq!(pred, weights, "one weight per layer required");
}

/// Perceptual (feature reconstruction) loss over layers `l`: `Σₗ wₗ·mean(dist(pₗ − tₗ))`
/// with `dist` = `r²` (`Mse`) or `|r|` (`L1`); `pred[l]` and `target[l]` share a shape; an
/// empty layer contributes 0. `grads[l] = wₗ·dist'(r)/nₗ`, one per pred layer.
pub fn perceptual(
    pred: &[ArrayViewD<'_, f64>],
    target: &[ArrayViewD<'_, f64>],
    weights: &[f64],
    distance: PerceptualDistance,
    grad_scale: f64,
) -> MultiGrad {
    check_layers(pred.len(), target.len(), weights.len());
    let mut loss = 0.0;
    let mut grads = Vec::with_capacity(pred.len());
    for ((p, t), &w) in pred.iter().zip(target).zip(weights) {
        let out = elementwise(
            p.view(),
            t.view(),
            Reduction::Mean,
            w * grad_scale,
            |p, t| {
                let r = p - t;
                match distance {
                    PerceptualDistance::Mse => (r * r, 2.0 * r),
                    PerceptualDistance::L1 => (r.abs(), sign(r)),
                }
            },
        );
        loss += w * out.loss[[]];
        grads.push(out.grad);
    }
    MultiGrad {
        loss: scalar(loss),
        grads,
    }
}

/// `(B, C, S)` of a feature map `[B, C, ...]`, `S` the product of the dimensions after the
/// second (1 for `[B, C]`).
fn feature_dims(shape: &[usize]) -> (usize, usize, usize) {
    assert!(
        shape.len() >= 2,
        "features must be [B, C, ...], got {shape:?}"
    );
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Row-major `[B, C, C]` Gram matrices `F_b F_bᵀ / (C·S)` of `f` laid out `[B, C, S]`
/// (exactly symmetric: each pair `i ≤ j` is computed once; all zero when `C·S = 0`).
fn gram_flat(f: &[f64], b: usize, c: usize, s: usize) -> Vec<f64> {
    let norm = if c * s == 0 { 1.0 } else { (c * s) as f64 };
    let mut g = vec![0.0; b * c * c];
    for bi in 0..b {
        let fb = &f[bi * c * s..(bi + 1) * c * s];
        let gb = &mut g[bi * c * c..(bi + 1) * c * c];
        for i in 0..c {
            for j in i..c {
                let dot: f64 = fb[i * s..(i + 1) * s]
                    .iter()
                    .zip(&fb[j * s..(j + 1) * s])
                    .map(|(x, y)| x * y)
                    .sum();
                gb[i * c + j] = dot / norm;
                gb[j * c + i] = dot / norm;
            }
        }
    }
    g
}

/// Gram matrices of a feature map `[B, C, H, W]` (or `[B, C, S...]`: the dimensions after
/// the second are flattened; `[B, C]` has `S = 1`): `G_b = F_b F_bᵀ / (C·H·W)`, `[B, C, C]`.
/// All zero when `C·H·W = 0`.
pub fn gram(features: ArrayViewD<'_, f64>) -> ArrayD<f64> {
    let (b, c, s) = feature_dims(features.shape());
    shaped(&[b, c, c], gram_flat(&flat(&features), b, c, s))
}

/// Style (Gram matrix) loss over layers `l`: `Σₗ wₗ·mean_{B·C·C}(G(pₗ) − G(tₗ))²`, with
/// [`gram`]. `pred[l]` and `target[l]` must agree on `B` and `C` (their spatial sizes may
/// differ); a layer with `B·C = 0` contributes 0.
///
/// With `D = G(pₗ) − G(tₗ)` (symmetric), `dL/dF_b = wₗ·(2/(B·C·C))·2·D_b F_b/(C·H·W)`.
pub fn style(
    pred: &[ArrayViewD<'_, f64>],
    target: &[ArrayViewD<'_, f64>],
    weights: &[f64],
    grad_scale: f64,
) -> MultiGrad {
    check_layers(pred.len(), target.len(), weights.len());
    let mut loss = 0.0;
    let mut grads = Vec::with_capacity(pred.len());
    for ((p, t), &w) in pred.iter().zip(target).zip(weights) {
        let (b, c, s) = feature_dims(p.shape());
        let (bt, ct, st) = feature_dims(t.shape());
        assert_eq!(
            (b, c),
            (bt, ct),
            "pred and target layers differ in batch or channels"
        );
        let fp = flat(p);
        let mut d = gram_flat(&fp, b, c, s);
        for (x, y) in d.iter_mut().zip(gram_flat(&flat(t), bt, ct, st)) {
            *x -= y;
        }
        let count = b * c * c;
        let mut g = vec![0.0; fp.len()];
        if count > 0 {
            loss += w * d.iter().map(|x| x * x).sum::<f64>() / count as f64;
            let norm = if c * s == 0 { 1.0 } else { (c * s) as f64 };
            let coef = grad_scale * w * 4.0 / (count as f64 * norm);
            for bi in 0..b {
                let db = &d[bi * c * c..(bi + 1) * c * c];
                let fb = &fp[bi * c * s..(bi + 1) * c * s];
                let gb = &mut g[bi * c * s..(bi + 1) * c * s];
                for i in 0..c {
                    let gi = &mut gb[i * s..(i + 1) * s];
                    for j in 0..c {
                        let dij = coef * db[i * c + j];
                        for (o, &x) in gi.iter_mut().zip(&fb[j * s..(j + 1) * s]) {
                            *o += dij * x;
                        }
                    }
                }
            }
        }
        grads.push(shaped(p.shape(), g));
    }
    MultiGrad {
        loss: scalar(loss),
        grads,
    }
}

/// CycleGAN cycle consistency: `λ·(mean|F(G(x)) − x| + mean|G(F(y)) − y|)` with
/// `reconstructed_x = F(G(x))`, `reconstructed_y = G(F(y))` (each pair of one shape; an empty
/// pair contributes 0). `grads = [λ·sign(rₓ)/nₓ, λ·sign(r_y)/n_y]` (0 at 0), w.r.t.
/// `reconstructed_x` and `reconstructed_y`.
pub fn cycle_consistency(
    reconstructed_x: ArrayViewD<'_, f64>,
    x: ArrayViewD<'_, f64>,
    reconstructed_y: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    lambda: f64,
    grad_scale: f64,
) -> MultiGrad {
    let l1 = |p: ArrayViewD<'_, f64>, t: ArrayViewD<'_, f64>| {
        elementwise(p, t, Reduction::Mean, lambda * grad_scale, |p, t| {
            let r = p - t;
            (r.abs(), sign(r))
        })
    };
    let fx = l1(reconstructed_x, x);
    let fy = l1(reconstructed_y, y);
    MultiGrad {
        loss: scalar(lambda * (fx.loss[[]] + fy.loss[[]])),
        grads: vec![fx.grad, fy.grad],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{all_finite, check_fd, close, loss_of, Rng, GS};
    use ndarray::{arr1, arr2, arr3, Array3};

    const KINDS: [GanKind; 5] = [
        GanKind::Minimax,
        GanKind::NonSaturating,
        GanKind::LeastSquares,
        GanKind::Wasserstein,
        GanKind::Hinge,
    ];
    const REDUCED: [Reduction; 2] = [Reduction::Mean, Reduction::Sum];
    const LN2: f64 = std::f64::consts::LN_2;

    /// Uniform in `[lo, hi)` of `shape`, every element at least `gap` away from each kink.
    fn rand(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64, kinks: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_fn(IxDyn(shape), |_| loop {
            let v = rng.uniform(lo, hi);
            if kinks.iter().all(|k| (v - k).abs() > 0.05) {
                break v;
            }
        })
    }

    fn multi(out: LossGrad) -> MultiGrad {
        MultiGrad {
            loss: out.loss,
            grads: vec![out.grad],
        }
    }

    fn same(a: &ArrayD<f64>, b: &ArrayD<f64>) -> bool {
        a.shape() == b.shape()
            && a.iter()
                .zip(b.iter())
                .all(|(x, y)| close(*x, *y, 1e-12, 1e-15))
    }

    /// `None`'s per-element / per-sample losses sum to `Sum`, with `Sum`'s gradients.
    fn none_matches_sum(none: &MultiGrad, sum: &MultiGrad, len: usize) {
        assert_eq!(none.loss.shape(), &[len]);
        assert!(close(none.loss.sum(), loss_of(sum), 1e-12, 1e-12));
        assert_eq!(none.grads.len(), sum.grads.len());
        for (a, b) in none.grads.iter().zip(&sum.grads) {
            assert!(same(a, b));
        }
    }

    #[test]
    fn gan_discriminator_grads_match_finite_differences() {
        let mut rng = Rng(11);
        let shapes: [(&[usize], &[usize]); 5] = [
            (&[1], &[1]),
            (&[1, 3], &[4]),
            (&[2, 3], &[3, 2]),
            (&[5], &[2, 2, 1]),
            (&[1, 1, 2], &[1]),
        ];
        for (sr, sf) in shapes {
            let kinks = [-1.0, 0.0, 1.0, 0.3, -0.4];
            let inputs = vec![
                rand(&mut rng, sr, -2.5, 2.5, &kinks),
                rand(&mut rng, sf, -2.5, 2.5, &kinks),
            ];
            for kind in KINDS {
                for red in REDUCED {
                    check_fd(
                        &format!("gan_d {kind:?} {red:?} {sr:?}/{sf:?}"),
                        &inputs,
                        |x| gan_discriminator(x[0].view(), x[1].view(), kind, -0.4, 0.3, red, GS),
                    );
                }
            }
        }
    }

    #[test]
    fn gan_generator_grads_match_finite_differences() {
        let mut rng = Rng(12);
        for shape in [&[1][..], &[1, 4], &[3, 2], &[2, 1, 3]] {
            let inputs = vec![rand(&mut rng, shape, -3.0, 3.0, &[])];
            for kind in KINDS {
                for red in REDUCED {
                    check_fd(&format!("gan_g {kind:?} {red:?} {shape:?}"), &inputs, |x| {
                        multi(gan_generator(x[0].view(), kind, 0.8, red, GS))
                    });
                }
            }
        }
    }

    #[test]
    fn gan_closed_forms() {
        let z = arr1(&[0.0]).into_dyn();
        let d = |r: &[f64], f: &[f64], k, red| {
            gan_discriminator(
                arr1(r).into_dyn().view(),
                arr1(f).into_dyn().view(),
                k,
                0.0,
                1.0,
                red,
                1.0,
            )
        };
        // BCE at logit 0 is ln 2 for either target; gradients ∓½.
        for k in [GanKind::Minimax, GanKind::NonSaturating] {
            let out = d(&[0.0], &[0.0], k, Reduction::Sum);
            assert!(close(loss_of(&out), 2.0 * LN2, 1e-15, 0.0));
            assert_eq!(out.grads[0][[0]], -0.5);
            assert_eq!(out.grads[1][[0]], 0.5);
        }
        let ls = d(&[2.0], &[3.0], GanKind::LeastSquares, Reduction::Sum);
        assert_eq!(loss_of(&ls), 5.0);
        assert_eq!((ls.grads[0][[0]], ls.grads[1][[0]]), (1.0, 3.0));
        let w = d(&[1.0, 2.0], &[3.0], GanKind::Wasserstein, Reduction::Mean);
        assert_eq!(loss_of(&w), 1.5);
        assert_eq!(w.grads[0], arr1(&[-0.5, -0.5]).into_dyn());
        let h = d(&[0.5, 2.0], &[-2.0, 0.5], GanKind::Hinge, Reduction::Mean);
        assert_eq!(loss_of(&h), 1.0);
        assert_eq!(h.grads[0], arr1(&[-0.5, 0.0]).into_dyn());
        assert_eq!(h.grads[1], arr1(&[0.0, 0.5]).into_dyn());
        // Hinge kinks have derivative 0.
        let k = d(&[1.0], &[-1.0], GanKind::Hinge, Reduction::Sum);
        assert_eq!(loss_of(&k), 0.0);
        assert_eq!((k.grads[0][[0]], k.grads[1][[0]]), (0.0, 0.0));
        // An empty fake set adds 0 to the mean.
        let e = d(&[1.0, 3.0], &[], GanKind::LeastSquares, Reduction::Mean);
        assert_eq!(loss_of(&e), 1.0);
        assert_eq!(e.grads[1].len(), 0);

        let g = |k, c| gan_generator(z.view(), k, c, Reduction::Sum, 1.0);
        assert!(close(g(GanKind::Minimax, 1.0).loss[[]], -LN2, 1e-15, 0.0));
        assert!(close(
            g(GanKind::NonSaturating, 1.0).loss[[]],
            LN2,
            1e-15,
            0.0
        ));
        assert_eq!(g(GanKind::Minimax, 1.0).grad[[0]], -0.5);
        assert_eq!(g(GanKind::NonSaturating, 1.0).grad[[0]], -0.5);
        assert_eq!(g(GanKind::LeastSquares, 1.0).loss[[]], 0.5);
        assert_eq!(g(GanKind::LeastSquares, 2.0).grad[[0]], -2.0);
        let two = arr1(&[2.0]).into_dyn();
        for k in [GanKind::Wasserstein, GanKind::Hinge] {
            let out = gan_generator(two.view(), k, 1.0, Reduction::Mean, 1.0);
            assert_eq!((out.loss[[]], out.grad[[0]]), (-2.0, -1.0));
        }
    }

    #[test]
    fn gan_none_reduction_is_sum_per_element() {
        let mut rng = Rng(13);
        let real = rand(&mut rng, &[2, 2], -2.0, 2.0, &[-1.0, 1.0]);
        let fake = rand(&mut rng, &[3], -2.0, 2.0, &[-1.0, 1.0]);
        for kind in KINDS {
            let f = |red| gan_discriminator(real.view(), fake.view(), kind, 0.1, 0.9, red, GS);
            let (none, sum) = (f(Reduction::None), f(Reduction::Sum));
            none_matches_sum(&none, &sum, 7);
            // Real's terms first, then fake's.
            let r0 = gan_discriminator(
                real.view(),
                fake.slice(ndarray::s![0..0]).into_dyn(),
                kind,
                0.1,
                0.9,
                Reduction::None,
                GS,
            );
            for i in 0..4 {
                assert_eq!(none.loss[[i]], r0.loss[[i]]);
            }
            let g = |red| multi(gan_generator(fake.view(), kind, 0.9, red, GS));
            none_matches_sum(&g(Reduction::None), &g(Reduction::Sum), 3);
        }
    }

    #[test]
    fn gan_extreme_logits_stay_finite_and_nan_propagates() {
        let x = arr1(&[1e4, -1e4, 1e300, -1e300]).into_dyn();
        for kind in KINDS {
            // ½(1e300)² overflows in any arithmetic: LeastSquares gets the logits ±1e4 only.
            let x = if kind == GanKind::LeastSquares {
                x.slice(ndarray::s![0..2]).into_dyn()
            } else {
                x.view()
            };
            for red in REDUCED {
                let d = gan_discriminator(x.view(), x.view(), kind, 0.0, 1.0, red, GS);
                assert!(all_finite(&d), "{kind:?}");
                let g = multi(gan_generator(x.view(), kind, 1.0, red, GS));
                assert!(all_finite(&g), "{kind:?}");
            }
        }
        // Saturated BCE keeps its tiny value instead of rounding to 0 or ∞.
        let big = arr1(&[40.0]).into_dyn();
        let out = gan_generator(big.view(), GanKind::NonSaturating, 1.0, Reduction::Sum, 1.0);
        assert!(close(out.loss[[]], (-40.0f64).exp(), 1e-12, 0.0));
        let nan = arr1(&[0.5, f64::NAN]).into_dyn();
        let ok = arr1(&[0.5]).into_dyn();
        for kind in KINDS {
            for red in [Reduction::Mean, Reduction::Sum] {
                let d = gan_discriminator(nan.view(), ok.view(), kind, 0.0, 1.0, red, GS);
                assert!(loss_of(&d).is_nan(), "{kind:?} real");
                let d = gan_discriminator(ok.view(), nan.view(), kind, 0.0, 1.0, red, GS);
                assert!(loss_of(&d).is_nan(), "{kind:?} fake");
                let g = gan_generator(nan.view(), kind, 1.0, red, GS);
                assert!(g.loss[[]].is_nan(), "{kind:?} generator");
            }
        }
    }

    #[test]
    fn gradient_penalty_grads_match_finite_differences() {
        let mut rng = Rng(21);
        for shape in [&[1, 1][..], &[1, 3], &[3, 2, 2], &[4, 5], &[2]] {
            let inputs = vec![rand(&mut rng, shape, -1.0, 1.0, &[0.0])];
            for lambda in [10.0, 0.5] {
                for red in REDUCED {
                    check_fd(&format!("gp {shape:?} {lambda} {red:?}"), &inputs, |x| {
                        multi(gradient_penalty(x[0].view(), lambda, red, GS))
                    });
                }
            }
        }
        let g = rand(&mut rng, &[3, 2, 2], -1.0, 1.0, &[]);
        let f = |red| multi(gradient_penalty(g.view(), 10.0, red, GS));
        none_matches_sum(&f(Reduction::None), &f(Reduction::Sum), 3);
    }

    #[test]
    fn gradient_penalty_closed_form_zero_and_extremes() {
        let g = arr2(&[[3.0, 4.0], [0.0, 0.0]]).into_dyn();
        let out = gradient_penalty(g.view(), 10.0, Reduction::None, 1.0);
        assert_eq!(out.loss, arr1(&[160.0, 10.0]).into_dyn());
        // 2·10·(5 − 1)/5·[3, 4]; a zero sample has gradient 0.
        assert!(same(
            &out.grad,
            &arr2(&[[48.0, 64.0], [0.0, 0.0]]).into_dyn()
        ));
        let mean = gradient_penalty(g.view(), 10.0, Reduction::Mean, 1.0);
        assert_eq!(mean.loss[[]], 85.0);
        assert!(same(
            &mean.grad,
            &arr2(&[[24.0, 32.0], [0.0, 0.0]]).into_dyn()
        ));
        // Unit norm: no penalty, no gradient.
        let unit = arr2(&[[0.6, -0.8]]).into_dyn();
        let u = gradient_penalty(unit.view(), 10.0, Reduction::Sum, 1.0);
        assert!(u.loss[[]] < 1e-28 && u.grad.iter().all(|v| v.abs() < 1e-14));
        // Norms whose squares overflow: the gradient stays finite; so does a small-λ loss.
        let huge = ArrayD::from_elem(IxDyn(&[2, 3]), 1e200);
        let out = gradient_penalty(huge.view(), 10.0, Reduction::Mean, GS);
        assert!(out.grad.iter().all(|v| v.is_finite()));
        assert!(close(out.grad[[0, 0]], GS * 10.0 * 1e200, 1e-12, 0.0));
        let out = gradient_penalty(huge.view(), 1e-300, Reduction::Mean, GS);
        assert!(close(out.loss[[]], 3e100, 1e-12, 0.0), "{}", out.loss[[]]);
        let tiny = ArrayD::from_elem(IxDyn(&[1, 4]), 1e-200);
        let out = gradient_penalty(tiny.view(), 1.0, Reduction::Sum, 1.0);
        assert!(close(out.grad[[0, 0]], -2.0 * 0.5, 1e-12, 0.0));
        let nan = arr2(&[[0.0, f64::NAN], [1.0, 1.0]]).into_dyn();
        assert!(gradient_penalty(nan.view(), 1.0, Reduction::Mean, 1.0).loss[[]].is_nan());
        let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        assert_eq!(
            gradient_penalty(empty.view(), 1.0, Reduction::Mean, 1.0).loss[[]],
            0.0
        );
    }

    #[test]
    fn gan_interpolate_mixes_per_sample() {
        let real = arr2(&[[1.0, 2.0], [3.0, 4.0]]).into_dyn();
        let fake = arr2(&[[0.0, 0.0], [-1.0, 1.0]]).into_dyn();
        let eps = arr1(&[0.25, 1.0]).into_dyn();
        let x = gan_interpolate(real.view(), fake.view(), eps.view());
        assert_eq!(x, arr2(&[[0.25, 0.5], [3.0, 4.0]]).into_dyn());
    }

    #[test]
    fn kl_div_grads_match_finite_differences() {
        let mut rng = Rng(31);
        for shape in [&[1][..], &[2, 3], &[1, 4], &[3, 2, 2]] {
            for log_target in [false, true] {
                let (lo, hi) = if log_target { (-3.0, 1.0) } else { (0.01, 2.0) };
                let input = rand(&mut rng, shape, -3.0, 0.5, &[]);
                let target = rand(&mut rng, shape, lo, hi, &[]);
                for red in [KlReduction::BatchMean, KlReduction::Sum, KlReduction::Mean] {
                    check_fd(
                        &format!("kl {shape:?} {log_target} {red:?}"),
                        std::slice::from_ref(&input),
                        |x| multi(kl_div(x[0].view(), target.view(), red, log_target, GS)),
                    );
                }
                let f = |red| multi(kl_div(input.view(), target.view(), red, log_target, GS));
                let (none, sum) = (f(KlReduction::None), f(KlReduction::Sum));
                assert_eq!(none.loss.shape(), shape);
                assert!(close(none.loss.sum(), loss_of(&sum), 1e-12, 1e-12));
                assert!(same(&none.grads[0], &sum.grads[0]));
                let n = input.len() as f64;
                let mean = f(KlReduction::Mean);
                assert!(close(loss_of(&mean) * n, loss_of(&sum), 1e-12, 0.0));
                let bm = f(KlReduction::BatchMean);
                let b = shape[0] as f64;
                assert!(close(loss_of(&bm) * b, loss_of(&sum), 1e-12, 0.0));
                assert!(same(&(&bm.grads[0] * b), &sum.grads[0]));
            }
        }
    }

    #[test]
    fn kl_div_closed_forms_and_special_targets() {
        let p = arr2(&[[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]]).into_dyn();
        let lp = p.mapv(f64::ln);
        let zero = kl_div(lp.view(), p.view(), KlReduction::BatchMean, false, 1.0);
        assert!(zero.loss[[]].abs() < 1e-16);
        assert!(same(&zero.grad, &(&p * -0.5)));
        let zero = kl_div(lp.view(), lp.view(), KlReduction::Sum, true, 1.0);
        assert!(zero.loss[[]].abs() < 1e-16);
        assert!(same(&zero.grad, &-&p));
        let one = |i: f64, t: f64, lt| {
            let (i, t) = (arr1(&[i]).into_dyn(), arr1(&[t]).into_dyn());
            kl_div(i.view(), t.view(), KlReduction::Sum, lt, 1.0)
        };
        assert!(close(
            one(0.25f64.ln(), 0.5, false).loss[[]],
            0.5 * LN2,
            1e-15,
            0.0
        ));
        assert!(close(
            one(0.25f64.ln(), 0.5f64.ln(), true).loss[[]],
            0.5 * LN2,
            1e-15,
            0.0
        ));
        // xlogy: target 0 contributes 0 (gradient −0); negative and NaN targets give NaN.
        let z = one(-3.0, 0.0, false);
        assert_eq!((z.loss[[]], z.grad[[0]]), (0.0, 0.0));
        assert!(one(-3.0, -0.5, false).loss[[]].is_nan());
        assert!(one(-3.0, f64::NAN, false).loss[[]].is_nan());
        assert!(one(f64::NAN, 0.5, false).loss[[]].is_nan());
        assert!(one(f64::NAN, 0.5, true).loss[[]].is_nan());
        // 0-d input: batchmean divides by 1.
        let (i0, t0) = (scalar(-1.0), scalar(0.5));
        let bm = kl_div(i0.view(), t0.view(), KlReduction::BatchMean, false, 1.0);
        assert!(close(bm.loss[[]], 0.5 * (0.5f64.ln() + 1.0), 1e-15, 0.0));
        assert_eq!(bm.grad[[]], -0.5);
        let e = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        for red in [KlReduction::BatchMean, KlReduction::Mean] {
            assert_eq!(kl_div(e.view(), e.view(), red, false, 1.0).loss[[]], 0.0);
        }
    }

    #[test]
    fn gaussian_kl_grads_match_finite_differences() {
        let mut rng = Rng(41);
        for shape in [&[1, 1][..], &[1, 4], &[3, 2], &[2, 2, 3], &[3]] {
            let inputs = vec![
                rand(&mut rng, shape, -1.5, 1.5, &[]),
                rand(&mut rng, shape, -2.0, 1.0, &[]),
            ];
            for beta in [1.0, 0.25] {
                for red in REDUCED {
                    check_fd(&format!("gkl {shape:?} {beta} {red:?}"), &inputs, |x| {
                        gaussian_kl(x[0].view(), x[1].view(), beta, red, GS)
                    });
                }
                let f = |red| gaussian_kl(inputs[0].view(), inputs[1].view(), beta, red, GS);
                none_matches_sum(&f(Reduction::None), &f(Reduction::Sum), shape[0]);
            }
        }
    }

    #[test]
    fn gaussian_kl_closed_forms() {
        let z = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
        let out = gaussian_kl(z.view(), z.view(), 1.0, Reduction::Mean, 1.0);
        assert_eq!(loss_of(&out), 0.0);
        assert!(out.grads.iter().all(|g| g.iter().all(|&v| v == 0.0)));
        let mu = arr2(&[[1.0, 0.0]]).into_dyn();
        let lv = arr2(&[[0.0, LN2]]).into_dyn();
        // ½·1 + ½(2 − 1 − ln 2), times β = 2.
        let out = gaussian_kl(mu.view(), lv.view(), 2.0, Reduction::Sum, 1.0);
        assert!(close(loss_of(&out), 1.0 + (1.0 - LN2), 1e-15, 0.0));
        assert_eq!(out.grads[0], arr2(&[[2.0, 0.0]]).into_dyn());
        assert!(same(&out.grads[1], &arr2(&[[0.0, 1.0]]).into_dyn()));
        // Near lv = 0 the loss keeps its relative precision: ½(e^lv − 1 − lv) ≈ lv²/4.
        let small = arr2(&[[1e-8]]).into_dyn();
        let zero = arr2(&[[0.0]]).into_dyn();
        let out = gaussian_kl(zero.view(), small.view(), 1.0, Reduction::Mean, 1.0);
        let expected = 0.25e-16 * (1.0 + 1e-8 / 3.0);
        assert!(
            close(loss_of(&out), expected, 1e-14, 0.0),
            "{}",
            loss_of(&out)
        );
        for x in [-0.3, -0.2, 0.1, 0.24, 0.26, 2.0] {
            assert!(close(exp_m1_minus_x(x), x.exp() - 1.0 - x, 1e-13, 0.0));
        }
        let nan = arr2(&[[f64::NAN, 0.0]]).into_dyn();
        let lv = arr2(&[[0.0, 0.0]]).into_dyn();
        let out = gaussian_kl(nan.view(), lv.view(), 1.0, Reduction::Mean, 1.0);
        assert!(loss_of(&out).is_nan());
    }

    #[test]
    fn diffusion_mse_grads_and_forms() {
        let mut rng = Rng(51);
        for shape in [&[1][..], &[1, 1], &[2, 3], &[3, 2, 2]] {
            let noise = rand(&mut rng, shape, -1.0, 1.0, &[]);
            let w = rand(&mut rng, &shape[..1], 0.1, 5.0, &[]);
            let pred = vec![rand(&mut rng, shape, -1.0, 1.0, &[])];
            for weights in [None, Some(w.view())] {
                for red in REDUCED {
                    check_fd(&format!("dmse {shape:?} {red:?}"), &pred, |x| {
                        multi(diffusion_mse(
                            x[0].view(),
                            noise.view(),
                            weights.clone(),
                            red,
                            GS,
                        ))
                    });
                }
                let f = |red| {
                    multi(diffusion_mse(
                        pred[0].view(),
                        noise.view(),
                        weights.clone(),
                        red,
                        GS,
                    ))
                };
                let (none, sum) = (f(Reduction::None), f(Reduction::Sum));
                assert_eq!(none.loss.shape(), shape);
                assert!(close(none.loss.sum(), loss_of(&sum), 1e-12, 1e-12));
                assert!(same(&none.grads[0], &sum.grads[0]));
            }
        }
        let pred = arr2(&[[1.0, 2.0], [3.0, 4.0]]).into_dyn();
        let zero = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
        let w = arr1(&[1.0, 0.5]).into_dyn();
        let s = diffusion_mse(
            pred.view(),
            zero.view(),
            Some(w.view()),
            Reduction::Sum,
            1.0,
        );
        assert_eq!(s.loss[[]], 17.5);
        assert_eq!(s.grad, arr2(&[[2.0, 4.0], [3.0, 4.0]]).into_dyn());
        let m = diffusion_mse(
            pred.view(),
            zero.view(),
            Some(w.view()),
            Reduction::Mean,
            1.0,
        );
        // meanᵢ wᵢ·meanⱼ r² = ½(1·2.5 + 0.5·12.5).
        assert_eq!(m.loss[[]], 4.375);
        let u = diffusion_mse(pred.view(), zero.view(), None, Reduction::Mean, 1.0);
        assert_eq!(u.loss[[]], 7.5);
        let nan = arr2(&[[f64::NAN, 0.0], [0.0, 0.0]]).into_dyn();
        assert!(
            diffusion_mse(nan.view(), zero.view(), None, Reduction::Mean, 1.0).loss[[]].is_nan()
        );
    }

    #[test]
    fn score_matching_grads_and_forms() {
        let mut rng = Rng(61);
        for shape in [&[1][..], &[1, 3], &[3, 2], &[2, 2, 2]] {
            let noisy = rand(&mut rng, shape, -1.0, 1.0, &[]);
            let clean = rand(&mut rng, shape, -1.0, 1.0, &[]);
            let sigma = rand(&mut rng, &shape[..1], 0.2, 3.0, &[]);
            let score = vec![rand(&mut rng, shape, -2.0, 2.0, &[])];
            let f = |s: &ArrayD<f64>, red| {
                multi(score_matching(
                    s.view(),
                    noisy.view(),
                    clean.view(),
                    sigma.view(),
                    red,
                    GS,
                ))
            };
            for red in REDUCED {
                check_fd(&format!("dsm {shape:?} {red:?}"), &score, |x| f(&x[0], red));
            }
            none_matches_sum(
                &f(&score[0], Reduction::None),
                &f(&score[0], Reduction::Sum),
                shape[0],
            );
            // Against the σ² form ½σ²‖s + (x̃ − x)/σ²‖², per sample.
            let none = f(&score[0], Reduction::None);
            let per = score[0].len() / shape[0];
            let (s, xt, x) = (
                flat(&score[0].view()).into_owned(),
                flat(&noisy.view()).into_owned(),
                flat(&clean.view()).into_owned(),
            );
            for i in 0..shape[0] {
                let sg = sigma[[i]];
                let direct: f64 = (i * per..(i + 1) * per)
                    .map(|k| {
                        let u = s[k] + (xt[k] - x[k]) / (sg * sg);
                        0.5 * sg * sg * u * u
                    })
                    .sum();
                assert!(close(none.loss[[i]], direct, 1e-12, 1e-14));
            }
        }
        // Extreme σ: (x̃ − x) = σ·z keeps the loss at ½‖σs + z‖² ≈ ½‖z‖².
        let sigma = arr1(&[1e-200, 1e200]).into_dyn();
        let clean = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
        let noisy = arr2(&[[1e-200, -2e-200], [1e200, 2e200]]).into_dyn();
        let score = arr2(&[[0.5, 0.5], [-1e-200, 0.0]]).into_dyn();
        let out = score_matching(
            score.view(),
            noisy.view(),
            clean.view(),
            sigma.view(),
            Reduction::None,
            1.0,
        );
        assert!(close(out.loss[[0]], 2.5, 1e-15, 0.0));
        assert!(close(out.loss[[1]], 2.0, 1e-15, 0.0));
        assert!(out.grad.iter().all(|v| v.is_finite()));
        let nan = arr2(&[[f64::NAN, 0.0], [0.0, 0.0]]).into_dyn();
        let out = score_matching(
            nan.view(),
            noisy.view(),
            clean.view(),
            sigma.view(),
            Reduction::Mean,
            1.0,
        );
        assert!(out.loss[[]].is_nan());
    }

    #[test]
    #[should_panic(expected = "sigmas must be > 0")]
    fn score_matching_rejects_zero_sigma() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[1, 2]));
        let s = arr1(&[0.0]).into_dyn();
        score_matching(x.view(), x.view(), x.view(), s.view(), Reduction::Mean, 1.0);
    }

    #[test]
    fn perceptual_grads_and_forms() {
        let mut rng = Rng(71);
        let shapes: [&[usize]; 3] = [&[1, 2, 2, 2], &[2, 3], &[1]];
        let targets: Vec<ArrayD<f64>> = shapes
            .iter()
            .map(|s| rand(&mut rng, s, -1.0, 1.0, &[]))
            .collect();
        // pred = target ± a residual away from 0.
        let preds: Vec<ArrayD<f64>> = targets
            .iter()
            .map(|t| &rand(&mut rng, t.shape(), -1.0, 1.0, &[0.0]) + t)
            .collect();
        let weights = [1.0, 0.3, 2.0];
        for distance in [PerceptualDistance::Mse, PerceptualDistance::L1] {
            check_fd(&format!("perceptual {distance:?}"), &preds, |x| {
                let p: Vec<_> = x.iter().map(|a| a.view()).collect();
                let t: Vec<_> = targets.iter().map(|a| a.view()).collect();
                perceptual(&p, &t, &weights, distance, GS)
            });
        }
        let p = arr2(&[[1.0, -2.0]]).into_dyn();
        let t = ArrayD::<f64>::zeros(IxDyn(&[1, 2]));
        let e = ArrayD::<f64>::zeros(IxDyn(&[0, 2]));
        let mse = perceptual(
            &[p.view(), e.view()],
            &[t.view(), e.view()],
            &[2.0, 1.0],
            PerceptualDistance::Mse,
            1.0,
        );
        assert_eq!(loss_of(&mse), 5.0);
        assert_eq!(mse.grads[0], arr2(&[[2.0, -4.0]]).into_dyn());
        assert_eq!(mse.grads[1].shape(), &[0, 2]);
        let l1 = perceptual(
            &[p.view()],
            &[t.view()],
            &[2.0],
            PerceptualDistance::L1,
            1.0,
        );
        assert_eq!(loss_of(&l1), 3.0);
        assert_eq!(l1.grads[0], arr2(&[[1.0, -1.0]]).into_dyn());
        let l1 = perceptual(
            &[t.view()],
            &[t.view()],
            &[2.0],
            PerceptualDistance::L1,
            1.0,
        );
        assert_eq!(l1.grads[0], t);
        let nan = arr2(&[[f64::NAN, 0.0]]).into_dyn();
        let out = perceptual(
            &[nan.view()],
            &[t.view()],
            &[1.0],
            PerceptualDistance::L1,
            1.0,
        );
        assert!(loss_of(&out).is_nan());
    }

    #[test]
    fn gram_known_values() {
        let f = arr3(&[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]).into_dyn();
        let g = gram(f.view());
        let expected = arr3(&[[[14.0, 32.0], [32.0, 77.0]]]).into_dyn() / 6.0;
        assert!(same(&g, &expected));
        // [B, C, H, W] equals its [B, C, H·W] reshape.
        let mut rng = Rng(81);
        let f4 = rand(&mut rng, &[2, 3, 2, 2], -1.0, 1.0, &[]);
        let f3 = f4.clone().into_shape_with_order(IxDyn(&[2, 3, 4])).unwrap();
        assert!(same(&gram(f4.view()), &gram(f3.view())));
        let g = gram(f4.view());
        let naive = Array3::from_shape_fn((2, 3, 3), |(b, i, j)| {
            (0..2)
                .flat_map(|h| (0..2).map(move |w| (h, w)))
                .map(|(h, w)| f4[[b, i, h, w]] * f4[[b, j, h, w]])
                .sum::<f64>()
                / 12.0
        });
        assert!(same(&g, &naive.into_dyn()));
    }

    #[test]
    fn style_grads_and_forms() {
        let mut rng = Rng(91);
        let shapes: [&[usize]; 4] = [&[1, 2, 2, 2], &[2, 3, 4], &[1, 1, 1, 1], &[2, 2]];
        let preds: Vec<ArrayD<f64>> = shapes
            .iter()
            .map(|s| rand(&mut rng, s, -1.0, 1.0, &[]))
            .collect();
        let targets: Vec<ArrayD<f64>> = shapes
            .iter()
            .map(|s| rand(&mut rng, s, -1.0, 1.0, &[]))
            .collect();
        let weights = [1.0, 0.5, 3.0, 2.0];
        check_fd("style", &preds, |x| {
            let p: Vec<_> = x.iter().map(|a| a.view()).collect();
            let t: Vec<_> = targets.iter().map(|a| a.view()).collect();
            style(&p, &t, &weights, GS)
        });
        // A target with a different spatial size.
        let t2 = rand(&mut rng, &[1, 2, 3, 1], -1.0, 1.0, &[]);
        check_fd("style spatial", &preds[..1], |x| {
            style(&[x[0].view()], &[t2.view()], &[1.5], GS)
        });
        // The loss against the Gram definition; identical features give 0.
        let out = style(&[preds[1].view()], &[targets[1].view()], &[0.5], GS);
        let d = gram(preds[1].view()) - gram(targets[1].view());
        assert!(close(
            loss_of(&out),
            0.5 * d.mapv(|v| v * v).sum() / 18.0,
            1e-14,
            0.0
        ));
        let same_f = style(&[preds[0].view()], &[preds[0].view()], &[1.0], GS);
        assert_eq!(loss_of(&same_f), 0.0);
        assert!(same_f.grads[0].iter().all(|&v| v == 0.0));
        let e = ArrayD::<f64>::zeros(IxDyn(&[0, 2, 2]));
        assert_eq!(loss_of(&style(&[e.view()], &[e.view()], &[1.0], GS)), 0.0);
    }

    #[test]
    fn cycle_consistency_grads_and_forms() {
        let mut rng = Rng(101);
        for (sx, sy) in [(&[1][..], &[1][..]), (&[2, 3], &[1, 4]), (&[1, 2, 2], &[3])] {
            let x = rand(&mut rng, sx, -1.0, 1.0, &[]);
            let y = rand(&mut rng, sy, -1.0, 1.0, &[]);
            let inputs = vec![
                &rand(&mut rng, sx, -1.0, 1.0, &[0.0]) + &x,
                &rand(&mut rng, sy, -1.0, 1.0, &[0.0]) + &y,
            ];
            check_fd(&format!("cycle {sx:?} {sy:?}"), &inputs, |r| {
                cycle_consistency(r[0].view(), x.view(), r[1].view(), y.view(), 10.0, GS)
            });
        }
        let rx = arr1(&[1.0, -1.0, 0.0]).into_dyn();
        let x = ArrayD::<f64>::zeros(IxDyn(&[3]));
        let ry = arr1(&[2.0]).into_dyn();
        let y = arr1(&[1.0]).into_dyn();
        let out = cycle_consistency(rx.view(), x.view(), ry.view(), y.view(), 10.0, 1.0);
        assert!(close(loss_of(&out), 10.0 * (2.0 / 3.0 + 1.0), 1e-15, 0.0));
        assert!(same(
            &out.grads[0],
            &arr1(&[10.0 / 3.0, -10.0 / 3.0, 0.0]).into_dyn()
        ));
        assert_eq!(out.grads[1], arr1(&[10.0]).into_dyn());
        let e = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let out = cycle_consistency(e.view(), e.view(), ry.view(), y.view(), 10.0, 1.0);
        assert_eq!(loss_of(&out), 10.0);
        let nan = arr1(&[f64::NAN]).into_dyn();
        let out = cycle_consistency(nan.view(), y.view(), ry.view(), y.view(), 1.0, 1.0);
        assert!(loss_of(&out).is_nan());
    }
}
