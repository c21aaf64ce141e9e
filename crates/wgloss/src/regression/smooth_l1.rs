use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Result};
use crate::kernel::regression::{SMOOTH_L1, SMOOTH_L1_VEC4};
use crate::{ElementwiseLoss, Reduction};

/// Smooth L1, torch `smooth_l1_loss`.
///
/// ```text
/// |r| < β: ½ r² / β    d/dp = r / β
/// else:    |r| − ½ β   d/dp = sign r        (β = 0 is exactly L1)
/// ```
/// # Shapes
/// `pred`, `target`: any shape, equal. Defaults: beta 1.0 (≥ 0), reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmoothL1 {
    /// Width of the quadratic zone (≥ 0).
    pub beta: f32,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for SmoothL1 {
    fn default() -> Self {
        Self {
            beta: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for SmoothL1 {
    fn spec(&self, _shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        check_param("beta", self.beta.into(), ">= 0", self.beta >= 0.0)?;
        super::check_grad_scale(self.grad_scale)?;
        Ok(
            ElementwiseSpec::new(&SMOOTH_L1, self.reduction, self.grad_scale)
                .vec4(&SMOOTH_L1_VEC4)
                .params([self.beta, 0.0, 0.0, 0.0]),
        )
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
