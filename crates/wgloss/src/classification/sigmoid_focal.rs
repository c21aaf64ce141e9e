use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Result};
use crate::kernel::classification::{SIGMOID_FOCAL, SIGMOID_FOCAL_HALF, SIGMOID_FOCAL_VEC4};
use crate::{ElementwiseLoss, Reduction};

/// Sigmoid focal loss, torchvision `sigmoid_focal_loss`, p = σ(x).
///
/// ```text
/// ce = BCE-with-logits(x, t),  p_t = p t + (1 − p)(1 − t)
/// loss = α_t · ce · (1 − p_t)^γ,  α_t = α t + (1 − α)(1 − t)   (no α_t when α < 0)
/// ```
/// γ < 1 keeps finite gradients (the gradient's q^(γ−1) term tends to 0 with the loss).
/// torchvision's default reduction is none; here, as for every loss, it is mean.
/// # Shapes
/// `logits`, `targets` (in [0, 1]): any shape, equal. Defaults: alpha 0.25 (≤ 1; < 0 disables),
/// gamma 2.0 (≥ 0), reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SigmoidFocal {
    /// Weight of the positive class (≤ 1); negative disables the weighting.
    pub alpha: f32,
    /// Focusing exponent (≥ 0).
    pub gamma: f32,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for SigmoidFocal {
    fn default() -> Self {
        Self {
            alpha: 0.25,
            gamma: 2.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for SigmoidFocal {
    fn spec(&self, _shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        check_param("alpha", self.alpha.into(), "<= 1", self.alpha <= 1.0)?;
        check_param("gamma", self.gamma.into(), ">= 0", self.gamma >= 0.0)?;
        crate::config::check_grad_scale(self.grad_scale)?;
        let mut spec = ElementwiseSpec::new(&SIGMOID_FOCAL, self.reduction, self.grad_scale)
            .params([self.alpha, self.gamma, 0.0, 0.0])
            .vec4(&SIGMOID_FOCAL_VEC4)
            .half(&SIGMOID_FOCAL_HALF);
        spec.overrides = vec![("SQUARE", u32::from(self.gamma == 2.0))];
        Ok(spec)
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
