use wgpu::util::DeviceExt;

use crate::elementwise::{ElementwiseSpec, Plan};
use crate::error::{check_param, Result};
use crate::kernel::classification::{GHM_C, GHM_C_HALF, GHM_C_VEC4};
use crate::{ElementwiseLoss, Gpu, LossOutput, Reduction, Tensor, TENSOR_USAGES};

/// Largest `bins` of [`GhmCConfig`].
pub const GHM_C_MAX_BINS: usize = 255;

/// Configuration of [`GhmC`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhmCConfig {
    /// Number of equal bins of the gradient norm over [0, 1] (1..=255; default 10).
    pub bins: usize,
    /// Momentum of the per-bin running counts (in [0, 1); 0, the default, uses this batch's
    /// counts alone).
    pub momentum: f32,
    /// Reduction over elements (default mean).
    pub reduction: Reduction,
    /// Multiplier of the gradient (default 1).
    pub grad_scale: f32,
}

impl Default for GhmCConfig {
    fn default() -> Self {
        Self {
            bins: 10,
            momentum: 0.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// Gradient-harmonised classification loss (Li et al. 2019), mmdet `GHMC`: binary
/// cross-entropy on logits, each element weighted by the inverse density of its gradient norm
/// `g = |σ(x) − t|` in the batch.
///
/// ```text
/// w = tot / (n · num_b)        num_b: valid elements in g's bin, n: non-empty bins,
///                               tot = max(valid elements, 1)
/// with momentum m > 0:  acc_b ← m·acc_b + (1 − m)·num_b (non-empty bins), w = tot / (n · acc_b)
/// loss = Σ w · bce(x, t) / (tot + 1.19e-7)  (mean; none and sum leave out the division)
/// ```
/// The weights are constants for the gradient `w (σ(x) − t)`. Bins have edges `k / bins`, the
/// last at `1 + 1e-6`. The histogram is built on the GPU and the running counts stay there
/// between calls: no host round-trip. [`GhmC::compute_masked`] and [`GhmC::encode_masked`] take
/// mmdet's `label_weight`: elements whose mask is not > 0 get weight 0 and are not counted.
/// mmdet rejects reduction sum with its average factor; here sum is the plain weighted sum.
/// # Shapes
/// `pred` (logits), `target` (in [0, 1], usually 0 or 1) and the mask: equal shapes, any.
#[derive(Debug)]
pub struct GhmC {
    config: GhmCConfig,
    state: wgpu::Buffer,
}

impl GhmC {
    /// Validates `config` and creates the GPU state (running counts 0).
    pub fn new(gpu: &Gpu, config: GhmCConfig) -> Result<Self> {
        let c = &config;
        check_param(
            "bins",
            c.bins as f64,
            "in 1..=255",
            (1..=GHM_C_MAX_BINS).contains(&c.bins),
        )?;
        check_param(
            "momentum",
            c.momentum.into(),
            "in [0, 1)",
            (0.0..1.0).contains(&c.momentum),
        )?;
        crate::config::check_grad_scale(c.grad_scale)?;
        let state = gpu.scoped(|| {
            Ok(gpu
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("ghm_c state"),
                    contents: bytemuck::cast_slice(&vec![0.0f32; 2 * c.bins]),
                    usage: TENSOR_USAGES,
                }))
        })?;
        Ok(Self { config, state })
    }

    /// The configuration.
    pub fn config(&self) -> &GhmCConfig {
        &self.config
    }

    /// The running count of each bin (all 0 with momentum 0).
    pub fn running_counts(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.read_bytes(&self.state, 0, 4 * self.config.bins as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// [`crate::Loss::encode`] with a validity mask of the inputs' shape (mmdet's
    /// `label_weight`).
    pub fn encode_masked(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &Tensor,
        target: &Tensor,
        mask: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        let mut spec = self.spec(pred.shape())?;
        spec.mask = Some(mask);
        spec.overrides = vec![("MASKED", 1)];
        gpu.scoped(|| crate::elementwise::encode(gpu, encoder, &spec, pred, target, out))
    }

    /// [`crate::Loss::compute`] with a validity mask of the inputs' shape.
    pub fn compute_masked(
        &self,
        gpu: &Gpu,
        pred: &Tensor,
        target: &Tensor,
        mask: &Tensor,
    ) -> Result<LossOutput> {
        let out = crate::elementwise::output(self, gpu, pred.shape(), crate::grad_type(pred))?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.encode_masked(gpu, &mut encoder, pred, target, mask, &out)?;
        gpu.submit_and_wait(encoder)?;
        Ok(out)
    }
}

impl ElementwiseLoss for GhmC {
    fn spec(&self, _shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        let c = &self.config;
        let mean = if c.reduction == Reduction::Mean {
            1.0
        } else {
            0.0
        };
        let mut spec = ElementwiseSpec::new(&GHM_C, c.reduction, c.grad_scale)
            .params([c.momentum, mean, 0.0, 0.0])
            .plan(Plan::Histogram)
            .vec4(&GHM_C_VEC4)
            .half(&GHM_C_HALF);
        spec.k = c.bins as u32;
        spec.state = Some(&self.state);
        Ok(spec)
    }

    fn reduction(&self) -> Reduction {
        self.config.reduction
    }
}
