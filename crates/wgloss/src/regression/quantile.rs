use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Result};
use crate::kernel::regression::{QUANTILE, QUANTILE_VEC4};
use crate::{ElementwiseLoss, Reduction};

/// Quantile (pinball) loss.
///
/// ```text
/// loss_i = max(q (t − p), (q − 1)(t − p)),  d/dp = −q if t > p, 1 − q if t < p, 0 if t = p
/// ```
/// # Shapes
/// `pred`, `target`: any shape, equal. Defaults: quantile 0.5 (in (0, 1)), reduction mean,
/// grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    /// The quantile q, in (0, 1).
    pub quantile: f32,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for Quantile {
    fn default() -> Self {
        Self {
            quantile: 0.5,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for Quantile {
    fn spec(&self, _shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        let q = self.quantile;
        check_param("quantile", q.into(), "in (0, 1)", q > 0.0 && q < 1.0)?;
        super::check_grad_scale(self.grad_scale)?;
        Ok(
            ElementwiseSpec::new(&QUANTILE, self.reduction, self.grad_scale)
                .vec4(&QUANTILE_VEC4)
                .params([q, 0.0, 0.0, 0.0]),
        )
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
