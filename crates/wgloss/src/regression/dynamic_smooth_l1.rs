use wgpu::util::DeviceExt;

use crate::elementwise::{ElementwiseSpec, Plan};
use crate::error::{check_param, Error, Result};
use crate::kernel::regression::{
    DYNAMIC_SMOOTH_L1, DYNAMIC_SMOOTH_L1_HALF, DYNAMIC_SMOOTH_L1_VEC4,
};
use crate::{ElementwiseLoss, Gpu, Reduction, TENSOR_USAGES};

/// Largest `k` of [`DynamicSmoothL1Config`].
pub const DYNAMIC_MAX_K: u32 = 16;
/// Largest `update_iters` of [`DynamicSmoothL1Config`].
pub const DYNAMIC_MAX_UPDATE_ITERS: u32 = 1024;

/// Configuration of [`DynamicSmoothL1`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynamicSmoothL1Config {
    /// β before the first update, and its upper bound (> 0; default 1.0).
    pub initial_beta: f32,
    /// Each call records the k-th smallest |r| (1 ≤ k ≤ 16; default 10). With fewer than k
    /// elements, the largest is recorded (k' = min(k, n), as mmdet).
    pub k: u32,
    /// Every `update_iters` calls, β = min(initial_beta, median of the records)
    /// (1 ≤ update_iters ≤ 1024; default 100).
    pub update_iters: u32,
    /// Reduction over elements (default mean).
    pub reduction: Reduction,
    /// Multiplier of the gradient (default 1).
    pub grad_scale: f32,
}

impl Default for DynamicSmoothL1Config {
    fn default() -> Self {
        Self {
            initial_beta: 1.0,
            k: 10,
            update_iters: 100,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// Dynamic smooth L1 (Dynamic R-CNN, mmdet `DynamicRoIHead`): smooth L1 whose β follows the
/// regression error statistics. The loss of a call uses the current β; the call then records the
/// k-th smallest |r|, and every `update_iters` calls β becomes min(initial_beta, median of the
/// records). The β, the call count and the records live in a GPU buffer owned by this object: no
/// host round-trip.
///
/// ```text
/// |r| < β: ½ r² / β,  else |r| − ½ β
/// ```
/// # Shapes
/// `pred`, `target`: any non-empty shape, equal.
#[derive(Debug)]
pub struct DynamicSmoothL1 {
    config: DynamicSmoothL1Config,
    state: wgpu::Buffer,
}

impl DynamicSmoothL1 {
    /// Validates `config` and creates the GPU state (β = initial_beta, no records).
    pub fn new(gpu: &Gpu, config: DynamicSmoothL1Config) -> Result<Self> {
        let c = &config;
        check_param(
            "initial_beta",
            c.initial_beta.into(),
            "> 0",
            c.initial_beta > 0.0,
        )?;
        check_param(
            "k",
            c.k.into(),
            "in 1..=16",
            (1..=DYNAMIC_MAX_K).contains(&c.k),
        )?;
        check_param(
            "update_iters",
            c.update_iters.into(),
            "in 1..=1024",
            (1..=DYNAMIC_MAX_UPDATE_ITERS).contains(&c.update_iters),
        )?;
        crate::config::check_grad_scale(c.grad_scale)?;
        // β, the record count, the records and the selection's filter bound (none yet).
        let mut init = vec![0.0f32; 3 + c.update_iters as usize];
        init[0] = c.initial_beta;
        init[2 + c.update_iters as usize] = f32::MAX;
        let state = gpu.scoped(|| {
            Ok(gpu
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("dynamic_smooth_l1 state"),
                    contents: bytemuck::cast_slice(&init),
                    usage: TENSOR_USAGES,
                }))
        })?;
        Ok(Self { config, state })
    }

    /// The configuration.
    pub fn config(&self) -> &DynamicSmoothL1Config {
        &self.config
    }

    /// The β the next call will use.
    pub fn beta(&self, gpu: &Gpu) -> Result<f32> {
        Ok(self.download(gpu)?[0])
    }

    /// The k-th smallest |r| recorded since the last β update, oldest first.
    pub fn history(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let s = self.download(gpu)?;
        let count = s[1] as usize;
        Ok(s[2..2 + count].to_vec())
    }

    fn download(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.read_bytes(&self.state, 0, self.state.size())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

impl ElementwiseLoss for DynamicSmoothL1 {
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        if shape.iter().product::<usize>() == 0 {
            return Err(Error::Empty { name: "pred" });
        }
        let c = &self.config;
        let mut spec = ElementwiseSpec::new(&DYNAMIC_SMOOTH_L1, c.reduction, c.grad_scale)
            .params([c.initial_beta, 0.0, 0.0, 0.0])
            .plan(Plan::Kth)
            .vec4(&DYNAMIC_SMOOTH_L1_VEC4)
            .half(&DYNAMIC_SMOOTH_L1_HALF);
        spec.k = c.k;
        spec.iters = c.update_iters;
        spec.state = Some(&self.state);
        Ok(spec)
    }

    fn reduction(&self) -> Reduction {
        self.config.reduction
    }
}
