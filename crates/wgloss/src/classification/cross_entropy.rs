use super::class_rows::{self, ClassRows, Kind};
use crate::error::{check_param, Result};
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor};

/// Cross-entropy over a class dimension, torch `cross_entropy`, fused: each row's log-sum-exp
/// is computed online and the gradient written in a second sweep of the row, which rows of any
/// length stream through (no class-count limit). Targets are class indices (i32) or class
/// probabilities (f32, the logits' shape), as in torch.
///
/// ```text
/// labels:        loss_r = (1 − ε) w_y (LSE − x_y) + ε/C (W·LSE − Σ_c w_c x_c),   W = Σ_c w_c
///   mean:  Σ_r loss_r / Σ_r w_{y_r}   over rows whose label is not ignore_index (torch's
///          weighted mean, label smoothing included); an all-ignored batch gives 0 and a zero
///          gradient
/// probabilities: loss_r = Σ_c w_c t'_c (LSE − x_c),   t' = (1 − ε) t + ε/C
///   mean:  Σ_r loss_r / (number of rows); ignore_index does not apply (as torch)
/// ```
/// [`CrossEntropy::encode_in_place`] and [`CrossEntropy::compute_in_place`] write the gradient
/// over the logits, for vocabularies where a second logits-sized buffer is too much.
/// Extras: `z_loss` adds `z · LSE²` to each non-ignored row (reduced like the rest);
/// `logit_softcap` reads every logit as `cap · tanh(x / cap)` and chains its derivative.
/// A label outside [0, C) that is not `ignore_index` makes the call fail with
/// [`Error::LabelOutOfRange`](crate::Error::LabelOutOfRange) naming the first such position; the kernel then writes no output.
/// With `encode`, read it with [`LossOutput::first_bad_label`] once the work is done.
/// # Shapes
/// `logits`: `[N, C]` or `[N, C, d1, ...]` (f32); target: labels `[N]` or `[N, d1, ...]` (i32),
/// or probabilities of the logits' shape (f32); gradient: the shape of `logits`; loss under
/// reduction none: `[N, d1, ...]`, one per row.
/// Defaults: no weight, ignore_index −100, label_smoothing 0, reduction mean, grad_scale 1.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy {
    /// Weight of each class, `[C]` (finite).
    pub weight: Option<Vec<f32>>,
    /// Label whose rows are skipped (loss 0, gradient 0, not counted by the mean). Any value,
    /// also outside [0, C).
    pub ignore_index: i64,
    /// ε in [0, 1]: the target is (1 − ε) one-hot + ε / C.
    pub label_smoothing: f32,
    /// z of the z-loss `z · LSE²` added to each non-ignored row (PaLM; ≥ 0, default 0).
    pub z_loss: f32,
    /// Soft cap: logits are read as `cap · tanh(x / cap)` (Gemma; > 0, default none).
    pub logit_softcap: Option<f32>,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            logit_softcap: None,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl CrossEntropy {
    fn rows(&self) -> ClassRows<'_> {
        ClassRows {
            kind: Kind::CrossEntropy,
            weight: self.weight.as_deref(),
            ignore_index: Some(self.ignore_index),
            label_smoothing: self.label_smoothing,
            z_loss: self.z_loss,
            logit_softcap: self.logit_softcap,
            reduction: self.reduction,
            grad_scale: self.grad_scale,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let eps = self.label_smoothing;
        check_param(
            "label_smoothing",
            eps.into(),
            "in [0, 1]",
            (0.0..=1.0).contains(&eps),
        )?;
        check_param("z_loss", self.z_loss.into(), ">= 0", self.z_loss >= 0.0)?;
        if let Some(cap) = self.logit_softcap {
            check_param("logit_softcap", cap.into(), "> 0", cap > 0.0)?;
        }
        Ok(())
    }

    /// [`Loss::encode`] with the gradient written over the logits: `out.grad` holds the logits
    /// on entry and their gradient on exit, so a large-vocabulary step needs no second buffer
    /// of the logits' size. Every logit is read before it is overwritten.
    pub fn encode_in_place(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        self.validate()?;
        self.rows().encode(gpu, encoder, None, target, out)
    }

    /// [`Loss::compute`] with the gradient written over `logits`, which the returned output's
    /// `grad` holds (the same buffer); only the loss and the status word are allocated.
    pub fn compute_in_place(
        &self,
        gpu: &Gpu,
        logits: Tensor,
        target: &Tensor,
    ) -> Result<LossOutput> {
        let out = LossOutput {
            loss: Tensor::zeros(gpu, &class_rows::loss_shape(logits.shape(), self.reduction))?,
            status: Tensor::zeros_typed(gpu, &[1], DType::U32)?,
            grad: logits,
        };
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.encode_in_place(gpu, &mut encoder, target, &out)?;
        gpu.submit_and_wait(encoder)?;
        class_rows::check_labels(gpu, target, &out)?;
        Ok(out)
    }
}

impl Loss for CrossEntropy {
    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> Result<LossOutput> {
        class_rows::output(gpu, input_shape, self.reduction, DType::F32)
    }

    fn output_for(&self, gpu: &Gpu, input: &Tensor, _target: &Tensor) -> Result<LossOutput> {
        class_rows::output(gpu, input.shape(), self.reduction, crate::grad_type(input))
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        self.validate()?;
        self.rows().encode(gpu, encoder, Some(logits), target, out)
    }

    fn check(&self, gpu: &Gpu, target: &Tensor, out: &LossOutput) -> Result<()> {
        class_rows::check_labels(gpu, target, out)
    }
}

/// Poly-1 loss (Leng et al. 2022; optax `poly_loss_cross_entropy`) with class-index targets:
/// cross-entropy plus ε times one minus the probability of the label, fused in the
/// cross-entropy kernel.
///
/// ```text
/// loss_r = LSE − x_y + ε (1 − p_y),   d/dx_j = p_j − [j = y] + ε p_y (p_j − [j = y])
/// ```
/// Rows labelled `ignore_index` are skipped; the mean is over the other rows; bad labels are
/// reported as for [`CrossEntropy`].
/// # Shapes
/// As [`CrossEntropy`]. Defaults: epsilon 1.0, ignore_index −100, reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Poly1 {
    /// Weight ε of the polynomial term (finite).
    pub epsilon: f32,
    /// Label whose rows are skipped.
    pub ignore_index: i64,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for Poly1 {
    fn default() -> Self {
        Self {
            epsilon: 1.0,
            ignore_index: -100,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl Loss for Poly1 {
    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> Result<LossOutput> {
        class_rows::output(gpu, input_shape, self.reduction, DType::F32)
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
        check_param("epsilon", self.epsilon.into(), "finite", true)?;
        labels.check_dtype("target", DType::I32)?;
        let rows = ClassRows {
            kind: Kind::CrossEntropy,
            ignore_index: Some(self.ignore_index),
            poly: self.epsilon,
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
