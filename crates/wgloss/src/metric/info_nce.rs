//! InfoNCE / CLIP (`info_nce`): a softmax cross-entropy of each query over the keys (and extra
//! negatives) with its own key as the target. That is the cosface head with scale 1/τ, margin 0
//! and labels 0..N over the candidates `[key; negatives]`, so it runs on the margin-head kernel
//! (O(N·D + M·D) memory, no N×(N+M) buffer); the symmetric mode runs it both ways and adds the
//! halves with `shaders/metric/combine.wgsl`.

use wgpu::util::DeviceExt;

use super::margin_heads::{Head, Kind};
use super::{HeadOutput, TupleLoss, TupleOutput};
use crate::elementwise::{entry, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::COMBINE;
use crate::metric::row_tuples::half_tuple;
use crate::{DType, Gpu, LossOutput, Reduction, Tensor};

/// InfoNCE (van den Oord et al. 2018; MoCo with a queue of extra negatives; CLIP when
/// symmetric): with `q̂, k̂, n̂` the rows (L2-normalised when `normalize`), query i's logits are
/// `q̂_i·k̂_j/τ` over the N keys then `q̂_i·n̂_m/τ` over the M extra negatives, its target key i;
/// the loss is the mean cross-entropy over queries. Symmetric (CLIP): the mean of that and the
/// keys' cross-entropy over the N queries (the extra negatives take no part in that direction).
/// # Shapes
/// inputs `[query, key]`, or `[query, key, negatives]` with `negatives: true`: query and key
/// `[N, D]`, negatives `[M, D]` (f32, or all F16 or all BF16 through f32 copies); no target;
/// the loss is a scalar (mean). N = 0 gives 0.
/// Defaults: temperature 0.07, normalize true, symmetric false, no negatives, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfoNce {
    /// τ, finite and > 0.
    pub temperature: f32,
    /// L2-normalise queries, keys and negatives (cosine logits).
    pub normalize: bool,
    /// CLIP's symmetric loss.
    pub symmetric: bool,
    /// Whether a third input of extra negatives is passed.
    pub negatives: bool,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for InfoNce {
    fn default() -> Self {
        Self {
            temperature: 0.07,
            normalize: true,
            symmetric: false,
            negatives: false,
            grad_scale: 1.0,
        }
    }
}

/// Uniform block of `combine.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CombineParams {
    n: u32,
    per_sample: u32,
    alpha: f32,
    beta: f32,
}

/// How [`combine`] weighs its two inputs.
pub(crate) enum Mix<'a> {
    /// `alpha·a + beta·b`.
    Fixed(f32, f32),
    /// `w·a + (1 − w)·b` with `w` = the weight of the element's sample (`per_sample` elements
    /// each).
    PerSample(wgpu::BindingResource<'a>, usize),
}

/// Records `out = alpha·a + beta·b` (or the per-sample mix) over `n` elements (each within one
/// binding).
pub(crate) fn combine(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    a: wgpu::BindingResource<'_>,
    b: wgpu::BindingResource<'_>,
    out: wgpu::BindingResource<'_>,
    n: usize,
    mix: Mix<'_>,
) {
    if n == 0 {
        return;
    }
    let device = gpu.device();
    let (per_sample, alpha, beta) = match &mix {
        Mix::Fixed(alpha, beta) => (0, *alpha, *beta),
        Mix::PerSample(_, per_sample) => ((*per_sample).max(1) as u32, 0.0, 0.0),
    };
    let params = CombineParams {
        n: n as u32,
        per_sample,
        alpha,
        beta,
    };
    let spare = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("combine no weights"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let weights = match mix {
        Mix::PerSample(w, _) => w,
        Mix::Fixed(..) => spare.as_entire_binding(),
    };
    let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("combine params"),
        contents: bytemuck::bytes_of(&params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let (bgl, layout) = gpu.layout(
        "combine",
        &[
            storage(0, true),
            storage(1, true),
            storage(2, false),
            uniform(3),
            storage(4, true),
        ],
    );
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("combine"),
        layout: &bgl,
        entries: &[
            entry(0, a),
            entry(1, b),
            entry(2, out),
            entry(3, uniforms.as_entire_binding()),
            entry(4, weights),
        ],
    });
    let pipeline = gpu.pipeline(
        &COMBINE,
        PipelineKey {
            kernel: COMBINE.name,
            entry: "combine",
            overrides: Vec::new(),
        },
        &layout,
    );
    let workgroups = n.div_ceil(256);
    let x = workgroups.min(gpu.max_workgroups());
    let mut pass = encoder.begin_compute_pass(&Default::default());
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(x as u32, workgroups.div_ceil(x) as u32, 1);
}

/// Copies `len` f32 elements from `from` at element `at` into `to`.
fn copy(encoder: &mut wgpu::CommandEncoder, from: &Tensor, at: usize, to: &Tensor, len: usize) {
    if len > 0 {
        encoder.copy_buffer_to_buffer(
            from.buffer(),
            from.offset() + 4 * at as u64,
            to.buffer(),
            to.offset(),
            4 * len as u64,
        );
    }
}

impl TupleLoss for InfoNce {
    fn inputs(&self) -> &'static [&'static str] {
        if self.negatives {
            &["query", "key", "negatives"]
        } else {
            &["query", "key"]
        }
    }

    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        _target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()> {
        let t = self.temperature;
        check_param(
            "temperature",
            t.into(),
            "finite and > 0",
            t > 0.0 && t.is_finite(),
        )?;
        crate::config::check_grad_scale(self.grad_scale)?;
        // Before anything is recorded (an empty batch's clears, the combining passes).
        gpu.check_storage_buffers()?;
        let names = self.inputs();
        if inputs.len() != names.len() {
            return Err(Error::InvalidShape {
                name: "query",
                got: vec![inputs.len()],
                why: "expected [query, key] (and negatives when `negatives`)",
            });
        }
        if let Some(r) = half_tuple(self, gpu, encoder, inputs, out) {
            // 16-bit inputs through f32 copies; the gradients packed back.
            return r;
        }
        let (query, key) = (inputs[0], inputs[1]);
        let shape = query.shape();
        if shape.len() != 2 || shape[1] == 0 {
            return Err(Error::InvalidShape {
                name: "query",
                got: shape.to_vec(),
                why: "expected [N, D] with D ≥ 1",
            });
        }
        let (n, d) = (shape[0], shape[1]);
        if key.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: "key",
                expected: shape.to_vec(),
                got: key.shape().to_vec(),
            });
        }
        let m = match inputs.get(2) {
            Some(neg) if neg.shape().len() == 2 && neg.shape()[1] == d => neg.shape()[0],
            Some(neg) => {
                return Err(Error::ShapeMismatch {
                    name: "negatives",
                    expected: vec![neg.shape().first().copied().unwrap_or(0), d],
                    got: neg.shape().to_vec(),
                })
            }
            None => 0,
        };
        for (t, &name) in inputs.iter().zip(names) {
            t.check_dtype(name, DType::F32)?;
        }
        let grad_shapes: [&[usize]; 3] = [&[n, d], &[n, d], &[m, d]];
        out.check_grads(gpu, &grad_shapes[..names.len()])?;
        if out.loss.len() != 1 {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: Vec::new(),
                got: out.loss.shape().to_vec(),
            });
        }
        out.check_loss(gpu)?;
        if n == 0 {
            // No query: loss 0; the negatives get no gradient.
            encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            if let Some(g) = out.grads.get(2) {
                if g.byte_len() > 0 {
                    encoder.clear_buffer(g.buffer(), g.offset(), Some(g.byte_len()));
                }
            }
            return Ok(());
        }
        let half = if self.symmetric { 0.5 } else { 1.0 };
        let head = Head {
            kind: Kind::Cos,
            scale: 1.0 / t,
            margin: 0.0,
            sphere_m: 1,
            h: 0.0,
            t_alpha: 0.0,
            grad_scale: half * self.grad_scale,
            normalize: self.normalize,
        };
        let labels: Vec<i32> = (0..n as i32).collect();
        let labels = Tensor::from_labels(gpu, &labels, &[n])?;
        // The candidates: the keys, then the negatives.
        let candidates = if m == 0 {
            key.clone()
        } else {
            let c = Tensor::zeros(gpu, &[n + m, d])?;
            copy(encoder, key, 0, &c, n * d);
            let tail = Tensor::new(c.buffer().clone(), 4 * (n * d) as u64, &[m, d])?;
            copy(encoder, inputs[2], 0, &tail, m * d);
            c
        };
        let status = Tensor::zeros_typed(gpu, &[1], DType::U32)?;
        let scratch = |shape: &[usize]| Tensor::zeros(gpu, shape);
        let direct = !self.symmetric;
        let forward = HeadOutput {
            out: LossOutput {
                loss: if direct {
                    out.loss.clone()
                } else {
                    scratch(&[])?
                },
                grad: if direct {
                    out.grads[0].clone()
                } else {
                    scratch(&[n, d])?
                },
                status: status.clone(),
            },
            grad_weight: if direct && m == 0 {
                out.grads[1].clone()
            } else {
                scratch(&[n + m, d])?
            },
        };
        head.encode(gpu, encoder, query, &candidates, &labels, &forward, None)?;
        if direct {
            if m > 0 {
                copy(encoder, &forward.grad_weight, 0, &out.grads[1], n * d);
                copy(encoder, &forward.grad_weight, n * d, &out.grads[2], m * d);
            }
            return Ok(());
        }
        // Keys against the queries.
        let backward = HeadOutput {
            out: LossOutput {
                loss: scratch(&[])?,
                grad: scratch(&[n, d])?,
                status,
            },
            grad_weight: scratch(&[n, d])?,
        };
        head.encode(gpu, encoder, key, query, &labels, &backward, None)?;
        let nd = n * d;
        combine(
            gpu,
            encoder,
            forward.out.grad.binding(0, nd),
            backward.grad_weight.binding(0, nd),
            out.grads[0].binding(0, nd),
            nd,
            Mix::Fixed(1.0, 1.0),
        );
        combine(
            gpu,
            encoder,
            forward.grad_weight.binding(0, nd),
            backward.out.grad.binding(0, nd),
            out.grads[1].binding(0, nd),
            nd,
            Mix::Fixed(1.0, 1.0),
        );
        if m > 0 {
            copy(encoder, &forward.grad_weight, nd, &out.grads[2], m * d);
        }
        combine(
            gpu,
            encoder,
            forward.out.loss.binding(0, 1),
            backward.out.loss.binding(0, 1),
            out.loss.binding(0, 1),
            1,
            Mix::Fixed(0.5, 0.5),
        );
        Ok(())
    }
}
