use super::class_rows::{self, ClassRows, Kind};
use crate::error::{check_param, Result};
use crate::{Gpu, Loss, LossOutput, Reduction, Tensor};

/// Softmax focal loss (Lin et al. 2017) over a class dimension with class-index targets, kornia
/// `focal_loss` with a per-class alpha, fused in the class-row kernel.
///
/// ```text
/// loss_r = −α_y (1 − p_y)^γ log p_y,   p = softmax(x)
/// d/dx_j = α_y q^γ (1 − γ p_y log(p_y) / q) (p_j − [j = y]),   q = 1 − p_y
/// ```
/// `q` is computed as `−expm1(log p_y)`, so confident rows keep their small losses and
/// gradients, and γ < 1 stays finite as `q → 0`. Rows labelled `ignore_index` have loss 0 and
/// gradient 0; the mean is over the other rows (α does not enter the denominator; kornia's
/// `focal_loss` divides by every element of its `[N, C, ...]` map instead, ignored rows and the
/// C classes included, so its mean is this sum over C times all rows). Bad labels are reported as for [`crate::CrossEntropy`].
/// # Shapes
/// `logits`: `[N, C]` or `[N, C, d1, ...]`; labels `[N]` or `[N, d1, ...]` (i32).
/// Defaults: gamma 2, no alpha (all ones), ignore_index −100, reduction mean, grad_scale 1.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxFocal {
    /// Focusing parameter γ ≥ 0.
    pub gamma: f32,
    /// Weight α_c of each class, `[C]` (finite); `None` weighs every class 1.
    pub alpha: Option<Vec<f32>>,
    /// Label whose rows are skipped.
    pub ignore_index: i64,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for SoftmaxFocal {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl Loss for SoftmaxFocal {
    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> Result<LossOutput> {
        class_rows::output(gpu, input_shape, self.reduction, crate::DType::F32)
    }

    fn output_for(&self, gpu: &Gpu, input: &Tensor, _target: &Tensor) -> Result<LossOutput> {
        class_rows::output(gpu, input.shape(), self.reduction, crate::grad_type(input))
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        labels: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        check_param("gamma", self.gamma.into(), ">= 0", self.gamma >= 0.0)?;
        if let (Some(alpha), Some(&classes)) = (&self.alpha, logits.shape().get(1)) {
            class_rows::check_weight("alpha", Some(alpha), classes)?;
        }
        let rows = ClassRows {
            kind: Kind::Focal,
            weight: self.alpha.as_deref(),
            ignore_index: Some(self.ignore_index),
            gamma: self.gamma,
            count_rows: true,
            reduction: self.reduction,
            grad_scale: self.grad_scale,
            ..Default::default()
        };
        rows.encode(gpu, encoder, Some(logits), labels, out)
    }

    fn check(&self, gpu: &Gpu, labels: &Tensor, out: &LossOutput) -> Result<()> {
        class_rows::check_labels(gpu, labels, out)
    }
}
