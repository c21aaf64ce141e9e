//! Data generation and comparison shared by the conformance suite and the benches.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// A small deterministic generator (xorshift64*), so every case is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` f32 values uniform in [lo, hi).
    pub fn uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.unit()) as f32)
            .collect()
    }
}

/// f32 data as an f64 array of `shape` (exact).
pub fn to_f64(data: &[f32], shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), data.iter().map(|&x| f64::from(x)).collect())
        .expect("data length matches shape")
}

/// Tolerance `|got − want| ≤ atol + rtol·|want|`, with `atol = atol_frac · max |want|`; NaN
/// matches only NaN and an infinity only itself.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol_frac: f64,
}

/// f32 GPU results against the f64 reference, element-wise: every loss of the regression family
/// is evaluated in f32 with stable forms, so 1e-4 relative (a few hundred ulps) bounds the
/// rounding of one element, and 1e-6 of the largest magnitude absorbs cancellation near zero
/// (balanced L1's `(b d + 1) ln(b d / β + 1) − b d` for tiny d).
pub const ELEMENTWISE: Tolerance = Tolerance {
    rtol: 1e-4,
    atol_frac: 1e-6,
};

/// Reduced losses: f32 accumulation over up to 1e8 terms in per-invocation runs and trees.
pub const REDUCED: Tolerance = Tolerance {
    rtol: 5e-4,
    atol_frac: 0.0,
};

/// The loss's tolerance under `reduction`: [`ELEMENTWISE`] per element, [`REDUCED`] for a sum.
pub fn loss_tolerance(reduction: wgloss::Reduction) -> Tolerance {
    if reduction == wgloss::Reduction::None {
        ELEMENTWISE
    } else {
        REDUCED
    }
}

/// Sinkhorn against its f64 reference: the soft-mins exponentiate `h_j − C_ij/ε` of magnitude up
/// to `diameter^p / ε` (≈ 2,400 for unit clouds at blur 0.05), whose f32 rounding (6e-8 relative)
/// becomes ~1.5e-4 relative error in each transport weight; the potentials carry it through
/// the loop. 2e-3 relative, and 1e-4 of the largest gradient for entries that nearly cancel.
pub const SINKHORN: Tolerance = Tolerance {
    rtol: 2e-3,
    atol_frac: 1e-4,
};

/// Compares and returns a message naming the count, the worst error and its index on failure.
pub fn compare(
    what: &str,
    got: &[f32],
    want: ArrayViewD<'_, f64>,
    tol: Tolerance,
) -> Result<(), String> {
    let got: Vec<f64> = got.iter().map(|&g| f64::from(g)).collect();
    compare_f64(what, &got, want, tol)
}

/// [`compare`] for values computed in f64 (the reference against an anchor).
pub fn compare_f64(
    what: &str,
    got: &[f64],
    want: ArrayViewD<'_, f64>,
    tol: Tolerance,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let owned;
    let want: &[f64] = match want.as_slice() {
        Some(s) => s,
        None => {
            owned = want.iter().copied().collect::<Vec<_>>();
            &owned
        }
    };
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, w| m.max(w.abs()));
    let atol = tol.atol_frac * scale;
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64, f64, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        let (ok, err) = if w.is_nan() || g.is_nan() {
            (w.is_nan() && g.is_nan(), f64::INFINITY)
        } else if w.is_infinite() || g.is_infinite() {
            (g == w, f64::INFINITY)
        } else {
            let err = (g - w).abs();
            (err <= atol + tol.rtol * w.abs(), err)
        };
        if !ok {
            bad += 1;
            if worst.is_none_or(|(_, e, _, _)| err > e) {
                worst = Some((i, err, g, w));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, err, g, w)) => Err(format!(
            "{what}: {bad} of {} values out of tolerance {tol:?} (atol {atol:.3e}); worst at index \
             {i}: got {g:e}, want {w:e}, error {err:.3e}",
            got.len()
        )),
    }
}

/// A call's loss and gradient against the reference's (`what` names the case in the messages):
/// the mismatches found, none when both agree. A 16-bit gradient is held to [`compare_half`].
pub fn compare_output(
    gpu: &wgloss::Gpu,
    what: &str,
    out: &wgloss::LossOutput,
    want: &wgloss_ref::LossGrad,
    loss_tol: Tolerance,
    grad_tol: Tolerance,
) -> Vec<String> {
    let read = |t: &wgloss::Tensor| t.to_vec(gpu).map_err(|e| format!("{what}: {e}"));
    let checks = [
        read(&out.loss)
            .and_then(|got| compare(&format!("{what} loss"), &got, want.loss.view(), loss_tol)),
        read(&out.grad).and_then(|got| match out.grad.dtype() {
            dtype if dtype.is_half() => compare_half(&got, want.grad.view(), dtype, grad_tol)
                .map_err(|e| format!("{what} grad: {e}")),
            _ => compare(&format!("{what} grad"), &got, want.grad.view(), grad_tol),
        }),
    ];
    checks.into_iter().filter_map(Result::err).collect()
}

/// [`compare_output`] as an assertion: panics with every mismatch.
pub fn assert_output(
    gpu: &wgloss::Gpu,
    what: &str,
    out: &wgloss::LossOutput,
    want: &wgloss_ref::LossGrad,
    loss_tol: Tolerance,
    grad_tol: Tolerance,
) {
    let mismatches = compare_output(gpu, what, out, want, loss_tol, grad_tol);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// A gradient stored as `dtype` against the reference's: within `tol` of it (the f32
/// computation) plus one step of the 16-bit type at its magnitude (a value that rounds either
/// way), 2^-24 absolute for f16's subnormals.
pub fn compare_half(
    got: &[f32],
    want: ArrayViewD<'_, f64>,
    dtype: wgloss::DType,
    tol: Tolerance,
) -> Result<(), String> {
    let (bits, min_step) = match dtype {
        wgloss::DType::F16 => (10, 2f64.powi(-24)),
        _ => (7, 0.0),
    };
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    if got.len() != want.len() {
        return Err(format!("{} values, want {}", got.len(), want.len()));
    }
    let bad: Vec<String> = got
        .iter()
        .zip(want.iter())
        .enumerate()
        .filter(|&(_, (&g, &w))| {
            let step = (w.abs() * 2f64.powi(-bits)).max(min_step);
            let allowed = tol.rtol * w.abs() + tol.atol_frac * scale + step;
            !(f64::from(g) - w).abs().le(&allowed)
        })
        .take(3)
        .map(|(i, (g, w))| format!("index {i}: got {g:e}, want {w:e}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// A loss that computes in f32 arrays, called on 16-bit inputs, against its f32 call on the
/// same (rounded) inputs: the loss bit for bit, and each gradient of type `dtype` and, value for
/// value, the f32 gradient rounded to it.
pub fn assert_like_f32_call(
    gpu: &wgloss::Gpu,
    what: &str,
    (got_loss, got_grads): (&wgloss::Tensor, &[&wgloss::Tensor]),
    (want_loss, want_grads): (&wgloss::Tensor, &[&wgloss::Tensor]),
    dtype: wgloss::DType,
) {
    let values = |t: &wgloss::Tensor| t.to_vec(gpu).unwrap();
    assert_eq!(values(got_loss), values(want_loss), "{what}: loss");
    assert_eq!(got_grads.len(), want_grads.len(), "{what}: gradients");
    for (j, (got, want)) in got_grads.iter().zip(want_grads).enumerate() {
        assert_eq!(got.dtype(), dtype, "{what}: gradient {j}'s type");
        let rounded: Vec<f32> = values(want).into_iter().map(|x| dtype.round(x)).collect();
        assert_eq!(values(got), rounded, "{what}: gradient {j}");
    }
}
