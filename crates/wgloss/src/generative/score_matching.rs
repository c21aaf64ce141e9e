use crate::metric::row_tuples::{row_loss, Kind};
use crate::Reduction;

/// Denoising score matching (NCSN, Song & Ermon 2019): the score `s` predicted at the noisy
/// sample `x̃ = x + σ z` regressed onto the noise's score `−(x̃ − x)/σ²`, weighted by σ².
///
/// ```text
/// loss_i = ½ σ_i² ‖s_i + (x̃_i − x_i)/σ_i²‖² = ½ ‖u‖²,  u = σ s + (x̃ − x)/σ
/// d/ds = σ u        d/dx̃ = u/σ        d/dx = −u/σ
/// ```
/// A [`TupleLoss`](crate::TupleLoss) of `[score, noisy, clean]` (rows flattened per sample) with the noise levels
/// σ `[N]` (f32, > 0; not checked: a σ of 0 gives NaN) as the target.
/// # Shapes
/// `score`, `noisy`, `clean`: `[N, D]`; sigma `[N]`; the loss is a scalar (mean over samples
/// by default), `[N]` under reduction none. Defaults: reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreMatching {
    /// Reduction over samples.
    pub reduction: Reduction,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for ScoreMatching {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

row_loss!(
    ScoreMatching,
    ["score", "noisy", "clean"],
    Kind::ScoreMatching,
    values
);
