//! wgloss: GPU loss kernels for training. Each loss is a WGSL compute shader that computes the
//! loss value and its gradient in one fused forward+backward pass; this crate owns devices,
//! buffers, pipelines and dispatch.
//!
//! ```no_run
//! use wgloss::{Gpu, Huber, Loss, Tensor};
//! # fn main() -> wgloss::Result<()> {
//! let gpu = Gpu::new()?;
//! let pred = Tensor::from_slice(&gpu, &[0.5, 2.0, -1.0], &[3])?;
//! let target = Tensor::from_slice(&gpu, &[0.0, 0.0, 0.0], &[3])?;
//! let out = Huber { delta: 1.0, ..Default::default() }.compute(&gpu, &pred, &target)?;
//! let loss = out.loss.to_vec(&gpu)?[0];
//! let grad = out.grad.to_vec(&gpu)?;
//! # Ok(()) }
//! ```
//!
//! Every loss has two ways to run: `compute`, which allocates the outputs, submits and waits, and
//! `encode`, which records into a caller's `wgpu::CommandEncoder` with caller-owned outputs and
//! no synchronisation.

pub mod boxes;
pub mod classification;
mod config;
mod elementwise;
mod error;
pub mod generative;
mod gpu;
pub mod kernel;
mod lovasz;
pub mod metric;
mod narrow;
pub mod regression;
pub mod segmentation;
mod sort;
mod ssim;
mod tensor;

pub use boxes::*;
pub use classification::*;
pub use elementwise::{encode_copy, ElementwiseSpec};
pub use error::{Error, Result};
pub use generative::*;
pub use gpu::{Gpu, INSTALL_HINT};
pub use lovasz::*;
pub use metric::*;
pub use regression::*;
pub use segmentation::*;
pub use sort::{encode_sort, SORT_BLOCK};
pub use ssim::*;
pub use tensor::{DType, Tensor, TENSOR_USAGES};

/// How per-element losses are combined. Gradients are those of the reduced loss, multiplied by
/// the loss's `grad_scale`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// One loss value per element; the gradient is `grad_scale * d loss_i / d pred_i`.
    None,
    /// Mean over elements; an empty input gives 0 (torch gives NaN).
    #[default]
    Mean,
    /// Sum over elements.
    Sum,
}

/// Loss value(s), gradient with respect to the prediction (or logits), and the status word of
/// losses that check labels on the GPU.
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// One element under `Mean`/`Sum` (shape `[]`); under `None`, one per element (element-wise
    /// losses) or per row (losses over a class dimension).
    pub loss: Tensor,
    /// Gradient of the reduced loss w.r.t. the first input, times `grad_scale`; its shape.
    pub grad: Tensor,
    /// One u32: 0, or `u32::MAX − p` for the first position `p` of a bad label (see
    /// [`LossOutput::first_bad_label`]). Kernels that check labels write nothing else then.
    pub status: Tensor,
}

impl LossOutput {
    /// Checks outputs of a loss reduced to one value over an input of `shape`: f32 gradient of
    /// that shape and a one-element f32 loss, a u32 status word, all bindable, loss and status
    /// clearable (COPY_DST). For the drivers with their own passes.
    pub(crate) fn check_scalar(&self, gpu: &Gpu, shape: &[usize]) -> Result<()> {
        self.check_scalar_typed(gpu, shape, DType::F32)
    }

    /// [`LossOutput::check_scalar`] with a gradient of `grad_type`.
    pub(crate) fn check_scalar_typed(
        &self,
        gpu: &Gpu,
        shape: &[usize],
        grad_type: DType,
    ) -> Result<()> {
        self.grad.check_dtype("grad", grad_type)?;
        self.loss.check_dtype("loss", DType::F32)?;
        self.status.check_dtype("status", DType::U32)?;
        if self.grad.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: "grad",
                expected: shape.to_vec(),
                got: self.grad.shape().to_vec(),
            });
        }
        if self.loss.len() != 1 {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: Vec::new(),
                got: self.loss.shape().to_vec(),
            });
        }
        for (t, name) in [
            (&self.grad, "grad"),
            (&self.loss, "loss"),
            (&self.status, "status"),
        ] {
            t.check_bindable(gpu, name)?;
        }
        self.loss.check_clearable("loss")?;
        self.status.check_clearable("status")
    }

    /// Allocates outputs for an input of `shape` whose per-element losses have `shape` too.
    pub fn new(gpu: &Gpu, shape: &[usize], reduction: Reduction) -> Result<Self> {
        Self::with_loss_shape(gpu, shape, &Self::loss_shape(shape, reduction))
    }

    /// Allocates a gradient of `grad_shape` and a loss of `loss_shape`.
    pub fn with_loss_shape(gpu: &Gpu, grad_shape: &[usize], loss_shape: &[usize]) -> Result<Self> {
        Self::with_grad_type(gpu, grad_shape, loss_shape, DType::F32)
    }

    /// [`LossOutput::with_loss_shape`] with a gradient of `dtype` (F32, F16 or BF16).
    pub fn with_grad_type(
        gpu: &Gpu,
        grad_shape: &[usize],
        loss_shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            loss: Tensor::zeros(gpu, loss_shape)?,
            grad: Tensor::zeros_typed(gpu, grad_shape, dtype)?,
            status: Tensor::zeros_typed(gpu, &[1], DType::U32)?,
        })
    }

    /// Shape of the loss output of an element-wise loss for an input of `shape`.
    pub fn loss_shape(shape: &[usize], reduction: Reduction) -> Vec<usize> {
        match reduction {
            Reduction::None => shape.to_vec(),
            Reduction::Mean | Reduction::Sum => Vec::new(),
        }
    }

    /// Reads the status word: the first position of a label outside its range, if any.
    pub fn first_bad_label(&self, gpu: &Gpu) -> Result<Option<usize>> {
        let word = self.status.to_labels(gpu)?[0] as u32;
        Ok((word != 0).then(|| (u32::MAX - word) as usize))
    }
}

/// A loss of an input (predictions or logits) and a target: the two ways to run it.
///
/// `encode` records into a caller's encoder with caller-owned outputs and no synchronisation;
/// `compute` allocates the outputs, submits, waits, and turns a bad label reported by the
/// kernel into [`Error::LabelOutOfRange`].
pub trait Loss {
    /// The reduction the outputs must be allocated for.
    fn reduction(&self) -> Reduction;

    /// Outputs sized for inputs of these shapes.
    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> Result<LossOutput> {
        LossOutput::new(gpu, input_shape, self.reduction())
    }

    /// Outputs for these inputs, as `compute` allocates them: [`Loss::output`], with the
    /// gradient of a 16-bit input in its type (the losses that do not take one reject it).
    fn output_for(&self, gpu: &Gpu, input: &Tensor, target: &Tensor) -> Result<LossOutput> {
        narrow::typed_output(gpu, self.output(gpu, input.shape(), target.shape())?, input)
    }

    /// Records the fused forward+backward into `encoder`, writing `out`. Arguments are validated
    /// before anything is recorded.
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()>;

    /// Checks what only the kernel could see (labels), after the device finished the call.
    fn check(&self, _gpu: &Gpu, _target: &Tensor, _out: &LossOutput) -> Result<()> {
        Ok(())
    }

    /// Computes loss and gradient into new tensors (`output_for`) and waits for the device.
    fn compute(&self, gpu: &Gpu, input: &Tensor, target: &Tensor) -> Result<LossOutput> {
        let out = self.output_for(gpu, input, target)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.encode(gpu, &mut encoder, input, target, &out)?;
        gpu.submit_and_wait(encoder)?;
        self.check(gpu, target, &out)?;
        Ok(out)
    }
}

/// The gradient's type for `input`: its own where it is a 16-bit float (the losses that take
/// one), else f32 (the others then reject the input).
pub(crate) fn grad_type(input: &Tensor) -> DType {
    if input.dtype().is_half() {
        input.dtype()
    } else {
        DType::F32
    }
}

/// A loss of a prediction and a target of the same shape, computed element-wise (the
/// regression family and the binary classification losses): it only says which kernel to run
/// with which parameters, and gets [`Loss`] from that.
pub trait ElementwiseLoss {
    /// The validated kernel specification for inputs of `shape`.
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>>;

    /// The reduction the outputs must be allocated for.
    fn reduction(&self) -> Reduction;
}

impl<T: ElementwiseLoss> Loss for T {
    fn reduction(&self) -> Reduction {
        ElementwiseLoss::reduction(self)
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> Result<LossOutput> {
        elementwise::output(self, gpu, input_shape, DType::F32)
    }

    fn output_for(&self, gpu: &Gpu, input: &Tensor, _target: &Tensor) -> Result<LossOutput> {
        elementwise::output(self, gpu, input.shape(), grad_type(input))
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        let spec = self.spec(pred.shape())?;
        gpu.scoped(|| elementwise::encode(gpu, encoder, &spec, pred, target, out))
    }
}
