//! In-batch contrastive losses (`shaders/metric/in_batch.wgsl`): the similarity matrix of the
//! batch is recomputed in tiles and never stored, so memory stays O(N·D).

use wgpu::util::DeviceExt;

use crate::elementwise::{dynamic_uniform, entry, storage};
use crate::error::{check_param, Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::IN_BATCH;
use crate::narrow::via_f32;
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor};

/// Anchors per workgroup of the tiled passes.
const TILE: usize = 16;
/// Per-anchor statistics in the scratch buffer.
const STATS: usize = 8;
/// Batch-wide values after the statistics (semi-hard: the most positives, the pair weight).
const GLOBALS: usize = 2;
/// Semi-hard: positive pairs mined per anchor and chunk, and floats per record.
const SLOTS: usize = 16;
const RECORD: usize = 8;

/// Most keys one dispatch walks: 1024 tiles of 16, and at most 8192 tile steps of 16
/// dimensions (lavapipe miscomputes workgroups that walk much longer); a multiple of 16.
fn key_range(d: usize) -> usize {
    (8192 / d.div_ceil(TILE)).clamp(1, 1024) * TILE
}

/// Uniform block of `in_batch.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    views_half: u32,
    squared: u32,
    inv_tau: f32,
    grad_scale: f32,
    margin_a: f32,
    margin_b: f32,
    k_begin: u32,
    k_end: u32,
    chunk: u32,
    pad: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    SupCon = 0,
    NtXent = 1,
    Contrastive = 2,
    TripletHard = 3,
    TripletSemi = 4,
}

impl Kind {
    /// Over distances rather than similarities over τ.
    fn distance(self) -> bool {
        matches!(
            self,
            Kind::Contrastive | Kind::TripletHard | Kind::TripletSemi
        )
    }
}

/// One call of the in-batch kernel.
struct InBatch {
    kind: Kind,
    temperature: f32,
    views: bool,
    grad_scale: f32,
    /// Contrastive: (pos_margin, neg_margin); triplet: (margin, unused).
    margins: (f32, f32),
    squared: bool,
}

impl InBatch {
    /// A loss over similarities over τ.
    fn similarity(kind: Kind, temperature: f32, views: bool, grad_scale: f32) -> Self {
        Self {
            kind,
            temperature,
            views,
            grad_scale,
            margins: (0.0, 0.0),
            squared: false,
        }
    }

    /// A loss over distances.
    fn distance(kind: Kind, margins: (f32, f32), squared: bool, grad_scale: f32) -> Self {
        Self {
            kind,
            temperature: 1.0,
            views: false,
            grad_scale,
            margins,
            squared,
        }
    }
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
        if emb.dtype().is_half() {
            // 16-bit embeddings through an f32 copy; the gradient packed back.
            return via_f32(
                gpu,
                encoder,
                &[("embeddings", emb)],
                out,
                |encoder, wide, out| self.encode(gpu, encoder, &wide[0], labels, out),
            );
        }
        let (margin_a, margin_b) = self.margins;
        check_param("margin", margin_a.into(), "finite", margin_a.is_finite())?;
        check_param(
            "neg_margin",
            margin_b.into(),
            "finite",
            margin_b.is_finite(),
        )?;
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
        if self.kind == Kind::TripletSemi && n > MAX_ITERATIONS {
            // Counting and finding each anchor's positives scans the labels in one loop.
            return Err(Error::InvalidShape {
                name: "embeddings",
                got: shape.to_vec(),
                why: "semi-hard mining scans the labels in one loop per row: N ≤ 16,384",
            });
        }
        let max_binding = gpu.limits().max_storage_buffer_binding_size;
        let records = if self.kind == Kind::TripletSemi {
            n * SLOTS * RECORD
        } else {
            0
        };
        let scratch_len = n * d + STATS * n + GLOBALS + records;
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
            let base = Params {
                n: n as u32,
                d: d as u32,
                views_half: if self.views { (n / 2) as u32 } else { 0 },
                squared: self.squared.into(),
                inv_tau: if self.kind.distance() {
                    1.0
                } else {
                    1.0 / self.temperature
                },
                grad_scale: self.grad_scale,
                margin_a,
                margin_b,
                k_begin: 0,
                k_end: n as u32,
                chunk: 0,
                pad: 0,
            };
            // One parameter block per (chunk, key range), at dynamic offsets: the walks over
            // the keys run one dispatch per range. Semi-hard mines its positive pairs in chunks
            // of 16 per anchor; an anchor may have up to N − 1 positives, and the chunks past
            // the largest count (known only on the GPU) are dispatched with no workgroups.
            let range = key_range(d);
            let ranges = n.div_ceil(range);
            let chunks = if self.kind == Kind::TripletSemi {
                (n - 1).div_ceil(SLOTS).max(1)
            } else {
                1
            };
            let align = gpu.limits().min_uniform_buffer_offset_alignment as usize;
            let stride = std::mem::size_of::<Params>().div_ceil(align) * align;
            let mut blocks_bytes = vec![0u8; stride * chunks * ranges];
            for chunk in 0..chunks {
                for r in 0..ranges {
                    let params = Params {
                        k_begin: (r * range) as u32,
                        k_end: ((r + 1) * range).min(n) as u32,
                        chunk: chunk as u32,
                        ..base
                    };
                    let at = (chunk * ranges + r) * stride;
                    blocks_bytes[at..at + std::mem::size_of::<Params>()]
                        .copy_from_slice(bytemuck::bytes_of(&params));
                }
            }
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("in-batch params"),
                contents: &blocks_bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let scratch = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("in-batch scratch"),
                size: 4 * scratch_len as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let params_size = wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64);
            let (bgl, layout) = gpu.layout(
                "in_batch",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, false),
                    storage(3, false),
                    // One parameter block bound at a time, at the dispatch's dynamic offset.
                    dynamic_uniform(4, std::mem::size_of::<Params>()),
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
                    entry(
                        4,
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniforms,
                            offset: 0,
                            size: params_size,
                        }),
                    ),
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
            let offset = |(chunk, r): (usize, usize)| ((chunk * ranges + r) * stride) as u32;
            let whole = (0, 0);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("in_batch"),
                timestamp_writes: None,
            });
            let mut run = |name: &'static str, workgroups: u32, at: (usize, usize)| {
                pass.set_pipeline(&pipeline(name));
                pass.set_bind_group(0, &group, &[offset(at)]);
                pass.dispatch_workgroups(workgroups, 1, 1);
            };
            run("normalize", rows, whole);
            if self.kind == Kind::TripletSemi {
                // Records (x, 1, 1, count) per chunk for pick, mine and grad_pass, settle, as
                // `in_batch.wgsl` reads them: the first chunk's set, the others' x left at 0
                // for `semi_max` to set where a chunk holds positives.
                let records = (n * SLOTS).div_ceil(256) as u32;
                let counts = [records, blocks, rows];
                let dispatch_words: Vec<u32> = (0..chunks)
                    .flat_map(|chunk| {
                        counts.map(|count| [u32::from(chunk == 0) * count, 1, 1, count])
                    })
                    .flatten()
                    .collect();
                let dispatch = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("semi-hard dispatch"),
                    contents: bytemuck::cast_slice(&dispatch_words),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::INDIRECT,
                });
                let (dispatch_bgl, dispatch_layout) =
                    gpu.layout_after("in_batch semi dispatch", &bgl, &[storage(0, false)]);
                let dispatch_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("semi-hard dispatch"),
                    layout: &dispatch_bgl,
                    entries: &[entry(0, dispatch.as_entire_binding())],
                });
                let semi_max = gpu.pipeline(
                    &IN_BATCH,
                    PipelineKey {
                        kernel: IN_BATCH.name,
                        entry: "semi_max",
                        overrides: vec![("KIND", self.kind as u32)],
                    },
                    &dispatch_layout,
                );
                pass.set_pipeline(&semi_max);
                pass.set_bind_group(0, &group, &[offset(whole)]);
                pass.set_bind_group(1, &dispatch_group, &[]);
                pass.dispatch_workgroups(1, 1, 1);
                let record = |chunk: usize, k: usize| (16 * (3 * chunk + k)) as u64;
                let mut run_indirect = |name: &'static str, at: (usize, usize), k: usize| {
                    pass.set_pipeline(&pipeline(name));
                    pass.set_bind_group(0, &group, &[offset(at)]);
                    pass.dispatch_workgroups_indirect(&dispatch, record(at.0, k));
                };
                for chunk in 0..chunks {
                    run_indirect("pick", (chunk, 0), 0);
                    for r in 0..ranges {
                        run_indirect("mine", (chunk, r), 1);
                    }
                    run_indirect("settle", (chunk, 0), 2);
                    for r in 0..ranges {
                        run_indirect("grad_pass", (chunk, r), 1);
                    }
                }
                let mut run = |name: &'static str, workgroups: u32, at: (usize, usize)| {
                    pass.set_pipeline(&pipeline(name));
                    pass.set_bind_group(0, &group, &[offset(at)]);
                    pass.dispatch_workgroups(workgroups, 1, 1);
                };
                run("finish", 1, whole);
                run("chain", rows, whole);
                return Ok(());
            }
            for r in 0..ranges {
                if self.kind.distance() {
                    run("distance_stats", blocks, (0, r));
                } else {
                    run("stats", blocks, (0, r));
                }
            }
            if self.kind == Kind::NtXent && !self.views {
                for r in 0..ranges {
                    run("pairs", blocks, (0, r));
                }
            }
            run("finish", 1, whole);
            for r in 0..ranges {
                run("grad_pass", blocks, (0, r));
            }
            run("chain", rows, whole);
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
/// `embeddings`: `[N, D]` (f32, or F16 / BF16 through an f32 copy); labels `[N]` (i32, any values); the loss is a scalar.
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
/// `embeddings`: `[N, D]` (f32, or F16 / BF16 through an f32 copy); labels `[N]` (i32); the loss is a scalar. Defaults: labels
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
        let call = InBatch::similarity(Kind::SupCon, self.temperature, false, self.grad_scale);
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
        let kind = if self.views {
            Kind::SupCon
        } else {
            Kind::NtXent
        };
        let call = InBatch::similarity(kind, self.temperature, self.views, self.grad_scale);
        call.encode(gpu, encoder, input, target, out)
    }
}

/// Contrastive loss over every pair of a labelled batch, pml `ContrastiveLoss` with its
/// defaults: with `D = ‖x̂_i − x̂_j‖₂` of the L2-normalised rows (F.normalize, eps 1e-12),
/// positive pairs (same label, ordered, `i ≠ j`) cost `relu(D − pos_margin)` and negative ones
/// `relu(neg_margin − D)`; the loss is the mean of the non-zero positive terms plus the mean of
/// the non-zero negative ones (pml's `AvgNonZeroReducer`; 0 for an empty group). Distances are
/// recomputed in tiles from the differences (exact for close rows): O(N·D) memory.
/// # Shapes
/// `embeddings`: `[N, D]` (f32, or F16 / BF16 through an f32 copy); labels `[N]` (i32); the loss is a scalar. Defaults:
/// pos_margin 0, neg_margin 1, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContrastiveBatch {
    /// Margin below which positive pairs cost nothing, finite.
    pub pos_margin: f32,
    /// Margin above which negative pairs cost nothing, finite.
    pub neg_margin: f32,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for ContrastiveBatch {
    fn default() -> Self {
        Self {
            pos_margin: 0.0,
            neg_margin: 1.0,
            grad_scale: 1.0,
        }
    }
}

impl Loss for ContrastiveBatch {
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
        let (p, n) = (self.pos_margin, self.neg_margin);
        check_param("pos_margin", p.into(), "finite", p.is_finite())?;
        check_param("neg_margin", n.into(), "finite", n.is_finite())?;
        let margins = (p, n);
        let call = InBatch::distance(Kind::Contrastive, margins, false, self.grad_scale);
        call.encode(gpu, encoder, input, target, out)
    }
}

/// Declares a triplet loss mining its triplets in the batch: its config (margin, squared
/// distances, grad_scale; defaults 1, false, 1) and its [`Loss`] on the in-batch kernel.
macro_rules! mined_triplet {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// Margin, finite.
            pub margin: f32,
            /// Squared distances.
            pub squared: bool,
            /// Multiplier of the gradient.
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    margin: 1.0,
                    squared: false,
                    grad_scale: 1.0,
                }
            }
        }

        impl Loss for $name {
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
                let margins = (self.margin, 0.0);
                let call = InBatch::distance($kind, margins, self.squared, self.grad_scale);
                call.encode(gpu, encoder, input, target, out)
            }
        }
    };
}

mined_triplet!(
    /// Triplet loss with batch-hard mining (Hermans, Beyer & Leibe 2017) on a labelled batch: with
    /// `d_ij = ‖x_i − x_j‖₂` of the raw rows (or its square), each anchor with a positive and a
    /// negative takes its farthest positive and its closest negative (the lowest index on a tie);
    /// the loss is the mean over those anchors of `max(0, d_ap − d_an + margin)`, the hinge passing
    /// its gradient at 0; the mining is constant for the gradient. Distances are recomputed in
    /// tiles: O(N·D) memory.
    /// # Shapes
    /// `embeddings`: `[N, D]` (f32, or F16 / BF16 through an f32 copy); labels `[N]` (i32); the loss is a scalar. Defaults: margin 1,
    /// squared false, grad_scale 1.
    TripletBatchHard,
    Kind::TripletHard
);

mined_triplet!(
    /// Triplet loss with semi-hard mining (Schroff et al. 2015, FaceNet; TF Addons
    /// `triplet_semihard_loss` with its L2 distance): with `d_ij = ‖x_i − x_j‖₂` of the raw rows (or
    /// its square), each ordered positive pair `(a, p)` (same label, `a ≠ p`) takes the closest
    /// negative farther than `p` (`d_an > d_ap`), or the farthest negative if there is none (the
    /// lowest index on a tie); the loss is the mean over the positive pairs with a negative of
    /// `max(0, d_ap − d_an + margin)`, the hinge passing its gradient at 0; the mining is constant
    /// for the gradient. Unlike TF Addons, a batch of one label (positives without any negative)
    /// gives 0 rather than `mean(d_ap + margin)`. Distances are recomputed in tiles and the pairs
    /// mined in chunks of 16 per anchor: O(N·D) memory, a pass over the batch per chunk (one chunk
    /// when no label has more than 17 members). N is at most 16,384 (each row scans the labels in
    /// one loop).
    /// # Shapes
    /// `embeddings`: `[N, D]` (f32, or F16 / BF16 through an f32 copy); labels `[N]` (i32); the loss is a scalar. Defaults: margin 1,
    /// squared false, grad_scale 1.
    TripletSemiHard,
    Kind::TripletSemi
);
