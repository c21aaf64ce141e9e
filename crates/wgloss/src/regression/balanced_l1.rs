use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Result};
use crate::kernel::regression::{BALANCED_L1, BALANCED_L1_HALF, BALANCED_L1_VEC4};
use crate::{ElementwiseLoss, Reduction};

/// Balanced L1, mmdet `balanced_l1_loss` (Libra R-CNN).
///
/// ```text
/// d = |r|, b = e^{γ/α} − 1
/// d < β: α/b (b d + 1) ln(b d/β + 1) − α d
/// else:  γ d + γ/b − α β
/// ```
/// # Shapes
/// `pred`, `target`: any shape, equal. Defaults: alpha 0.5, gamma 1.5, beta 1.0 (all > 0),
/// reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalancedL1 {
    /// Promotion of inlier gradients (> 0).
    pub alpha: f32,
    /// Bound of outlier gradients (> 0).
    pub gamma: f32,
    /// Inlier/outlier threshold (> 0).
    pub beta: f32,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for BalancedL1 {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            gamma: 1.5,
            beta: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for BalancedL1 {
    fn spec(&self, _shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        check_param("alpha", self.alpha.into(), "> 0", self.alpha > 0.0)?;
        check_param("gamma", self.gamma.into(), "> 0", self.gamma > 0.0)?;
        check_param("beta", self.beta.into(), "> 0", self.beta > 0.0)?;
        crate::config::check_grad_scale(self.grad_scale)?;
        let b = (f64::from(self.gamma) / f64::from(self.alpha)).exp_m1();
        check_param(
            "gamma / alpha",
            b,
            "small enough that e^{gamma/alpha} is a finite f32",
            b < f64::from(f32::MAX),
        )?;
        let (alpha, gamma, beta) = (
            f64::from(self.alpha),
            f64::from(self.gamma),
            f64::from(self.beta),
        );
        Ok(
            ElementwiseSpec::new(&BALANCED_L1, self.reduction, self.grad_scale)
                .vec4(&BALANCED_L1_VEC4)
                .half(&BALANCED_L1_HALF)
                .params([self.alpha, self.beta, 0.0, (b / beta) as f32])
                .params2([
                    (alpha / b) as f32,
                    self.gamma,
                    (gamma / b - alpha * beta) as f32,
                    (alpha * (1.0 - beta) / beta) as f32,
                ]),
        )
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
