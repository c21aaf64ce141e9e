//! F4, SSIM: kornia's `ssim_loss` (`kornia.losses.ssim_loss` over `kornia.metrics.ssim`) of a
//! predicted image `x1 = pred` against a target image `x2 = target`, both `[N, C, H, W]`.
//!
//! Gaussian window of odd size `K = 2r + 1` (`r = K / 2`) and standard deviation `σ`, as
//! kornia's `get_gaussian_kernel1d` / `gaussian` for odd sizes:
//!
//! ```text
//! w_k = exp(−(k − r)² / (2σ²)) / Σ_j exp(−(j − r)² / (2σ²)),   k = 0..K−1
//! ```
//!
//! `G` is the separable blur of each plane `(n, c)`, horizontal then vertical (kornia's
//! `filter2d_separable`, correlation, `border_type='reflect'`), each pass padding only its own
//! axis by `r` on both sides:
//!
//! ```text
//! (G x)[y, x] = Σ_j Σ_k w_j w_k x[ρ_H(y + j − r), ρ_W(x + k − r)]
//! ρ_n(i) = 0                              if n = 1
//!        = m       if m < n, else p − m   otherwise, with p = 2(n − 1), m = i mod p (in [0, p))
//! ```
//!
//! `ρ_n` is torch's `F.pad(mode='reflect')` (mirror without repeating the edge: −1 → 1,
//! n → n − 2) wherever torch accepts the padding (`r < n`). Torch refuses `r ≥ n`; this reference
//! extends the mirror periodically (period `2(n − 1)`, the reflection of a reflection), and a line
//! of one sample maps every index to 0, so every image size has a value (a 1×1 plane has
//! `G x = x`).
//!
//! Then, per output pixel,
//!
//! ```text
//! μ1 = G x1,  μ2 = G x2,  E11 = G(x1²),  E22 = G(x2²),  E12 = G(x1 x2)
//! σ1² = E11 − μ1²,  σ2² = E22 − μ2²,  σ12 = E12 − μ1 μ2
//! C1 = (k1·max_val)²,  C2 = (k2·max_val)²
//! A1 = 2μ1μ2 + C1,  A2 = 2σ12 + C2,  B1 = μ1² + μ2² + C1,  B2 = σ1² + σ2² + C2
//! SSIM = A1 A2 / (B1 B2 + eps)
//! loss map = clamp((1 − SSIM) / 2, 0, 1)
//! ```
//!
//! Padding `Same` keeps the `H × W` map; `Valid` crops it by `r` on every side (kornia `_crop`
//! with `_compute_padding([K, K])`), leaving `(H − K + 1) × (W − K + 1)`, whose windows never
//! reach the padding. Reduction `None` returns the map `[N, C, H', W']`, `Mean` its mean (0 for
//! an empty map; torch gives NaN there), `Sum` its sum. kornia fixes `σ = 1.5`, `k1 = 0.01`,
//! `k2 = 0.03` (the catalogue defaults); here they are arguments.
//!
//! Gradient w.r.t. `x1` (the target is a constant). With `D = B1 B2 + eps`, `S = SSIM`, and the
//! clamp passing the gradient where `0 ≤ (1 − S)/2 ≤ 1` (inclusive, as torch's `clamp`):
//!
//! ```text
//! dL/dS = −s/2 inside the clamp, 0 outside;  s = grad_scale (/ |map| under Mean)
//! ∂S/∂μ1  = 2μ2(A2 − A1)/D − 2μ1 A1A2 (B2 − B1)/D²  = 2(μ2(A2 − A1) − μ1 S (B2 − B1)) / D
//! ∂S/∂E11 = −A1A2 B1/D² = −S B1 / D
//! ∂S/∂E12 = 2 A1 / D
//! a = dL/dμ1, b = dL/dE11, c = dL/dE12   (per output pixel, 0 outside the Valid crop)
//! dL/dx1 = Gᵀa + 2 x1 ⊙ Gᵀb + x2 ⊙ Gᵀc
//! ```
//!
//! `Gᵀ` is computed by scatter (each output pixel adds `w_j w_k ·` its value into the source
//! index `ρ` picks), so it does not reuse the gather of the forward pass. Under `None` the
//! gradient is that of the map's sum, times `grad_scale`. A NaN input makes the loss NaN.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::{scalar, LossGrad, Reduction};

/// Which part of the SSIM map is kept (kornia's `padding=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SsimPadding {
    /// The whole `H × W` map, blurred under reflect padding.
    Same,
    /// Only pixels whose window lies inside the image: the map cropped by `K / 2` per side.
    Valid,
}

/// The normalised 1-D Gaussian window.
///
/// `w_k = exp(−(k − K/2)² / (2σ²)) / Σ_j exp(−(j − K/2)² / (2σ²))` for `k = 0..K−1`, kornia's
/// `get_gaussian_kernel1d(K, σ)` for odd `K`. Panics on an even (or zero) `window` or on
/// `sigma` that is not > 0.
pub fn gaussian_window(window: usize, sigma: f64) -> Vec<f64> {
    assert!(
        window % 2 == 1,
        "window must be odd and positive, got {window}"
    );
    assert!(sigma > 0.0, "sigma must be positive, got {sigma}");
    let r = (window / 2) as f64;
    let raw: Vec<f64> = (0..window)
        .map(|k| {
            let d = k as f64 - r;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter().map(|v| v / total).collect()
}

/// `ρ_n(i)`: the sample that position `i` of a line of `n ≥ 1` samples reads under reflect
/// padding, extended periodically (period `2(n − 1)`); every index is 0 when `n = 1`.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period) as usize;
    if m < n {
        m
    } else {
        period as usize - m
    }
}

/// Position `o + k − r` of tap `k` around output index `o`.
fn tap(o: usize, k: usize, r: usize) -> isize {
    o as isize + k as isize - r as isize
}

/// One `h × w` plane (row-major) and the window.
#[derive(Clone, Copy)]
struct Plane<'a> {
    h: usize,
    w: usize,
    win: &'a [f64],
}

impl Plane<'_> {
    /// `G src` by gather: horizontal pass, then vertical.
    fn blur(&self, src: &[f64]) -> Vec<f64> {
        let (h, w, r) = (self.h, self.w, self.win.len() / 2);
        let mut rows = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                rows[y * w + x] = (self.win.iter().enumerate())
                    .map(|(k, wk)| wk * src[y * w + reflect(tap(x, k, r), w)])
                    .sum();
            }
        }
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = (self.win.iter().enumerate())
                    .map(|(k, wk)| wk * rows[reflect(tap(y, k, r), h) * w + x])
                    .sum();
            }
        }
        out
    }

    /// `Gᵀ g` by scatter: the adjoint of the vertical pass, then of the horizontal one.
    fn blur_adjoint(&self, g: &[f64]) -> Vec<f64> {
        let (h, w, r) = (self.h, self.w, self.win.len() / 2);
        let mut rows = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                for (k, wk) in self.win.iter().enumerate() {
                    rows[reflect(tap(y, k, r), h) * w + x] += wk * g[y * w + x];
                }
            }
        }
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                for (k, wk) in self.win.iter().enumerate() {
                    out[y * w + reflect(tap(x, k, r), w)] += wk * rows[y * w + x];
                }
            }
        }
        out
    }
}

/// kornia `ssim_loss`: the loss map `clamp((1 − SSIM)/2, 0, 1)` of `pred` against `target`
/// (`[N, C, H, W]`), reduced, and its gradient w.r.t. `pred` times `grad_scale`.
///
/// See the module docs for the formulas; kornia's defaults are `window = 11`, `sigma = 1.5`,
/// `max_val = 1.0`, `k1 = 0.01`, `k2 = 0.03`, `eps = 1e-12`, `padding = Same`. The loss under
/// `None` has the map's shape `[N, C, H', W']` (`H' = H`, or `H − K + 1` under `Valid`). Panics on
/// mismatched shapes, inputs that are not 4-D, an even or zero `window`, `sigma ≤ 0`, and under
/// `Valid` on an image smaller than the window (`H < K` or `W < K`).
#[allow(clippy::too_many_arguments)]
pub fn ssim_loss(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    window: usize,
    sigma: f64,
    max_val: f64,
    k1: f64,
    k2: f64,
    eps: f64,
    padding: SsimPadding,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        pred.shape(),
        target.shape(),
        "pred and target shapes differ"
    );
    assert_eq!(
        pred.ndim(),
        4,
        "ssim expects [N, C, H, W] images, got shape {:?}",
        pred.shape()
    );
    let win = gaussian_window(window, sigma);
    let (planes, h, w) = (
        pred.shape()[0] * pred.shape()[1],
        pred.shape()[2],
        pred.shape()[3],
    );
    let (crop, oh, ow) = match padding {
        SsimPadding::Same => (0, h, w),
        SsimPadding::Valid => {
            assert!(
                h >= window && w >= window,
                "valid padding needs an image at least as large as the window, got {h}x{w} \
                 with window {window}"
            );
            (window / 2, h - window + 1, w - window + 1)
        }
    };
    let c1 = (k1 * max_val).powi(2);
    let c2 = (k2 * max_val).powi(2);
    let count = planes * oh * ow;
    let scale = match reduction {
        Reduction::Mean if count > 0 => grad_scale / count as f64,
        _ => grad_scale,
    };

    let x1: Vec<f64> = pred.iter().copied().collect();
    let x2: Vec<f64> = target.iter().copied().collect();
    let plane = Plane { h, w, win: &win };
    let hw = h * w;
    let mut losses = Vec::with_capacity(count);
    let mut grad = vec![0.0; x1.len()];
    for p in 0..planes {
        let a = &x1[p * hw..(p + 1) * hw];
        let b = &x2[p * hw..(p + 1) * hw];
        let prod = |f: fn(f64, f64) -> f64| -> Vec<f64> {
            a.iter().zip(b).map(|(&u, &v)| f(u, v)).collect()
        };
        let mu1 = plane.blur(a);
        let mu2 = plane.blur(b);
        let e11 = plane.blur(&prod(|u, _| u * u));
        let e22 = plane.blur(&prod(|_, v| v * v));
        let e12 = plane.blur(&prod(|u, v| u * v));
        // dL/dμ1, dL/dE11, dL/dE12 per pixel; 0 outside the crop.
        let (mut da, mut db, mut dc) = (vec![0.0; hw], vec![0.0; hw], vec![0.0; hw]);
        for y in crop..crop + oh {
            for x in crop..crop + ow {
                let i = y * w + x;
                let (m1, m2) = (mu1[i], mu2[i]);
                let a1 = 2.0 * m1 * m2 + c1;
                let a2 = 2.0 * (e12[i] - m1 * m2) + c2;
                let b1 = m1 * m1 + m2 * m2 + c1;
                let b2 = (e11[i] - m1 * m1) + (e22[i] - m2 * m2) + c2;
                let den = b1 * b2 + eps;
                let s = a1 * a2 / den;
                let v = (1.0 - s) / 2.0;
                losses.push(v.clamp(0.0, 1.0));
                let dl_ds = if (0.0..=1.0).contains(&v) {
                    -0.5 * scale
                } else {
                    0.0
                };
                da[i] = dl_ds * 2.0 * (m2 * (a2 - a1) - m1 * s * (b2 - b1)) / den;
                db[i] = dl_ds * -s * b1 / den;
                dc[i] = dl_ds * 2.0 * a1 / den;
            }
        }
        let (ga, gb, gc) = (
            plane.blur_adjoint(&da),
            plane.blur_adjoint(&db),
            plane.blur_adjoint(&dc),
        );
        for (i, g) in grad[p * hw..(p + 1) * hw].iter_mut().enumerate() {
            *g = ga[i] + 2.0 * a[i] * gb[i] + b[i] * gc[i];
        }
    }

    let grad = ArrayD::from_shape_vec(pred.raw_dim(), grad).expect("length matches shape");
    let loss = match reduction {
        Reduction::None => {
            let shape = IxDyn(&[pred.shape()[0], pred.shape()[1], oh, ow]);
            ArrayD::from_shape_vec(shape, losses).expect("length matches shape")
        }
        Reduction::Sum => scalar(losses.iter().sum()),
        Reduction::Mean if count == 0 => scalar(0.0),
        Reduction::Mean => scalar(losses.iter().sum::<f64>() / count as f64),
    };
    LossGrad { loss, grad }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Marsaglia's xorshift64, enough for reproducible test data.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            lo + (hi - lo) * (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn image(&mut self, shape: &[usize]) -> ArrayD<f64> {
            ArrayD::from_shape_simple_fn(IxDyn(shape), || self.uniform(0.0, 1.0))
        }
    }

    const EPS: f64 = 1e-12;

    /// kornia's defaults but for window, padding and reduction.
    fn run(
        p: &ArrayD<f64>,
        t: &ArrayD<f64>,
        window: usize,
        padding: SsimPadding,
        reduction: Reduction,
        grad_scale: f64,
    ) -> LossGrad {
        ssim_loss(
            p.view(),
            t.view(),
            window,
            1.5,
            1.0,
            0.01,
            0.03,
            EPS,
            padding,
            reduction,
            grad_scale,
        )
    }

    /// `|a − b| ≤ rel·max(|a|, |b|) + abs`; false when either is NaN.
    fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
    }

    /// [`close`] for every pair; the failure names the count, the
    /// worst pair and its index.
    fn assert_close(label: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
        assert_eq!(got.len(), want.len(), "{label}: lengths differ");
        let bad: Vec<usize> = (0..got.len())
            .filter(|&i| !close(got[i], want[i], rel, abs))
            .collect();
        if let Some(&worst) = bad.iter().max_by(|&&i, &&j| {
            (got[i] - want[i])
                .abs()
                .total_cmp(&(got[j] - want[j]).abs())
        }) {
            panic!(
                "{label}: {} of {} differ; worst at {worst}: got {}, want {}",
                bad.len(),
                got.len(),
                got[worst],
                want[worst]
            );
        }
    }

    /// Central differences (h = 1e-6) of the reduced loss against the analytic gradient.
    fn check_fd(shape: &[usize], window: usize, padding: SsimPadding, seed: u64) {
        let mut rng = Rng(seed);
        let p = rng.image(shape);
        let t = rng.image(shape);
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let label = format!("{shape:?} K={window} {padding:?} {reduction:?}");
            let out = run(&p, &t, window, padding, reduction, 1.5);
            assert_eq!(out.loss.ndim(), 0, "{label}");
            assert!(out.loss[[]].is_finite(), "{label}");
            let h = 1e-6;
            let fd: Vec<f64> = (0..p.len())
                .map(|i| {
                    let at = |d: f64| {
                        let mut q = p.clone();
                        q.as_slice_mut().unwrap()[i] += d;
                        run(&q, &t, window, padding, reduction, 1.0).loss[[]]
                    };
                    1.5 * (at(h) - at(-h)) / (2.0 * h)
                })
                .collect();
            let floor = match reduction {
                Reduction::Sum => 1e-7,
                _ => 1e-9,
            };
            let got: Vec<f64> = out.grad.iter().copied().collect();
            assert_close(&label, &got, &fd, 1e-5, floor);
        }
    }

    #[test]
    fn ssim_grad_matches_finite_differences() {
        use SsimPadding::{Same, Valid};
        let cases: &[(&[usize], usize, SsimPadding)] = &[
            (&[2, 2, 7, 9], 3, Same),
            (&[2, 2, 7, 9], 3, Valid),
            (&[2, 2, 7, 9], 5, Same),
            (&[2, 2, 7, 9], 5, Valid),
            (&[1, 2, 7, 9], 11, Same),
            (&[1, 2, 12, 13], 11, Valid),
            // r ≥ n: periodic reflection (torch would refuse the padding).
            (&[1, 2, 5, 5], 11, Same),
            (&[2, 1, 2, 9], 5, Same),
            (&[1, 2, 1, 1], 3, Same),
            (&[1, 2, 1, 1], 11, Same),
            (&[1, 1, 1, 6], 5, Same),
        ];
        for (seed, &(shape, window, padding)) in cases.iter().enumerate() {
            check_fd(shape, window, padding, 0x9e37_79b9 + seed as u64);
        }
    }

    #[test]
    fn gaussian_window_matches_kornia() {
        // kornia gaussian(11, 1.5): exp(−d²/4.5) for d = 0..5 is 1, 0.800737, 0.411112,
        // 0.135335, 0.028566, 0.003866; the sum is 1 + 2·1.379616 = 3.759233, so the centre
        // is 1/3.759233 = 0.266012 and its neighbours 0.800737/3.759233 = 0.213006 (kornia
        // prints 0.2660, 0.2130, 0.1094, 0.0360, 0.0076, 0.0010).
        let w = gaussian_window(11, 1.5);
        assert_eq!(w.len(), 11);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        let want = [
            0.00102838008447911,
            0.007598758135239185,
            0.03600077212843083,
            0.10936068950970002,
            0.2130055377112537,
            0.26601172486179436,
        ];
        for (k, wk) in want.iter().enumerate() {
            assert!((w[k] - wk).abs() < 1e-15, "w[{k}] = {}", w[k]);
            assert!(
                (w[10 - k] - wk).abs() < 1e-15,
                "w[{}] = {}",
                10 - k,
                w[10 - k]
            );
        }
        for (window, sigma) in [(1, 1.5), (3, 0.7), (5, 2.0)] {
            let w = gaussian_window(window, sigma);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        }
        assert_eq!(gaussian_window(1, 1.5), vec![1.0]);
    }

    #[test]
    fn reflect_is_torch_reflect_extended_periodically() {
        // torch F.pad(mode='reflect') of [0, 1, 2, 3] by 3: [3, 2, 1, | 0, 1, 2, 3, | 2, 1, 0].
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        // Beyond torch's limit: period 2(n − 1) = 4 for n = 3.
        let got: Vec<usize> = (-6..9).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, [2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0]);
        let got: Vec<usize> = (-3..5).map(|i| reflect(i, 2)).collect();
        assert_eq!(got, [1, 0, 1, 0, 1, 0, 1, 0]);
        assert!((-5..5).all(|i| reflect(i, 1) == 0));
    }

    #[test]
    fn blur_pads_each_axis_by_reflection() {
        // A 1×3 row [1, 2, 4] with window [u, v, u]: the row is padded to [2, 1, 2, 4, 2]; the
        // single row reflects onto itself vertically, where the weights sum to 1.
        let win = gaussian_window(3, 1.0);
        let (u, v) = (win[0], win[1]);
        let plane = Plane {
            h: 1,
            w: 3,
            win: &win,
        };
        let got = plane.blur(&[1.0, 2.0, 4.0]);
        let want = [
            2.0 * u + v + 2.0 * u,
            u + 2.0 * v + 4.0 * u,
            2.0 * u + 4.0 * v + 2.0 * u,
        ];
        assert_close("row", &got, &want, 1e-15, 0.0);
        // The same values in a 3×1 column: the axes are not mixed up.
        let plane = Plane {
            h: 3,
            w: 1,
            win: &win,
        };
        assert_close("column", &plane.blur(&[1.0, 2.0, 4.0]), &want, 1e-15, 0.0);
        // Gᵀ is the adjoint of G: <G x, y> = <x, Gᵀ y>, here with r ≥ n along one axis.
        let win = gaussian_window(7, 1.3);
        let plane = Plane {
            h: 3,
            w: 5,
            win: &win,
        };
        let mut rng = Rng(7);
        let x: Vec<f64> = (0..15).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let y: Vec<f64> = (0..15).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        let (lhs, rhs) = (dot(&plane.blur(&x), &y), dot(&x, &plane.blur_adjoint(&y)));
        assert!((lhs - rhs).abs() < 1e-14, "{lhs} vs {rhs}");
    }

    #[test]
    fn identical_images_give_zero_loss() {
        let mut rng = Rng(11);
        for (shape, padding) in [
            (&[2, 3, 8, 7][..], SsimPadding::Same),
            (&[2, 3, 12, 11][..], SsimPadding::Valid),
            (&[1, 1, 4, 4][..], SsimPadding::Same),
        ] {
            let x = rng.image(shape);
            let none = run(&x, &x, 11, padding, Reduction::None, 1.0);
            assert!(none.loss.iter().all(|l| l.abs() < 1e-9), "{shape:?}");
            assert!(none.grad.iter().all(|g| g.abs() < 1e-6), "{shape:?}");
            let mean = run(&x, &x, 11, padding, Reduction::Mean, 1.0);
            assert!(mean.loss[[]].abs() < 1e-9);
        }
    }

    #[test]
    fn constant_images_match_the_hand_value() {
        // x1 ≡ 0.2, x2 ≡ 0.6: every blur is exact up to Σw = 1, so μ1 = 0.2, μ2 = 0.6 and all
        // variances vanish: A1 = 2·0.12 + 1e-4 = 0.2401, A2 = C2 = 9e-4,
        // B1 = 0.04 + 0.36 + 1e-4 = 0.4001, B2 = C2 = 9e-4;
        // SSIM = 0.2401·9e-4 / (0.4001·9e-4 + 1e-12) ≈ 0.6000999733, loss ≈ 0.1999500133.
        let ssim: f64 = 0.2401 * 9e-4 / (0.4001 * 9e-4 + 1e-12);
        let want = (1.0 - ssim) / 2.0;
        assert!((want - 0.1999500133).abs() < 1e-10, "{want}");
        let p = ArrayD::from_elem(IxDyn(&[2, 1, 6, 8]), 0.2);
        let t = ArrayD::from_elem(IxDyn(&[2, 1, 6, 8]), 0.6);
        for (padding, oh, ow) in [(SsimPadding::Same, 6, 8), (SsimPadding::Valid, 2, 4)] {
            let none = run(&p, &t, 5, padding, Reduction::None, 1.0);
            assert_eq!(none.loss.shape(), &[2, 1, oh, ow]);
            assert!(none.loss.iter().all(|l| (l - want).abs() < 1e-12));
            let mean = run(&p, &t, 5, padding, Reduction::Mean, 1.0);
            assert!((mean.loss[[]] - want).abs() < 1e-12);
        }
    }

    #[test]
    fn reductions_agree() {
        let mut rng = Rng(5);
        let (p, t) = (rng.image(&[2, 3, 9, 8]), rng.image(&[2, 3, 9, 8]));
        for padding in [SsimPadding::Same, SsimPadding::Valid] {
            let none = run(&p, &t, 5, padding, Reduction::None, 2.0);
            let sum = run(&p, &t, 5, padding, Reduction::Sum, 2.0);
            let mean = run(&p, &t, 5, padding, Reduction::Mean, 2.0);
            let count = none.loss.len();
            assert_eq!(
                count,
                if padding == SsimPadding::Same {
                    432
                } else {
                    6 * 5 * 4
                }
            );
            assert_eq!(none.grad.shape(), p.shape());
            let total: f64 = none.loss.iter().sum();
            assert!((sum.loss[[]] - total).abs() < 1e-12);
            assert!((mean.loss[[]] - total / count as f64).abs() < 1e-14);
            assert_eq!(none.grad, sum.grad);
            let scaled: Vec<f64> = sum.grad.iter().map(|g| g / count as f64).collect();
            let got: Vec<f64> = mean.grad.iter().copied().collect();
            assert_close("mean grad", &got, &scaled, 1e-10, 1e-16);
            assert!(none.loss.iter().all(|l| (0.0..=1.0).contains(l)));
        }
    }

    #[test]
    fn empty_batch_gives_zero() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3, 4, 4]));
        let mean = run(&x, &x, 3, SsimPadding::Same, Reduction::Mean, 1.0);
        assert_eq!(mean.loss[[]], 0.0);
        assert_eq!(mean.grad.shape(), &[0, 3, 4, 4]);
        let none = run(&x, &x, 3, SsimPadding::Valid, Reduction::None, 1.0);
        assert_eq!(none.loss.shape(), &[0, 3, 2, 2]);
    }

    #[test]
    fn nan_propagates_to_the_loss() {
        let mut rng = Rng(3);
        let (mut p, t) = (rng.image(&[1, 1, 5, 5]), rng.image(&[1, 1, 5, 5]));
        p[[0, 0, 2, 2]] = f64::NAN;
        let out = run(&p, &t, 3, SsimPadding::Same, Reduction::Mean, 1.0);
        assert!(out.loss[[]].is_nan());
    }

    #[test]
    fn bad_arguments_panic() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[1, 1, 5, 5]));
        let y = ArrayD::<f64>::zeros(IxDyn(&[1, 1, 5, 6]));
        let flat = ArrayD::<f64>::zeros(IxDyn(&[5, 5]));
        let panics = |f: &dyn Fn() -> LossGrad| catch_unwind(AssertUnwindSafe(f)).is_err();
        use SsimPadding::{Same, Valid};
        // Valid with a window larger than the image.
        assert!(panics(&|| run(&x, &x, 7, Valid, Reduction::Mean, 1.0)));
        assert!(panics(&|| run(&y, &y, 7, Valid, Reduction::Mean, 1.0)));
        // Even or zero windows.
        assert!(panics(&|| run(&x, &x, 4, Same, Reduction::Mean, 1.0)));
        assert!(panics(&|| run(&x, &x, 0, Same, Reduction::Mean, 1.0)));
        // Mismatched or non-4-D shapes.
        assert!(panics(&|| run(&x, &y, 3, Same, Reduction::Mean, 1.0)));
        assert!(panics(&|| run(&flat, &flat, 3, Same, Reduction::Mean, 1.0)));
        // A window exactly the image size is valid: a 1×1 map.
        let out = run(&x, &x, 5, Valid, Reduction::None, 1.0);
        assert_eq!(out.loss.shape(), &[1, 1, 1, 1]);
    }
}
