use super::class_rows::{self, ClassRows, Kind};
use crate::error::{check_param, Result};
use crate::{Gpu, Loss, LossOutput, Reduction, Tensor};

/// Multi-class hinge loss, torch `multi_margin_loss`, fused in the class-row kernel.
///
/// ```text
/// loss_r = w_y / C · Σ_{j ≠ y} max(0, margin − x_y + x_j)^p,   p ∈ {1, 2}
/// ```
/// The mean is over rows (torch: the class weight scales a row's loss but not the denominator).
/// Every label must be in [0, C): there is no ignore index (as torch); a bad label is reported
/// as for [`crate::CrossEntropy`]. At a kink (`x_j = x_y − margin`) the gradient is that of the
/// flat side.
/// # Shapes
/// `logits`: `[N, C]` (and, beyond torch, `[N, C, d1, ...]`); labels `[N]` (or `[N, d1, ...]`),
/// i32. Defaults: p 1, margin 1, no weight, reduction mean, grad_scale 1.
#[derive(Clone, Debug, PartialEq)]
pub struct MulticlassHinge {
    /// Exponent p: 1 or 2.
    pub p: u32,
    /// Margin (finite).
    pub margin: f32,
    /// Weight of each class, `[C]` (finite), applied by the row's label.
    pub weight: Option<Vec<f32>>,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for MulticlassHinge {
    fn default() -> Self {
        Self {
            p: 1,
            margin: 1.0,
            weight: None,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl Loss for MulticlassHinge {
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
        check_param("p", self.p.into(), "1 or 2", matches!(self.p, 1 | 2))?;
        check_param("margin", self.margin.into(), "finite", true)?;
        let rows = ClassRows {
            kind: Kind::Margin,
            weight: self.weight.as_deref(),
            margin: self.margin,
            power: self.p,
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
