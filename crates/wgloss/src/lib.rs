//! wgloss: GPU loss kernels for training. Each loss is a WGSL compute shader that computes the
//! loss value and its gradient in one fused forward+backward pass; this crate owns devices,
//! buffers, pipelines and dispatch.
//!
//! ```no_run
//! use wgloss::{ElementwiseLoss, Gpu, Huber, Reduction, Tensor};
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

pub mod classification;
mod config;
mod elementwise;
mod error;
mod gpu;
pub mod kernel;
pub mod regression;
mod tensor;

pub use classification::*;
pub use elementwise::{encode_copy, ElementwiseSpec};
pub use error::{Error, Result};
pub use gpu::{Gpu, INSTALL_HINT};
pub use regression::*;
pub use tensor::{Tensor, TENSOR_USAGES};

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

/// Loss value(s) and gradient with respect to the prediction.
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// One element under `Mean`/`Sum` (shape `[]`), the input's shape under `None`.
    pub loss: Tensor,
    /// Gradient of the reduced loss w.r.t. `pred`, times `grad_scale`; the shape of `pred`.
    pub grad: Tensor,
}

impl LossOutput {
    /// Allocates outputs for an input of `shape`.
    pub fn new(gpu: &Gpu, shape: &[usize], reduction: Reduction) -> Result<Self> {
        Ok(Self {
            loss: Tensor::zeros(gpu, &Self::loss_shape(shape, reduction))?,
            grad: Tensor::zeros(gpu, shape)?,
        })
    }

    /// Shape of the loss output for an input of `shape`.
    pub fn loss_shape(shape: &[usize], reduction: Reduction) -> Vec<usize> {
        match reduction {
            Reduction::None => shape.to_vec(),
            Reduction::Mean | Reduction::Sum => Vec::new(),
        }
    }
}

/// A loss of a prediction and a target of the same shape, computed element-wise (the regression
/// family). `spec` validates the configuration against the input shape; `compute` and `encode`
/// are the two ways to run it.
pub trait ElementwiseLoss {
    /// The validated kernel specification for inputs of `shape`.
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>>;

    /// The reduction the outputs must be allocated for.
    fn reduction(&self) -> Reduction;

    /// Records the fused forward+backward into `encoder`, writing `out`. Arguments are validated
    /// before anything is recorded; no synchronisation.
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

    /// Computes loss and gradient into new tensors and waits for the device.
    fn compute(&self, gpu: &Gpu, pred: &Tensor, target: &Tensor) -> Result<LossOutput> {
        let spec = self.spec(pred.shape())?;
        let out = LossOutput::new(gpu, pred.shape(), spec.reduction)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        gpu.scoped(|| elementwise::encode(gpu, &mut encoder, &spec, pred, target, &out))?;
        gpu.submit_and_wait(encoder)?;
        Ok(out)
    }
}
