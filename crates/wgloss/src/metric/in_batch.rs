//! In-batch contrastive losses (`shaders/metric/in_batch.wgsl`): the similarity matrix of the
//! batch is recomputed in tiles and never stored, so memory stays O(N·D).

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::IN_BATCH;
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor};

/// Anchors per workgroup of the tiled passes.
const TILE: usize = 16;
/// Per-anchor statistics in the scratch buffer.
const STATS: usize = 8;

/// Uniform block of `in_batch.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    views_half: u32,
    pad0: u32,
    inv_tau: f32,
    grad_scale: f32,
    pad1: f32,
    pad2: f32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    SupCon = 0,
    NtXent = 1,
}

/// One call of the in-batch kernel.
struct InBatch {
    kind: Kind,
    temperature: f32,
    views: bool,
    grad_scale: f32,
}

impl InBatch {
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        emb: &Tensor,
        labels: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        check_param(
            "temperature",
            self.temperature.into(),
            "finite and > 0",
            self.temperature > 0.0,
        )?;
        crate::config::check_grad_scale(self.grad_scale)?;
        let shape = emb.shape();
        if shape.len() != 2 || shape[1] == 0 {
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why: "expected [N, D] with D ≥ 1",
            });
        }
        let (n, d) = (shape[0], shape[1]);
        if self.views && !n.is_multiple_of(2) {
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why: "views mode takes [2N, D]: rows i and i + N are the pairs",
            });
        }
        emb.check_dtype("embeddings", DType::F32)?;
        if !self.views {
            if labels.shape() != [n] {
                return Err(Error::ShapeMismatch {
                    name: "target",
                    expected: vec![n],
                    got: labels.shape().to_vec(),
                });
            }
            labels.check_dtype("target", DType::I32)?;
        }
        out.check_scalar(gpu, shape)?;
        emb.check_bindable(gpu, "embeddings")?;
        if !self.views {
            labels.check_bindable(gpu, "target")?;
        }
        let max_binding = gpu.limits().max_storage_buffer_binding_size;
        let scratch_len = n * d + STATS * n;
        if 4 * scratch_len as u64 > max_binding || n.div_ceil(TILE) > 65_535 {
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why:
                    "the batch and its normalised copy must fit one storage binding, N ≤ 1,048,560",
            });
        }
        gpu.scoped(|| {
            encoder.clear_buffer(out.status.buffer(), out.status.offset(), Some(4));
            encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            if n == 0 {
                return Ok(());
            }
            let device = gpu.device();
            let params = Params {
                n: n as u32,
                d: d as u32,
                views_half: if self.views { (n / 2) as u32 } else { 0 },
                pad0: 0,
                inv_tau: 1.0 / self.temperature,
                grad_scale: self.grad_scale,
                pad1: 0.0,
                pad2: 0.0,
            };
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("in-batch params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let scratch = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("in-batch scratch"),
                size: 4 * scratch_len as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let (bgl, layout) = gpu.layout(
                "in_batch",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, false),
                    storage(3, false),
                    uniform(4),
                    storage(5, false),
                ],
            );
            // Views mode reads no labels: the embeddings stand in for the binding.
            let labels_binding = if self.views {
                emb.binding(0, n * d)
            } else {
                labels.binding(0, n)
            };
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("in_batch"),
                layout: &bgl,
                entries: &[
                    entry(0, emb.binding(0, n * d)),
                    entry(1, labels_binding),
                    entry(2, out.grad.binding(0, n * d)),
                    entry(3, out.loss.binding(0, 1)),
                    entry(4, uniforms.as_entire_binding()),
                    entry(5, scratch.as_entire_binding()),
                ],
            });
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    &IN_BATCH,
                    PipelineKey {
                        kernel: IN_BATCH.name,
                        entry,
                        overrides: vec![("KIND", self.kind as u32)],
                    },
                    &layout,
                )
            };
            let rows = n.div_ceil(256) as u32;
            let blocks = n.div_ceil(TILE) as u32;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("in_batch"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, &group, &[]);
            let mut run = |name: &'static str, workgroups: u32| {
                pass.set_pipeline(&pipeline(name));
                pass.dispatch_workgroups(workgroups, 1, 1);
            };
            run("normalize", rows);
            run("stats", blocks);
            if self.kind == Kind::NtXent && !self.views {
                run("pairs", blocks);
            }
            run("finish", 1);
            run("grad_pass", blocks);
            run("chain", rows);
            Ok(())
        })
    }
}

/// Supervised contrastive loss, pml `SupConLoss`: with `s = cos(x_a, x_k) / τ` over the other
/// rows `k ≠ a`, anchor `a`'s loss is `LSE_k s_ak − mean_{p ∈ P(a)} s_ap` (its positives: the
/// other rows of its label); the mean over anchors with a positive (pml's `AvgNonZeroReducer`,
/// which differs only where an anchor's loss underflows to 0); 0 for a batch without a negative
/// pair, as pml. Embeddings are L2-normalised first (clamp 1e-12), and the gradient goes
/// through the normalisation. The similarity matrix is never stored: O(N·D) memory.
/// # Shapes
/// `embeddings`: `[N, D]` (f32); labels `[N]` (i32, any values); the loss is a scalar.
/// Defaults: temperature 0.1, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupCon {
    /// τ, > 0.
    pub temperature: f32,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for SupCon {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            grad_scale: 1.0,
        }
    }
}

/// NT-Xent. Labels mode (the default), pml `NTXentLoss`: for each ordered positive pair
/// `(a, p)` (same label, `a ≠ p`), `−log(e^{s_ap} / (e^{s_ap} + Σ_{n ∉ label(a)} e^{s_an}))`
/// with `s = cos / τ`, the mean over positive pairs (0 without any). Views mode (SimCLR,
/// [`NtXent::views`]): embeddings `[2N, D]` whose rows `i` and `i + N` are two views of one
/// sample; each row's softmax over all other 2N − 1 rows, the mean over the 2N rows; the target
/// is not read (pass the embeddings themselves). Embeddings are L2-normalised (clamp 1e-12);
/// O(N·D) memory.
/// # Shapes
/// `embeddings`: `[N, D]` (f32); labels `[N]` (i32); the loss is a scalar. Defaults: labels
/// mode, temperature 0.07 (views mode: 0.5), grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NtXent {
    /// τ, > 0.
    pub temperature: f32,
    /// SimCLR's views mode instead of labels.
    pub views: bool,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for NtXent {
    fn default() -> Self {
        Self {
            temperature: 0.07,
            views: false,
            grad_scale: 1.0,
        }
    }
}

impl NtXent {
    /// SimCLR's views mode with its default temperature, 0.5.
    pub fn views() -> Self {
        Self {
            temperature: 0.5,
            views: true,
            grad_scale: 1.0,
        }
    }
}

impl Loss for SupCon {
    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        let call = InBatch {
            kind: Kind::SupCon,
            temperature: self.temperature,
            views: false,
            grad_scale: self.grad_scale,
        };
        call.encode(gpu, encoder, input, target, out)
    }
}

impl Loss for NtXent {
    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        // Views mode is supcon with labels i mod N: one positive per anchor, every other row in
        // the denominator.
        let call = InBatch {
            kind: if self.views {
                Kind::SupCon
            } else {
                Kind::NtXent
            },
            temperature: self.temperature,
            views: self.views,
            grad_scale: self.grad_scale,
        };
        call.encode(gpu, encoder, input, target, out)
    }
}
