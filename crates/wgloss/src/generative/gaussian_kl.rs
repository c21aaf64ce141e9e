use crate::metric::row_tuples::{row_loss, Kind};
use crate::Reduction;

/// The KL divergence of a diagonal Gaussian `N(μ, σ²)` from `N(0, I)`, the VAE's latent term
/// (Kingma & Welling 2014), per sample over its latent dimensions, times β (β-VAE).
///
/// ```text
/// loss_i = β · ½ Σ_j (μ² + e^lv − 1 − lv)        lv = log σ²
/// d/dμ = β μ        d/dlv = β ½ (e^lv − 1)
/// ```
/// # Shapes
/// `mu`, `logvar`: `[N, L]`, equal; the loss is a scalar (mean over samples by default), `[N]`
/// under reduction none. Defaults: beta 1, reduction mean (the VAE's: sum over latent dimensions,
/// mean over the batch), grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianKl {
    /// Weight of the divergence, finite.
    pub beta: f32,
    /// Reduction over samples.
    pub reduction: Reduction,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for GaussianKl {
    fn default() -> Self {
        Self {
            beta: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

row_loss!(GaussianKl, ["mu", "logvar"], Kind::GaussianKl, beta);
