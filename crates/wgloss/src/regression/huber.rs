use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Result};
use crate::kernel::regression::{HUBER, HUBER_VEC4};
use crate::{ElementwiseLoss, Reduction};

/// Huber loss, torch `huber_loss`.
///
/// ```text
/// |r| ≤ δ: ½ r²            d/dp = r
/// else:    δ (|r| − ½ δ)   d/dp = δ sign r
/// ```
/// # Shapes
/// `pred`, `target`: any shape, equal. Defaults: delta 1.0 (> 0), reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Huber {
    /// Threshold between the quadratic and linear pieces (> 0).
    pub delta: f32,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for Huber {
    fn default() -> Self {
        Self {
            delta: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for Huber {
    fn spec(&self, _shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        check_param("delta", self.delta.into(), "> 0", self.delta > 0.0)?;
        super::check_grad_scale(self.grad_scale)?;
        Ok(
            ElementwiseSpec::new(&HUBER, self.reduction, self.grad_scale)
                .vec4(&HUBER_VEC4)
                .params([self.delta, 0.0, 0.0, 0.0]),
        )
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
