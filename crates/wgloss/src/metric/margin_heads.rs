//! Margin-softmax heads (`shaders/metric/margin_heads.wgsl`): cosface, arcface, sphereface and
//! adaface on embeddings `[N, D]`, class weights `[C, D]` and labels `[N]`. The cosines are
//! recomputed in tiles and never stored, so memory stays O(N·D + C·D); the class weights are
//! processed in segments of one storage binding each, so C·D may exceed a binding.

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::MARGIN_HEADS;
use crate::narrow::via_f32_grads;
use crate::{DType, Gpu, LossOutput, Reduction, Tensor, TENSOR_USAGES};

/// Rows or classes per workgroup of the tiled passes.
const TILE: usize = 16;
/// Per-row statistics in the scratch buffer.
const ROW_STATS: usize = 10;
/// Most chunks of classes per segment (each a running log-sum-exp per row).
const CHUNKS_PER_SEGMENT: usize = 64;
/// Segments start at multiples of this many classes, so each weight slice starts at a multiple
/// of 256 bytes (the largest storage offset alignment wgpu allows).
const SEGMENT_ALIGN: usize = 64;
/// Most rows: 65,535 workgroups of 16.
const MAX_BLOCKS: usize = 65_535;
/// Most classes per segment and rows per row group: 1024 tiles of 16 per workgroup walk, and
/// at most 8192 tile steps of 16 dimensions (lavapipe miscomputes workgroups that run much
/// longer). A multiple of [`SEGMENT_ALIGN`].
fn walk(d: usize) -> usize {
    let tiles = (8192 / d.div_ceil(TILE)).clamp(SEGMENT_ALIGN / TILE, 1024);
    tiles * TILE / SEGMENT_ALIGN * SEGMENT_ALIGN
}

/// Uniform block of `margin_heads.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    classes: u32,
    c0: u32,
    cs: u32,
    chunk_len: u32,
    chunks: u32,
    r0: u32,
    rs: u32,
    sphere_m: u32,
    normalize: u32,
    extra: u32,
    scale: f32,
    margin: f32,
    cos_m: f32,
    sin_m: f32,
    th: f32,
    mm: f32,
    h: f32,
    t_alpha: f32,
    grad_scale: f32,
    pad_f: [f32; 3],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cos = 0,
    Arc = 1,
    Sphere = 2,
    Ada = 3,
}

/// Outputs of a margin head: the mean loss, the gradients w.r.t. the embeddings (`out.grad`)
/// and the class weights, and the status word of the label check.
#[derive(Debug)]
pub struct HeadOutput {
    /// Loss (`[]`), gradient w.r.t. the embeddings (`[N, D]`) and status word.
    pub out: LossOutput,
    /// Gradient w.r.t. the class weights, `[C, D]`.
    pub grad_weight: Tensor,
}

impl HeadOutput {
    /// Allocates outputs for `n` embeddings of dimension `d` and `classes` class weights.
    pub fn new(gpu: &Gpu, n: usize, d: usize, classes: usize) -> Result<Self> {
        Ok(Self {
            out: LossOutput::new(gpu, &[n, d], Reduction::Mean)?,
            grad_weight: Tensor::zeros(gpu, &[classes, d])?,
        })
    }
}

/// A margin-softmax head: a softmax cross-entropy over the cosines of L2-normalised embeddings
/// and class weights, with a margin on each row's label; the two ways to run it.
pub trait MarginHead {
    /// Records the fused forward+backward into `encoder`, writing `out`. Arguments are validated
    /// before anything is recorded; a label outside `[0, C)` is reported in the status word and
    /// nothing else is written.
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        embeddings: &Tensor,
        weight: &Tensor,
        labels: &Tensor,
        out: &HeadOutput,
    ) -> Result<()>;

    /// Computes loss and gradients into new tensors and waits for the device; a bad label is
    /// [`Error::LabelOutOfRange`].
    fn compute(
        &self,
        gpu: &Gpu,
        embeddings: &Tensor,
        weight: &Tensor,
        labels: &Tensor,
    ) -> Result<HeadOutput> {
        let (n, d) = match embeddings.shape() {
            &[n, d] => (n, d),
            s => {
                return Err(Error::InvalidShape {
                    name: "embeddings",
                    got: s.to_vec(),
                    why: "expected [N, D]",
                })
            }
        };
        let classes = weight.shape().first().copied().unwrap_or(0);
        let mut out = HeadOutput::new(gpu, n, d, classes)?;
        // 16-bit inputs: gradients of their type.
        if embeddings.dtype().is_half() {
            out.out.grad = Tensor::zeros_typed(gpu, &[n, d], embeddings.dtype())?;
            out.grad_weight = Tensor::zeros_typed(gpu, &[classes, d], weight.dtype())?;
        }
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.encode(gpu, &mut encoder, embeddings, weight, labels, &out)?;
        gpu.submit_and_wait(encoder)?;
        crate::classification::check_labels_of(gpu, labels, &out.out, classes)?;
        Ok(out)
    }
}

/// The head's logit parameters.
pub(crate) struct Head {
    pub(crate) kind: Kind,
    pub(crate) scale: f32,
    pub(crate) margin: f32,
    pub(crate) sphere_m: u32,
    pub(crate) h: f32,
    pub(crate) t_alpha: f32,
    pub(crate) grad_scale: f32,
    /// Whether embeddings and class weights are L2-normalised (every head but info_nce's
    /// `normalize: false`).
    pub(crate) normalize: bool,
}

/// One class segment: its classes and chunks.
struct Segment {
    c0: usize,
    cs: usize,
    chunk_len: usize,
    chunks: usize,
}

/// Splits `classes` into segments of at most `per_segment` classes, each into chunks.
fn segments(classes: usize, per_segment: usize) -> Vec<Segment> {
    (0..classes)
        .step_by(per_segment)
        .map(|c0| {
            let cs = per_segment.min(classes - c0);
            let wanted = cs.div_ceil(256).clamp(1, CHUNKS_PER_SEGMENT);
            let chunk_len = cs.div_ceil(wanted).div_ceil(TILE) * TILE;
            Segment {
                c0,
                cs,
                chunk_len,
                chunks: cs.div_ceil(chunk_len),
            }
        })
        .collect()
}

impl Head {
    /// A head of scale `s` and margin `m` (cosface, arcface), validated, without state.
    fn scale_margin(
        kind: Kind,
        scale: f32,
        margin: f32,
        grad_scale: f32,
    ) -> Result<(Self, Option<&'static wgpu::Buffer>)> {
        check_finite("scale", scale)?;
        check_finite("margin", margin)?;
        let head = Head {
            kind,
            scale,
            margin,
            sphere_m: 1,
            h: 0.0,
            t_alpha: 0.0,
            grad_scale,
            normalize: true,
        };
        Ok((head, None))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        emb: &Tensor,
        weight: &Tensor,
        labels: &Tensor,
        out: &HeadOutput,
        state: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        crate::config::check_grad_scale(self.grad_scale)?;
        if emb.dtype().is_half() {
            // 16-bit embeddings and weights through f32 copies; both gradients packed back.
            let values = [("embeddings", emb), ("weight", weight)];
            let grads = [
                ("grad", &out.out.grad, emb.shape()),
                ("grad_weight", &out.grad_weight, weight.shape()),
            ];
            let status = Some(&out.out.status);
            return via_f32_grads(gpu, encoder, &values, &grads, status, |encoder, wide, g| {
                let out32 = HeadOutput {
                    out: LossOutput {
                        loss: out.out.loss.clone(),
                        grad: g[0].clone(),
                        status: out.out.status.clone(),
                    },
                    grad_weight: g[1].clone(),
                };
                self.encode(gpu, encoder, &wide[0], &wide[1], labels, &out32, state)
            });
        }
        let shape = emb.shape();
        if shape.len() != 2 || shape[1] == 0 {
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why: "expected [N, D] with D ≥ 1",
            });
        }
        let (n, d) = (shape[0], shape[1]);
        if n == 0 {
            return Err(Error::Empty { name: "embeddings" });
        }
        let classes = weight.shape().first().copied().unwrap_or(0);
        if weight.shape() != [classes, d] {
            return Err(Error::ShapeMismatch {
                name: "weight",
                expected: vec![classes, d],
                got: weight.shape().to_vec(),
            });
        }
        if classes == 0 {
            return Err(Error::Empty { name: "weight" });
        }
        if labels.shape() != [n] {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected: vec![n],
                got: labels.shape().to_vec(),
            });
        }
        emb.check_dtype("embeddings", DType::F32)?;
        weight.check_dtype("weight", DType::F32)?;
        labels.check_dtype("target", DType::I32)?;
        out.out.check_scalar(gpu, shape)?;
        out.grad_weight.check_dtype("grad_weight", DType::F32)?;
        if out.grad_weight.shape() != [classes, d] {
            return Err(Error::ShapeMismatch {
                name: "grad_weight",
                expected: vec![classes, d],
                got: out.grad_weight.shape().to_vec(),
            });
        }
        for (t, name) in [
            (emb, "embeddings"),
            (weight, "weight"),
            (labels, "target"),
            (&out.grad_weight, "grad_weight"),
        ] {
            t.check_bindable(gpu, name)?;
        }
        let max_floats = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
        if n * d > max_floats || n.div_ceil(TILE) > MAX_BLOCKS {
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why: "the embeddings must fit one storage binding, N ≤ 1,048,560",
            });
        }
        let walk = walk(d);
        let per_segment = (max_floats / d / SEGMENT_ALIGN * SEGMENT_ALIGN).min(walk);
        if per_segment == 0 {
            return Err(Error::InvalidShape {
                name: "weight",
                got: weight.shape().to_vec(),
                why: "64 class rows must fit one storage binding",
            });
        }
        let segs = segments(classes, per_segment);
        let chunks = segs.iter().map(|s| s.chunks).max().unwrap_or(1);
        let scratch_len = n * (ROW_STATS + 2 * chunks);
        // Then AdaFace's state (2 floats, padded to 4) and one segment's class norms.
        let class_norms = segs.iter().map(|s| s.cs).max().unwrap_or(0);
        if scratch_len + 4 + class_norms > max_floats {
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why: "the per-row statistics over the class chunks must fit one storage binding",
            });
        }
        gpu.scoped(|| {
            let status = &out.out.status;
            encoder.clear_buffer(status.buffer(), status.offset(), Some(4));
            let loss = &out.out.loss;
            encoder.clear_buffer(loss.buffer(), loss.offset(), Some(4));
            let device = gpu.device();
            let scratch = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("margin-head scratch"),
                size: 4 * (scratch_len + 4 + class_norms) as u64,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let state_at = 4 * scratch_len as u64;
            if let Some(state) = state {
                encoder.copy_buffer_to_buffer(state, 0, &scratch, state_at, 8);
            }
            let (bgl, layout) = gpu.layout(
                "margin_heads",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, true),
                    storage(3, false),
                    storage(4, false),
                    storage(5, false),
                    uniform(6),
                    storage(7, false),
                    storage(8, false),
                ],
            );
            let m = f64::from(self.margin);
            let base = Params {
                n: n as u32,
                d: d as u32,
                classes: classes as u32,
                c0: 0,
                cs: 0,
                chunk_len: 0,
                chunks: 0,
                r0: 0,
                rs: n as u32,
                sphere_m: self.sphere_m,
                normalize: self.normalize.into(),
                extra: scratch_len as u32,
                scale: self.scale,
                margin: self.margin,
                cos_m: m.cos() as f32,
                sin_m: m.sin() as f32,
                th: (std::f64::consts::PI - m).cos() as f32,
                mm: ((std::f64::consts::PI - m).sin() * m) as f32,
                h: self.h,
                t_alpha: self.t_alpha,
                grad_scale: self.grad_scale,
                pad_f: [0.0; 3],
            };
            // One bind group per segment and row group (only grad_classes walks row groups).
            let bind = |s: &Segment, r0: usize| {
                let params = Params {
                    c0: s.c0 as u32,
                    cs: s.cs as u32,
                    chunk_len: s.chunk_len as u32,
                    chunks: s.chunks as u32,
                    r0: r0 as u32,
                    rs: walk.min(n - r0) as u32,
                    ..base
                };
                let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("margin-head params"),
                    contents: bytemuck::bytes_of(&params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("margin_heads"),
                    layout: &bgl,
                    entries: &[
                        entry(0, emb.binding(0, n * d)),
                        entry(1, labels.binding(0, n)),
                        entry(2, weight.binding(s.c0 * d, s.cs * d)),
                        entry(3, out.out.grad.binding(0, n * d)),
                        entry(4, out.grad_weight.binding(s.c0 * d, s.cs * d)),
                        entry(5, out.out.loss.binding(0, 1)),
                        entry(6, uniforms.as_entire_binding()),
                        entry(7, scratch.as_entire_binding()),
                        entry(8, status.binding(0, 1)),
                    ],
                })
            };
            let groups: Vec<Vec<wgpu::BindGroup>> = segs
                .iter()
                .map(|s| (0..n).step_by(walk).map(|r0| bind(s, r0)).collect())
                .collect();
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    &MARGIN_HEADS,
                    PipelineKey {
                        kernel: MARGIN_HEADS.name,
                        entry,
                        overrides: vec![("KIND", self.kind as u32)],
                    },
                    &layout,
                )
            };
            let rows = n.div_ceil(256) as u32;
            let row_blocks = n.div_ceil(TILE) as u32;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("margin_heads"),
                timestamp_writes: None,
            });
            let mut run = |name: &'static str, group: &wgpu::BindGroup, x: u32, y: u32| {
                pass.set_pipeline(&pipeline(name));
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x, y, 1);
            };
            let first = &groups[0][0];
            run("rows_prepare", first, rows, 1);
            if self.kind == Kind::Ada {
                run("adaface_stats", first, 1, 1);
            }
            let norms = |s: &Segment| s.cs.div_ceil(256) as u32;
            for (s, g) in segs.iter().zip(&groups) {
                run("classes_prepare", &g[0], norms(s), 1);
                run("stats", &g[0], row_blocks, s.chunks as u32);
                run("merge", &g[0], rows, 1);
            }
            run("rows_finish", first, rows, 1);
            run("finish", first, 1, 1);
            // The scratch holds one segment's class norms: the last one's until here.
            let several = segs.len() > 1;
            for (s, g) in segs.iter().zip(&groups) {
                if several {
                    run("classes_prepare", &g[0], norms(s), 1);
                }
                run("grad_rows", &g[0], row_blocks, 1);
            }
            for (s, g) in segs.iter().zip(&groups) {
                if several {
                    run("classes_prepare", &g[0], norms(s), 1);
                }
                for row_group in g {
                    run("grad_classes", row_group, s.cs.div_ceil(TILE) as u32, 1);
                }
                run("chain_classes", &g[0], norms(s), 1);
            }
            run("chain_rows", first, rows, 1);
            drop(pass);
            if let Some(state) = state {
                encoder.copy_buffer_to_buffer(&scratch, state_at, state, 0, 8);
            }
            Ok(())
        })
    }
}

fn check_finite(name: &'static str, v: f32) -> Result<()> {
    check_param(name, v.into(), "finite", v.is_finite())
}

macro_rules! head_impl {
    ($name:ident, |$s:ident| $head:expr) => {
        impl MarginHead for $name {
            fn encode(
                &self,
                gpu: &Gpu,
                encoder: &mut wgpu::CommandEncoder,
                embeddings: &Tensor,
                weight: &Tensor,
                labels: &Tensor,
                out: &HeadOutput,
            ) -> Result<()> {
                let $s = self;
                let (head, state): (Head, Option<&wgpu::Buffer>) = $head?;
                head.encode(gpu, encoder, embeddings, weight, labels, out, state)
            }
        }
    };
}

/// CosFace (Wang et al. 2018), pml `CosFaceLoss`: `z_ic = s·cos_ic`, `z_iy = s·(cos_iy − m)`,
/// the mean softmax cross-entropy over rows. Embeddings and class weights are L2-normalised
/// (F.normalize, eps 1e-12); the cosines are not clamped (as pml).
/// # Shapes
/// `embeddings` `[N, D]`, `weight` `[C, D]` (pml's `W` transposed), labels `[N]` (i32 in
/// `[0, C)`); the loss is a scalar. Defaults: scale 64, margin 0.35, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosFace {
    /// s, finite.
    pub scale: f32,
    /// m, finite.
    pub margin: f32,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for CosFace {
    fn default() -> Self {
        Self {
            scale: 64.0,
            margin: 0.35,
            grad_scale: 1.0,
        }
    }
}

head_impl!(CosFace, |c| Head::scale_margin(
    Kind::Cos,
    c.scale,
    c.margin,
    c.grad_scale
));

/// ArcFace (Deng et al. 2019), insightface's `CombinedMarginLoss` with margins (1, m, 0), as pml
/// `ArcFaceLoss`: `z_iy = s·cos(θ_iy + m)` while `cos θ_iy > cos(π − m)`, else the insightface
/// fallback `s·(cos θ_iy − sin(π − m)·m)` (so `θ + m > π` does not bend the logit back up);
/// other logits `s·cos`. Normalisation, shapes and reduction as [`CosFace`].
/// Defaults: scale 64, margin 0.5 (radians), grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArcFace {
    /// s, finite.
    pub scale: f32,
    /// m in radians, finite.
    pub margin: f32,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for ArcFace {
    fn default() -> Self {
        Self {
            scale: 64.0,
            margin: 0.5,
            grad_scale: 1.0,
        }
    }
}

head_impl!(ArcFace, |c| Head::scale_margin(
    Kind::Arc,
    c.scale,
    c.margin,
    c.grad_scale
));

/// Largest SphereFace margin: the multiple-angle sum's binomials stay exact in f32.
pub const SPHEREFACE_MAX_MARGIN: u32 = 16;

/// SphereFace (Liu et al. 2017), pml `SphereFaceLoss` (scale 1, no lambda annealing): with
/// `r_i = ‖x_i‖` (the raw norm), `z_ic = r_i·cos θ_ic` and `z_iy = r_i·ψ(θ_iy)`,
/// `ψ(θ) = (−1)^k cos(mθ) − 2k` for `θ ∈ [kπ/m, (k+1)π/m]`; the class weights are normalised.
/// The gradient flows through `r_i` too.
/// # Shapes
/// As [`CosFace`]. Defaults: margin 4, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SphereFace {
    /// m, an integer in `1..=16`.
    pub margin: u32,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for SphereFace {
    fn default() -> Self {
        Self {
            margin: 4,
            grad_scale: 1.0,
        }
    }
}

head_impl!(SphereFace, |c| {
    check_param(
        "margin",
        c.margin.into(),
        "an integer in 1..=16",
        (1..=SPHEREFACE_MAX_MARGIN).contains(&c.margin),
    )
    .map(|()| {
        let head = Head {
            kind: Kind::Sphere,
            scale: 1.0,
            margin: 0.0,
            sphere_m: c.margin,
            h: 0.0,
            t_alpha: 0.0,
            grad_scale: c.grad_scale,
            normalize: true,
        };
        (head, None)
    })
});

/// Configuration of [`AdaFace`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaFaceConfig {
    /// m, finite (default 0.4).
    pub margin: f32,
    /// h, the concentration of the norm-adaptive margin, finite (default 0.333).
    pub h: f32,
    /// s, finite (default 64).
    pub scale: f32,
    /// Momentum of the batch statistics, in `[0, 1]` (default 0.01).
    pub t_alpha: f32,
    /// Multiplier of the gradients (default 1).
    pub grad_scale: f32,
}

impl Default for AdaFaceConfig {
    fn default() -> Self {
        Self {
            margin: 0.4,
            h: 0.333,
            scale: 64.0,
            t_alpha: 0.01,
            grad_scale: 1.0,
        }
    }
}

/// AdaFace (Kim et al. 2022), the official `head.py`: the margin of each row adapts to its
/// embedding norm `n_i = clip(‖x_i‖, 0.001, 100)` relative to running statistics,
/// `a_i = clip(h·(n_i − μ)/(σ + 0.001), −1, 1)`, `z_iy = s·(cos(clip(θ_iy − m·a_i, ε, π − ε))
/// − m − m·a_i)`, every cosine clamped to `[−1 + ε, 1 − ε]` (ε = 0.001). μ and σ are EMAs
/// (momentum `t_alpha`) of the batch mean and unbiased std of the norms, updated on the GPU
/// before the margins are taken (initially 20 and 100); a batch of one row has std 0 (head.py
/// gives NaN). The norms and statistics are constants for the gradient, as in head.py.
/// # Shapes
/// As [`CosFace`].
#[derive(Debug)]
pub struct AdaFace {
    config: AdaFaceConfig,
    state: wgpu::Buffer,
}

impl AdaFace {
    /// Validates `config` and creates the GPU state (batch mean 20, batch std 100).
    pub fn new(gpu: &Gpu, config: AdaFaceConfig) -> Result<Self> {
        let c = &config;
        check_finite("margin", c.margin)?;
        check_finite("h", c.h)?;
        check_finite("scale", c.scale)?;
        check_param(
            "t_alpha",
            c.t_alpha.into(),
            "in [0, 1]",
            (0.0..=1.0).contains(&c.t_alpha),
        )?;
        crate::config::check_grad_scale(c.grad_scale)?;
        let state = gpu.scoped(|| {
            Ok(gpu
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("adaface state"),
                    contents: bytemuck::cast_slice(&[20.0f32, 100.0]),
                    usage: TENSOR_USAGES,
                }))
        })?;
        Ok(Self { config, state })
    }

    /// The configuration.
    pub fn config(&self) -> &AdaFaceConfig {
        &self.config
    }

    /// The running batch mean and batch std of the norms.
    pub fn running_stats(&self, gpu: &Gpu) -> Result<[f32; 2]> {
        let bytes = gpu.read_bytes(&self.state, 0, 8)?;
        let s: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok([s[0], s[1]])
    }
}

head_impl!(AdaFace, |a| {
    let c = &a.config;
    Ok::<_, Error>((
        Head {
            kind: Kind::Ada,
            scale: c.scale,
            margin: c.margin,
            sphere_m: 1,
            h: c.h,
            t_alpha: c.t_alpha,
            grad_scale: c.grad_scale,
            normalize: true,
        },
        Some(&a.state),
    ))
});
