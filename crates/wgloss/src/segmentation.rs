//! F4, segmentation: the overlap losses (dice, jaccard, tversky, sensitivity_specificity,
//! combo) on logits `[N, C, d...]`, with per-class (or per-image) statistics reduced on the GPU
//! and the gradient in a second pass (`shaders/segmentation/overlap.wgsl`). Logits may be f32
//! or 16-bit (F16, BF16: the gradient in their type; in multiclass mode with trailing dims of
//! an odd size it is staged in f32 and packed, `narrow`).

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, samples_per_segment, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::{OVERLAP, OVERLAP_HALF, OVERLAP_STAGED};
use crate::narrow::Narrow;
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor};

/// How logits and targets are laid out (smp's `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SegMode {
    /// Logits `[N, 1, d...]`, target mask `[N, 1, d...]` (f32, 0 or 1); sigmoid.
    Binary,
    /// Logits `[N, C, d...]`, target labels `[N, d...]` (i32); softmax over the classes.
    #[default]
    Multiclass,
    /// Logits `[N, C, d...]`, target masks `[N, C, d...]` (f32); sigmoid per element.
    Multilabel,
}

/// One call's configuration of the overlap kernel.
struct Overlap<'a> {
    kind: u32,
    mode: SegMode,
    smooth: f32,
    eps: f32,
    alpha: f32,
    beta: f32,
    gamma: f32,
    w: f32,
    ignore_index: Option<i64>,
    per_image: bool,
    weight: Option<&'a [f32]>,
    grad_scale: f32,
}

const DICE: u32 = 0;
const JACCARD: u32 = 1;
const TVERSKY: u32 = 2;
const SENS_SPEC: u32 = 3;
const COMBO: u32 = 4;
const STATS: usize = 6;
const PARAMS_STRIDE: u64 = 256;

/// Uniform block of `overlap.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    samples: u32,
    classes: u32,
    inner: u32,
    sample_base: u32,
    groups: u32,
    wx: u32,
    slots: u32,
    slot_base: u32,
    pix_base: u32,
    pix_total: u32,
    off_stat: u32,
    off_stats: u32,
    off_coef: u32,
    off_extra: u32,
    off_lse: u32,
    ignore_index: i32,
    has_ignore: u32,
    lead: u32,
    has_weight: u32,
    smooth: f32,
    eps: f32,
    alpha: f32,
    beta: f32,
    gamma: f32,
    w: f32,
    grad_scale: f32,
    target_lead: u32,
    pad: u32,
}

fn layout(gpu: &Gpu) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    gpu.layout(
        "overlap",
        &[
            storage(0, true),
            storage(1, true),
            storage(2, false),
            storage(3, false),
            storage(4, false),
            storage(5, true),
            uniform(6),
            storage(7, false),
        ],
    )
}

impl Overlap<'_> {
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        let shape = logits.shape();
        if shape.len() < 2 || shape[1] == 0 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "expected [N, C, d...] with C ≥ 1",
            });
        }
        if self.mode == SegMode::Binary && shape[1] != 1 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "binary mode takes one channel, [N, 1, d...]",
            });
        }
        let labels = self.mode == SegMode::Multiclass;
        let expected: Vec<usize> = if labels {
            [shape[0]]
                .into_iter()
                .chain(shape[2..].iter().copied())
                .collect()
        } else {
            shape.to_vec()
        };
        if target.shape() != expected {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected,
                got: target.shape().to_vec(),
            });
        }
        for (name, v, ok) in [
            ("smooth", self.smooth, self.smooth >= 0.0),
            ("eps", self.eps, self.eps > 0.0),
        ] {
            check_param(
                name,
                v.into(),
                if name == "eps" { "> 0" } else { ">= 0" },
                ok,
            )?;
        }
        crate::config::check_grad_scale(self.grad_scale)?;
        let unit_interval =
            |name, v: f32| check_param(name, v.into(), "in [0, 1]", (0.0..=1.0).contains(&v));
        match self.kind {
            TVERSKY => {
                check_param("alpha", self.alpha.into(), ">= 0", self.alpha >= 0.0)?;
                check_param("beta", self.beta.into(), ">= 0", self.beta >= 0.0)?;
                check_param("gamma", self.gamma.into(), "> 0", self.gamma > 0.0)?;
            }
            SENS_SPEC => unit_interval("w", self.w)?,
            COMBO => unit_interval("alpha", self.alpha)?,
            _ => {}
        }
        let (n, classes, inner) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
        if let Some(w) = self.weight {
            crate::classification::check_weight("weight", Some(w), classes)?;
        }
        // f32 logits, or 16-bit ones with a gradient of their type; in multiclass mode the
        // gradient pass takes two pixels (n, s), (n, s + 1) per word when S is even, and
        // otherwise (pixels sharing words in every class) stages the gradient in f32.
        let values = crate::grad_type(logits);
        logits.check_dtype("logits", values)?;
        let half = values.is_half();
        let staged = half && labels && !inner.is_multiple_of(2);
        target.check_dtype("target", if labels { DType::I32 } else { DType::F32 })?;
        out.check_scalar_typed(gpu, shape, values)?;
        logits.check_bindable(gpu, "logits")?;
        target.check_bindable(gpu, "target")?;
        if logits.len() > u32::MAX as usize / 2 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "more than 2^31 - 1 elements",
            });
        }
        let sample = classes * inner;
        let seg_samples = samples_per_segment(gpu, shape, (classes, inner), values.size(), 0)?;
        let max_elems = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
        let groups = if self.per_image { n * classes } else { classes };
        if groups > 65_535 * 65_535 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "too many (image, class) groups",
            });
        }

        struct Seg {
            first: usize,
            count: usize,
            pix_wg: usize,
            pix_base: usize,
            wx: usize,
            slot_base: usize,
            local_chunks: usize,
            grad_wg: usize,
        }
        let max_wg = gpu.max_workgroups();
        // The stats partials' slots per group: a group of every sample takes a slot from each
        // workgroup of each segment, a group of one image (one segment writes it) from each of
        // its segment's.
        let mut segs = Vec::new();
        let (mut first, mut pix_base, mut slots) = (0, 0, 0);
        while first < n {
            let count = seg_samples.min(n - first);
            let rows = count * inner;
            // Rows per invocation stay under MAX_ITERATIONS class steps (two sweeps).
            let per_row = 2 * classes + 1;
            let row_wg = |rows: usize| {
                let needed = rows.div_ceil(256 * (MAX_ITERATIONS / per_row).max(1));
                max_wg.max(needed).min(rows.div_ceil(256)).clamp(1, 65_535)
            };
            // The stats pass takes four classes per workgroup row (`CHUNK` in the shader).
            let chunks = classes.div_ceil(4);
            let local_chunks = if self.per_image {
                count * chunks
            } else {
                chunks
            };
            let len = if self.per_image { inner } else { rows };
            let wx = (max_wg / local_chunks.max(1))
                .max(len.div_ceil(256 * MAX_ITERATIONS))
                .min(len.div_ceil(256))
                .clamp(1, 65_535);
            // Steps of the gradient pass: pixels (multiclass) or elements, two per step for
            // 16-bit logits (but staged).
            let per_step = if half && !staged { 2 } else { 1 };
            let elems = (if labels { rows } else { count * sample }).div_ceil(per_step);
            let grad_wg = if labels {
                row_wg(elems)
            } else {
                max_wg
                    .max(elems.div_ceil(256 * MAX_ITERATIONS))
                    .min(elems.div_ceil(256))
                    .clamp(1, 65_535)
            };
            let slot_base = if self.per_image { 0 } else { slots };
            segs.push(Seg {
                first,
                count,
                pix_wg: row_wg(rows),
                pix_base,
                wx,
                slot_base,
                local_chunks,
                grad_wg,
            });
            pix_base += row_wg(rows);
            slots = if self.per_image {
                slots.max(wx)
            } else {
                slots + wx
            };
            first += count;
        }
        let pix_total = pix_base;
        // The scratch buffer: pixel-pass partials, statistics partials, statistics,
        // coefficients, extras, and the log-sum-exp of every pixel.
        let off_stat = 2 * pix_total;
        let off_stats = off_stat + groups * slots * STATS;
        let off_coef = off_stats + groups * STATS;
        let off_extra = off_coef + 2 * groups;
        let off_lse = off_extra + 4;
        let work_len = off_lse + if labels { n * inner } else { 0 };
        if work_len > max_elems || work_len > u32::MAX as usize {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "the per-pixel scratch exceeds a storage binding",
            });
        }
        if segs.iter().any(|s| s.local_chunks > 65_535) {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "more than 65,535 (image, four-class chunk) pairs in one segment",
            });
        }
        let (ignore_index, has_ignore) = match self.ignore_index.map(i32::try_from) {
            Some(Ok(i)) => (i, 1),
            _ => (0, 0),
        };

        gpu.scoped(|| {
            encoder.clear_buffer(out.status.buffer(), out.status.offset(), Some(4));
            encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            if n == 0 || inner == 0 {
                return Ok(());
            }
            let device = gpu.device();
            // Each segment's views are bound from the alignment before its first element, the
            // elements before it (the leads) given to the kernel.
            let whole = |s: &Seg| (s.first * sample, s.count * sample);
            let target_range = |s: &Seg| {
                if labels {
                    (s.first * inner, s.count * inner)
                } else {
                    whole(s)
                }
            };
            let mut blocks = vec![0u8; PARAMS_STRIDE as usize * segs.len()];
            for (i, s) in segs.iter().enumerate() {
                let p = Params {
                    samples: s.count as u32,
                    classes: classes as u32,
                    inner: inner as u32,
                    sample_base: s.first as u32,
                    groups: groups as u32,
                    wx: s.wx as u32,
                    slots: slots as u32,
                    slot_base: s.slot_base as u32,
                    pix_base: s.pix_base as u32,
                    pix_total: pix_total as u32,
                    off_stat: off_stat as u32,
                    off_stats: off_stats as u32,
                    off_coef: off_coef as u32,
                    off_extra: off_extra as u32,
                    off_lse: off_lse as u32,
                    ignore_index,
                    has_ignore,
                    lead: logits.binding_led(gpu, whole(s)).1,
                    has_weight: u32::from(self.weight.is_some()),
                    smooth: self.smooth,
                    eps: self.eps,
                    alpha: self.alpha,
                    beta: self.beta,
                    gamma: self.gamma,
                    w: self.w,
                    grad_scale: self.grad_scale,
                    target_lead: target.binding_led(gpu, target_range(s)).1,
                    pad: 0,
                };
                let at = i * PARAMS_STRIDE as usize;
                blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
            }
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("overlap params"),
                contents: &blocks,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let work = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("overlap scratch"),
                size: 4 * work_len.max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            // Slots of the statistics that no segment writes (per image) must read as zero.
            encoder.clear_buffer(&work, 0, None);
            let weight = match self.weight {
                Some(w) => device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("overlap weight"),
                    contents: bytemuck::cast_slice(w),
                    usage: wgpu::BufferUsages::STORAGE,
                }),
                None => device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("overlap no weight"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                }),
            };
            // The f32 gradient of a segment and its packing, when staged.
            let narrow = staged.then(|| {
                let firsts = segs.iter().map(|s| (s.first, s.count));
                Narrow::new(gpu, &out.grad, &out.status, sample, firsts)
            });
            let (bgl, pipeline_layout) = layout(gpu);
            let groups_bound: Vec<wgpu::BindGroup> = segs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("overlap"),
                        layout: &bgl,
                        entries: &[
                            entry(0, logits.binding_led(gpu, whole(s)).0),
                            entry(1, target.binding_led(gpu, target_range(s)).0),
                            entry(
                                2,
                                match &narrow {
                                    Some(n) => n.staging(i),
                                    None => out.grad.binding_led(gpu, whole(s)).0,
                                },
                            ),
                            entry(3, out.loss.binding(0, 1)),
                            entry(4, work.as_entire_binding()),
                            entry(5, weight.as_entire_binding()),
                            entry(
                                6,
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &uniforms,
                                    offset: i as u64 * PARAMS_STRIDE,
                                    size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                                }),
                            ),
                            entry(7, out.status.binding(0, 1)),
                        ],
                    })
                })
                .collect();
            let kernel = match (half, staged) {
                (true, true) => &OVERLAP_STAGED,
                (true, false) => &OVERLAP_HALF,
                (false, _) => &OVERLAP,
            };
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    kernel,
                    PipelineKey {
                        kernel: kernel.name,
                        entry,
                        overrides: [
                            ("KIND", self.kind),
                            ("MODE", self.mode as u32),
                            ("PER_IMAGE", self.per_image.into()),
                        ]
                        .into_iter()
                        .chain(half.then_some(("BF16", (values == DType::BF16).into())))
                        .collect(),
                    },
                    &pipeline_layout,
                )
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("overlap"),
                timestamp_writes: None,
            });
            if labels {
                pass.set_pipeline(&pipeline("pixel_pass"));
                for (s, g) in segs.iter().zip(&groups_bound) {
                    pass.set_bind_group(0, g, &[]);
                    pass.dispatch_workgroups(s.pix_wg as u32, 1, 1);
                }
            }
            pass.set_pipeline(&pipeline("stats_pass"));
            for (s, g) in segs.iter().zip(&groups_bound) {
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups(s.wx as u32, s.local_chunks as u32, 1);
            }
            pass.set_bind_group(0, &groups_bound[0], &[]);
            pass.set_pipeline(&pipeline("stats_reduce"));
            let (gx, gy) = (groups.min(65_535), groups.div_ceil(65_535));
            pass.dispatch_workgroups(gx as u32, gy as u32, 1);
            pass.set_pipeline(&pipeline("finish"));
            pass.dispatch_workgroups(1, 1, 1);
            let grad_pass = pipeline("grad_pass");
            pass.set_pipeline(&grad_pass);
            for (i, (s, g)) in segs.iter().zip(&groups_bound).enumerate() {
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups(s.grad_wg as u32, 1, 1);
                if let Some(narrow) = &narrow {
                    narrow.dispatch(&mut pass, i);
                    pass.set_pipeline(&grad_pass);
                }
            }
            Ok(())
        })
    }
}

/// Reports a bad label recorded by the kernel (multiclass mode only).
fn check(gpu: &Gpu, mode: SegMode, target: &Tensor, out: &LossOutput) -> Result<()> {
    if mode == SegMode::Multiclass {
        crate::classification::check_labels(gpu, target, out)
    } else {
        Ok(())
    }
}

macro_rules! overlap_loss {
    (
        $(#[$doc:meta])* $name:ident,
        { $($(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr,)* },
        |$s:ident| $overlap:expr
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            /// Multiplier of the gradient.
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* grad_scale: 1.0 }
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
                logits: &Tensor,
                target: &Tensor,
                out: &LossOutput,
            ) -> Result<()> {
                let $s = self;
                let overlap: Overlap<'_> = $overlap;
                overlap.encode(gpu, encoder, logits, target, out)
            }

            fn output_for(&self, gpu: &Gpu, input: &Tensor, _target: &Tensor) -> Result<LossOutput> {
                LossOutput::with_grad_type(gpu, input.shape(), &[], crate::grad_type(input))
            }

            fn check(&self, gpu: &Gpu, target: &Tensor, out: &LossOutput) -> Result<()> {
                let $s = self;
                let overlap: Overlap<'_> = $overlap;
                check(gpu, overlap.mode, target, out)
            }
        }
    };
}

/// Fields shared by the overlap configs, as an [`Overlap`] of `kind`.
fn plain(
    kind: u32,
    mode: SegMode,
    smooth: f32,
    eps: f32,
    ignore_index: Option<i64>,
    per_image: bool,
    grad_scale: f32,
) -> Overlap<'static> {
    Overlap {
        kind,
        mode,
        smooth,
        eps,
        alpha: 0.0,
        beta: 0.0,
        gamma: 1.0,
        w: 0.0,
        ignore_index,
        per_image,
        weight: None,
        grad_scale,
    }
}

overlap_loss!(
    /// Dice loss, smp `DiceLoss` (from logits): per class c, with sums over batch and space (or
    /// per image and class with `per_image`), `loss_c = 1 − (2I + s) / max(Σp + Σt + s, eps)`;
    /// a class absent from the target has loss 0 but counts in the mean over classes. Ignored
    /// pixels zero both p and t. The loss is a scalar (the mean over classes).
    /// # Shapes
    /// See [`SegMode`]; gradient: the logits' shape.
    Dice,
    {
        /// Layout of logits and targets (default multiclass).
        mode: SegMode = SegMode::Multiclass,
        /// Smoothing s added to numerator and denominator (≥ 0, default 0).
        smooth: f32 = 0.0,
        /// Lower clamp of the denominator (> 0, default 1e-7).
        eps: f32 = 1e-7,
        /// Target value whose pixels are left out (default none).
        ignore_index: Option<i64> = None,
        /// Statistics per image and class instead of per class (default false).
        per_image: bool = false,
    },
    |s| plain(DICE, s.mode, s.smooth, s.eps, s.ignore_index, s.per_image, s.grad_scale)
);

overlap_loss!(
    /// Jaccard (IoU) loss, smp `JaccardLoss`: as [`Dice`] with
    /// `loss_c = 1 − (I + s) / max(Σp + Σt − I + s, eps)`.
    Jaccard,
    {
        /// Layout of logits and targets (default multiclass).
        mode: SegMode = SegMode::Multiclass,
        /// Smoothing (≥ 0, default 0).
        smooth: f32 = 0.0,
        /// Lower clamp of the denominator (> 0, default 1e-7).
        eps: f32 = 1e-7,
        /// Target value whose pixels are left out (default none).
        ignore_index: Option<i64> = None,
        /// Statistics per image and class (default false).
        per_image: bool = false,
    },
    |s| plain(JACCARD, s.mode, s.smooth, s.eps, s.ignore_index, s.per_image, s.grad_scale)
);

overlap_loss!(
    /// Tversky loss, smp `TverskyLoss`: as [`Dice`] with
    /// `loss_c = 1 − (I + s) / max(I + α FP + β FN + s, eps)`, FP = Σp − I, FN = Σt − I, and
    /// the mean over classes raised to γ (focal Tversky). At a mean of 0 the gradient factor
    /// `γ m^{γ−1}` is taken as 1 for γ = 1 and 0 otherwise.
    Tversky,
    {
        /// Layout of logits and targets (default multiclass).
        mode: SegMode = SegMode::Multiclass,
        /// Weight α of false positives (default 0.5).
        alpha: f32 = 0.5,
        /// Weight β of false negatives (default 0.5).
        beta: f32 = 0.5,
        /// Focal exponent γ of the mean (> 0, default 1).
        gamma: f32 = 1.0,
        /// Smoothing (≥ 0, default 0).
        smooth: f32 = 0.0,
        /// Lower clamp of the denominator (> 0, default 1e-7).
        eps: f32 = 1e-7,
        /// Target value whose pixels are left out (default none).
        ignore_index: Option<i64> = None,
        /// Statistics per image and class (default false).
        per_image: bool = false,
    },
    |s| Overlap {
        alpha: s.alpha,
        beta: s.beta,
        gamma: s.gamma,
        ..plain(TVERSKY, s.mode, s.smooth, s.eps, s.ignore_index, s.per_image, s.grad_scale)
    }
);

overlap_loss!(
    /// Sensitivity-specificity loss (Brosch et al. 2015) on probabilities: per class,
    /// `w Σ(t−p)² t / (Σt + eps) + (1 − w) Σ(t−p)² (1−t) / (Σ(1−t) + eps)`, the mean over classes
    /// (every class counts, absent ones too: both terms are defined with eps).
    SensitivitySpecificity,
    {
        /// Layout of logits and targets (default multiclass).
        mode: SegMode = SegMode::Multiclass,
        /// Weight w of the sensitivity term (in [0, 1], default 0.05).
        w: f32 = 0.05,
        /// Added to both denominators (> 0, default 1e-5).
        eps: f32 = 1e-5,
        /// Target value whose pixels are left out (default none).
        ignore_index: Option<i64> = None,
        /// Statistics per image and class (default false).
        per_image: bool = false,
    },
    |s| Overlap {
        w: s.w,
        ..plain(SENS_SPEC, s.mode, 0.0, s.eps, s.ignore_index, s.per_image, s.grad_scale)
    }
);

overlap_loss!(
    /// Combo loss (Taghanaki et al. 2019): `α CE + (1 − α) dice` on the same multiclass logits,
    /// both from one read of each pixel's logits per pass; CE is torch `cross_entropy` (class
    /// weights, weighted mean over non-ignored pixels, 0 when all are ignored), dice is
    /// [`Dice`] with the same ignore index. A label outside [0, C) that is not ignore_index is
    /// reported as for [`crate::CrossEntropy`].
    Combo,
    {
        /// Weight α of the cross-entropy (in [0, 1], default 0.5).
        alpha: f32 = 0.5,
        /// Class weights of the cross-entropy, `[C]` (default none).
        weight: Option<Vec<f32>> = None,
        /// Label whose pixels are left out of both terms (default −100).
        ignore_index: i64 = -100,
        /// Smoothing of the dice term (≥ 0, default 0).
        smooth: f32 = 0.0,
        /// Lower clamp of the dice denominator (> 0, default 1e-7).
        eps: f32 = 1e-7,
    },
    |s| Overlap {
        alpha: s.alpha,
        weight: s.weight.as_deref(),
        ..plain(COMBO, SegMode::Multiclass, s.smooth, s.eps, Some(s.ignore_index), false, s.grad_scale)
    }
);
