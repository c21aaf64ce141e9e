use crate::config::check_grad_scale;
use crate::kernel::generative::{KL_DIV, KL_DIV_HALF, KL_DIV_VEC4};
use crate::{ElementwiseLoss, ElementwiseSpec, Reduction, Result};

/// How [`KlDiv`] combines its pointwise terms, torch's `reduction=` of `kl_div`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KlReduction {
    /// The pointwise terms, the input's shape.
    None,
    /// The sum divided by the batch size (the first dimension; 1 for a 0-d input): the
    /// mathematical KL divergence per sample.
    BatchMean,
    /// The sum.
    Sum,
    /// The sum divided by the number of elements.
    Mean,
}

/// Kullback–Leibler divergence, torch `kl_div(input, target, reduction, log_target)`: the input
/// holds log-probabilities `log q`, the target probabilities `p` (or `log p` with `log_target`).
///
/// ```text
/// log_target false:  p (log p − input)     (0 where p = 0)     d/dinput = −p
/// log_target true:   eᵗ (t − input)                             d/dinput = −eᵗ
/// ```
/// # Shapes
/// `input`, `target`: any shape, equal. Defaults: reduction batchmean (torch's default, `mean`,
/// divides by the element count, which is not the divergence), log_target false, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlDiv {
    /// Reduction over the pointwise terms.
    pub reduction: KlReduction,
    /// The target holds log-probabilities.
    pub log_target: bool,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for KlDiv {
    fn default() -> Self {
        Self {
            reduction: KlReduction::BatchMean,
            log_target: false,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for KlDiv {
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        check_grad_scale(self.grad_scale)?;
        let spec = ElementwiseSpec::new(&KL_DIV, ElementwiseLoss::reduction(self), self.grad_scale)
            .params([f32::from(u8::from(self.log_target)), 0.0, 0.0, 0.0])
            .vec4(&KL_DIV_VEC4)
            .half(&KL_DIV_HALF);
        Ok(match self.reduction {
            KlReduction::BatchMean => spec.mean_over(shape.first().copied().unwrap_or(1)),
            _ => spec,
        })
    }

    fn reduction(&self) -> Reduction {
        match self.reduction {
            KlReduction::None => Reduction::None,
            KlReduction::Sum => Reduction::Sum,
            KlReduction::BatchMean | KlReduction::Mean => Reduction::Mean,
        }
    }
}
