//! Helpers of the reference's unit tests: a seeded generator, tolerances and the finite-
//! difference check every analytic gradient goes through.

use ndarray::{Array2, ArrayD};

use crate::MultiGrad;

pub(crate) const GS: f64 = 0.7;

/// A 64-bit LCG (Knuth's MMIX constants), top 53 bits as a uniform in [0, 1).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }

    pub(crate) fn matrix(&mut self, rows: usize, cols: usize) -> ArrayD<f64> {
        Array2::from_shape_fn((rows, cols), |_| self.uniform(-1.0, 1.0)).into_dyn()
    }

    pub(crate) fn labels(&mut self, n: usize, classes: usize) -> ArrayD<f64> {
        ArrayD::from_shape_fn(ndarray::IxDyn(&[n]), |_| {
            ((self.next() * classes as f64) as usize).min(classes - 1) as f64
        })
    }
}

pub(crate) fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * b.abs()
}

pub(crate) fn loss_of(out: &MultiGrad) -> f64 {
    assert_eq!(out.loss.ndim(), 0);
    out.loss[[]]
}

pub(crate) fn all_finite(out: &MultiGrad) -> bool {
    loss_of(out).is_finite() && out.grads.iter().all(|g| g.iter().all(|v| v.is_finite()))
}

/// Central finite differences of `f`'s loss w.r.t. every element of every input, against
/// `grads / GS`: `h = 1e-6·max(|x|, 1)`, tolerance `1e-6·max|g| + 1e-5·|g|`.
pub(crate) fn check_fd(
    label: &str,
    inputs: &[ArrayD<f64>],
    f: impl Fn(&[ArrayD<f64>]) -> MultiGrad,
) {
    let out = f(inputs);
    assert!(all_finite(&out), "{label}: not finite");
    assert_eq!(out.grads.len(), inputs.len(), "{label}: one grad per input");
    let largest = out
        .grads
        .iter()
        .flat_map(|g| g.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (which, (x, g)) in inputs.iter().zip(&out.grads).enumerate() {
        assert_eq!(g.shape(), x.shape(), "{label}: grad {which} shape");
        for (i, &gi) in g.iter().enumerate() {
            let xi = x.as_slice().unwrap()[i];
            let h = 1e-6 * xi.abs().max(1.0);
            let at = |delta: f64| {
                let mut moved = inputs.to_vec();
                moved[which].as_slice_mut().unwrap()[i] += delta;
                loss_of(&f(&moved))
            };
            let fd = GS * (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - gi).abs() <= 1e-6 * largest + 1e-5 * gi.abs(),
                "{label}: input {which} element {i}: fd {fd} vs analytic {gi}"
            );
        }
    }
}
