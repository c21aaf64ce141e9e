use crate::metric::row_tuples::{row_loss, Kind};
use crate::Reduction;

/// The WGAN-GP gradient penalty (Gulrajani et al. 2017) on the critic's gradients at the
/// interpolates, one row per sample (flatten `[N, C, H, W]` to `[N, C·H·W]`).
///
/// ```text
/// loss_i = λ (‖g_i‖₂ − 1)²        d/dg_i = 2 λ (‖g_i‖ − 1) g_i / ‖g_i‖   (0 for g_i = 0)
/// ```
/// The norm is computed without overflow or underflow. The returned gradient is the one to
/// push back through the critic's double backward.
/// # Shapes
/// `gradients`: `[N, D]`; the loss is a scalar (mean over samples by default), `[N]` under
/// reduction none. Defaults: lambda 10, reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientPenalty {
    /// λ, finite.
    pub lambda: f32,
    /// Reduction over samples.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for GradientPenalty {
    fn default() -> Self {
        Self {
            lambda: 10.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

row_loss!(
    GradientPenalty,
    ["gradients"],
    Kind::GradientPenalty,
    lambda
);
