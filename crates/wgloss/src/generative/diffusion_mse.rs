use crate::config::check_grad_scale;
use crate::error::Error;
use crate::kernel::generative::{DIFFUSION_MSE, DIFFUSION_MSE_HALF, DIFFUSION_MSE_VEC4};
use crate::{DType, ElementwiseLoss, ElementwiseSpec, Reduction, Result, Tensor};

/// The noise-prediction loss of diffusion models (DDPM's simple loss): the squared error of the
/// predicted noise, optionally weighted per sample (min-SNR and other timestep weightings, as
/// diffusers applies them: the per-sample mean times its weight, then the batch mean).
///
/// ```text
/// w_s (ε̂ − ε)²        d/dε̂ = 2 w_s (ε̂ − ε)        w_s = weights[s] (1 without weights)
/// ```
/// # Shapes
/// `pred` (ε̂), `target` (ε): `[N, ...]`, equal; `weights`: `[N]` (f32), one per sample.
/// Defaults: no weights, reduction mean (over every element: the mean over samples of
/// `w_s · mean_j (ε̂ − ε)²`), grad_scale 1.
#[derive(Clone, Copy, Debug)]
pub struct DiffusionMse<'a> {
    /// Per-sample weights `[N]`, or none.
    pub weights: Option<&'a Tensor>,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for DiffusionMse<'_> {
    fn default() -> Self {
        Self {
            weights: None,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for DiffusionMse<'_> {
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        check_grad_scale(self.grad_scale)?;
        let spec = ElementwiseSpec::new(&DIFFUSION_MSE, self.reduction, self.grad_scale)
            .vec4(&DIFFUSION_MSE_VEC4)
            .half(&DIFFUSION_MSE_HALF);
        let Some(weights) = self.weights else {
            return Ok(spec);
        };
        let Some(&samples) = shape.first() else {
            return Err(Error::InvalidShape {
                name: "pred",
                got: shape.to_vec(),
                why: "per-sample weights need a batch dimension [N, ...]",
            });
        };
        if weights.shape() != [samples] {
            return Err(Error::ShapeMismatch {
                name: "weights",
                expected: vec![samples],
                got: weights.shape().to_vec(),
            });
        }
        weights.check_dtype("weights", DType::F32)?;
        let per_sample = shape[1..].iter().product::<usize>();
        Ok(spec
            .params([1.0, 0.0, 0.0, 0.0])
            .sample_weights(weights, per_sample))
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
