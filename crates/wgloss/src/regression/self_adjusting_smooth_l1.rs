use wgpu::util::DeviceExt;

use crate::elementwise::{ElementwiseSpec, Plan};
use crate::error::{check_param, Error, Result};
use crate::kernel::regression::{
    SELF_ADJUSTING_SMOOTH_L1, SELF_ADJUSTING_SMOOTH_L1_HALF, SELF_ADJUSTING_SMOOTH_L1_VEC4,
};
use crate::{ElementwiseLoss, Gpu, Reduction, TENSOR_USAGES};

/// Largest `num_features` of [`SelfAdjustingSmoothL1Config`].
pub const SELF_ADJUSTING_MAX_FEATURES: usize = 256;

/// Configuration of [`SelfAdjustingSmoothL1`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelfAdjustingSmoothL1Config {
    /// Size of the last dimension, one β per coordinate (1..=256; default 4, box deltas).
    pub num_features: usize,
    /// Upper bound of β and initial running mean (> 0; default 1/9).
    pub beta_max: f32,
    /// Momentum of the running statistics (in [0, 1]; default 0.1).
    pub momentum: f32,
    /// Reduction over elements (default mean).
    pub reduction: Reduction,
    /// Multiplier of the gradient (default 1).
    pub grad_scale: f32,
}

impl Default for SelfAdjustingSmoothL1Config {
    fn default() -> Self {
        Self {
            num_features: 4,
            beta_max: 1.0 / 9.0,
            momentum: 0.1,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// Self-adjusting smooth L1 (RetinaMask): smooth L1 with one β per coordinate,
/// β_c = clamp(μ_c − σ²_c, 1e-3, beta_max), where μ and σ² are running mean and unbiased
/// variance of |r| over the rows of each batch. The statistics are updated with the batch before
/// its loss is taken (the update is skipped when a variance is NaN: a single row, or NaN input),
/// and β is a constant for the gradient. The running statistics live in a GPU buffer owned by
/// this object.
///
/// # Shapes
/// `pred`, `target`: `[..., num_features]`, equal, non-empty.
#[derive(Debug)]
pub struct SelfAdjustingSmoothL1 {
    config: SelfAdjustingSmoothL1Config,
    state: wgpu::Buffer,
}

impl SelfAdjustingSmoothL1 {
    /// Validates `config` and creates the GPU state (μ = beta_max, σ² = 0).
    pub fn new(gpu: &Gpu, config: SelfAdjustingSmoothL1Config) -> Result<Self> {
        let c = &config;
        let d = c.num_features;
        check_param(
            "num_features",
            d as f64,
            "in 1..=256",
            (1..=SELF_ADJUSTING_MAX_FEATURES).contains(&d),
        )?;
        check_param("beta_max", c.beta_max.into(), "> 0", c.beta_max > 0.0)?;
        check_param(
            "momentum",
            c.momentum.into(),
            "in [0, 1]",
            (0.0..=1.0).contains(&c.momentum),
        )?;
        crate::config::check_grad_scale(c.grad_scale)?;
        let beta0 = c.beta_max.max(1e-3).min(c.beta_max);
        let init: Vec<f32> = [c.beta_max, 0.0, beta0]
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, d))
            .collect();
        let state = gpu.scoped(|| {
            Ok(gpu
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("self_adjusting_smooth_l1 state"),
                    contents: bytemuck::cast_slice(&init),
                    usage: TENSOR_USAGES,
                }))
        })?;
        Ok(Self { config, state })
    }

    /// The configuration.
    pub fn config(&self) -> &SelfAdjustingSmoothL1Config {
        &self.config
    }

    /// Running mean, running variance and β per coordinate.
    pub fn running_stats(&self, gpu: &Gpu) -> Result<[Vec<f32>; 3]> {
        let bytes = gpu.read_bytes(&self.state, 0, self.state.size())?;
        let s: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let d = self.config.num_features;
        Ok([s[..d].to_vec(), s[d..2 * d].to_vec(), s[2 * d..].to_vec()])
    }
}

impl ElementwiseLoss for SelfAdjustingSmoothL1 {
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        let c = &self.config;
        if shape.last() != Some(&c.num_features) {
            return Err(Error::InvalidShape {
                name: "pred",
                got: shape.to_vec(),
                why: "the last dimension must equal num_features",
            });
        }
        if shape.iter().product::<usize>() == 0 {
            return Err(Error::Empty { name: "pred" });
        }
        let mut spec = ElementwiseSpec::new(&SELF_ADJUSTING_SMOOTH_L1, c.reduction, c.grad_scale)
            .params([c.beta_max, c.momentum, 0.0, 0.0])
            .plan(Plan::CoordStats)
            .vec4(&SELF_ADJUSTING_SMOOTH_L1_VEC4)
            .half(&SELF_ADJUSTING_SMOOTH_L1_HALF);
        spec.coords = c.num_features as u32;
        spec.state = Some(&self.state);
        Ok(spec)
    }

    fn reduction(&self) -> Reduction {
        self.config.reduction
    }
}
