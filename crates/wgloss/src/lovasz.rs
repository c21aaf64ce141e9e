//! Lovász losses (F4), smp `LovaszLoss`: errors sorted per group on the GPU
//! ([`crate::encode_sort`]), the Lovász gradient from running sums of the sorted ground truth,
//! and its chain back to the logits, with no host round-trip
//! (`shaders/segmentation/lovasz.wgsl`).

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, samples_per_segment, storage, uniform};
use crate::error::{Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::LOVASZ;
use crate::narrow::via_f32;
use crate::sort::{encode_sort, grid, tile_invocations, SORT_BLOCK};
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor, TENSOR_USAGES};

/// Largest number of pixels in one sorted group.
pub const LOVASZ_MAX_GROUP: usize = 1 << 23;

/// Uniform block of `lovasz.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    samples: u32,
    classes: u32,
    inner: u32,
    sample_base: u32,
    group_len: u32,
    chunk_groups: u32,
    group_base: u32,
    groups: u32,
    ignore_index: i32,
    has_ignore: u32,
    per_image: u32,
    images: u32,
    wg_base: u32,
    num_partials: u32,
    write_loss: u32,
    grad_scale: f32,
    lead: u32,
    target_lead: u32,
    pad: [u32; 2],
}

const PARAMS_STRIDE: u64 = 256;

/// One call of the Lovász kernel.
struct Lovasz {
    hinge: bool,
    per_image: bool,
    ignore_index: Option<i64>,
    grad_scale: f32,
}

impl Lovasz {
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        crate::config::check_grad_scale(self.grad_scale)?;
        if logits.dtype().is_half() {
            // 16-bit logits (and hinge targets) through f32 copies; the gradient packed back.
            let hinge_target = [("target", target)];
            let values: Vec<_> = [("logits", logits)]
                .into_iter()
                .chain(hinge_target.into_iter().filter(|_| self.hinge))
                .collect();
            return via_f32(gpu, encoder, &values, out, |encoder, wide, out| {
                let target = if self.hinge { &wide[1] } else { target };
                self.encode(gpu, encoder, &wide[0], target, out)
            });
        }
        let shape = logits.shape();
        if shape.len() < 2 || shape[1] == 0 || (self.hinge && shape[1] != 1) {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: if self.hinge {
                    "lovasz_hinge takes [N, 1, d...]"
                } else {
                    "expected [N, C, d...] with C ≥ 1"
                },
            });
        }
        let (n, classes) = (shape[0], shape[1]);
        let inner: usize = shape[2..].iter().product();
        let expected: Vec<usize> = if self.hinge {
            shape.to_vec()
        } else {
            [n].into_iter().chain(shape[2..].iter().copied()).collect()
        };
        if target.shape() != expected {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected,
                got: target.shape().to_vec(),
            });
        }
        logits.check_dtype("logits", DType::F32)?;
        target.check_dtype("target", if self.hinge { DType::F32 } else { DType::I32 })?;
        out.check_scalar(gpu, shape)?;
        logits.check_bindable(gpu, "logits")?;
        target.check_bindable(gpu, "target")?;
        let pixels = n * inner;
        if pixels == 0 {
            // Nothing to sort: loss 0, no gradient.
            return gpu.scoped(|| {
                encoder.clear_buffer(out.status.buffer(), out.status.offset(), Some(4));
                encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
                Ok(())
            });
        }
        let group_pixels = if self.per_image { inner } else { pixels };
        let groups = if self.hinge {
            if self.per_image {
                n
            } else {
                1
            }
        } else if self.per_image {
            n * classes
        } else {
            classes
        };
        if classes >= 1 << 24 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "Lovász-softmax takes fewer than 2^24 classes",
            });
        }
        if group_pixels > LOVASZ_MAX_GROUP || pixels >= 1 << 30 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "a Lovász group holds at most 2^23 pixels",
            });
        }
        let p = group_pixels.max(1).next_power_of_two();
        let limits = gpu.limits();
        let max_elems = (limits.max_storage_buffer_binding_size / 4) as usize;
        // Chunks of whole groups: a multiple of the sort block, within one binding.
        let unit = (SORT_BLOCK / p).max(1);
        let chunk_groups = ((max_elems / p) / unit * unit)
            .max(unit)
            .min(groups.div_ceil(unit) * unit);
        if chunk_groups * p > max_elems {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "one Lovász group exceeds a storage binding",
            });
        }
        let chunks = groups.div_ceil(chunk_groups).max(1);
        // Logits segments of whole samples.
        let sample = classes * inner;
        let seg_samples = samples_per_segment(gpu, shape, (classes, inner), 4, 0)?;
        let mut segs = Vec::new();
        let mut first = 0;
        while first < n {
            let count = seg_samples.min(n - first);
            segs.push((first, count));
            first += count;
        }
        let blocks_per_chunk = (chunk_groups * p) / SORT_BLOCK;
        let num_partials = blocks_per_chunk * chunks;
        let work_len = 2 * groups + groups * p / SORT_BLOCK + 1 + num_partials;
        if work_len > max_elems {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "the Lovász scratch exceeds a storage binding",
            });
        }
        let (ignore_index, has_ignore) = match self.ignore_index.map(i32::try_from) {
            Some(Ok(i)) => (i, 1),
            _ => (0, 0),
        };
        let max_wg = gpu.max_workgroups();
        let row_wg = |rows: usize| {
            let needed = rows.div_ceil(256 * (MAX_ITERATIONS / (2 * classes + 1)).max(1));
            max_wg.max(needed).min(rows.div_ceil(256)).clamp(1, 65_535)
        };

        gpu.scoped(|| {
            encoder.clear_buffer(out.status.buffer(), out.status.offset(), Some(4));
            encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            if pixels == 0 {
                return Ok(());
            }
            let device = gpu.device();
            // Each segment's views are bound from the alignment before its first element, the
            // elements before it (the leads) given to the kernel.
            let whole = |(first, count)| (first * sample, count * sample);
            let target_range = |(first, count)| {
                if self.hinge {
                    whole((first, count))
                } else {
                    (first * inner, count * inner)
                }
            };
            // One parameter block per (chunk, segment).
            let mut blocks = vec![0u8; PARAMS_STRIDE as usize * chunks * segs.len()];
            for k in 0..chunks {
                for (i, &(first, count)) in segs.iter().enumerate() {
                    let pr = Params {
                        samples: count as u32,
                        classes: classes as u32,
                        inner: inner as u32,
                        sample_base: first as u32,
                        group_len: p as u32,
                        chunk_groups: chunk_groups as u32,
                        group_base: (k * chunk_groups) as u32,
                        groups: groups as u32,
                        ignore_index,
                        has_ignore,
                        per_image: u32::from(self.per_image),
                        images: n as u32,
                        wg_base: (k * blocks_per_chunk) as u32,
                        num_partials: num_partials as u32,
                        write_loss: u32::from(i == 0),
                        grad_scale: self.grad_scale,
                        lead: logits.binding_led(gpu, whole((first, count))).1,
                        target_lead: target.binding_led(gpu, target_range((first, count))).1,
                        pad: [0; 2],
                    };
                    let at = (k * segs.len() + i) * PARAMS_STRIDE as usize;
                    blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&pr));
                }
            }
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("lovasz params"),
                contents: &blocks,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let slots = chunks * chunk_groups * p;
            let buffer = |label| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 4 * slots as u64,
                    usage: TENSOR_USAGES,
                    mapped_at_creation: false,
                })
            };
            let (keys, vals) = (buffer("lovasz keys"), buffer("lovasz values"));
            let work = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("lovasz scratch"),
                size: 4 * work_len.max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let (bgl, pipeline_layout) = gpu.layout(
                "lovasz",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, false),
                    storage(3, false),
                    storage(4, false),
                    storage(5, false),
                    uniform(6),
                    storage(7, false),
                    storage(8, false),
                ],
            );
            let chunk_bytes = 4 * (chunk_groups * p) as u64;
            let bind = |k: usize, i: usize| {
                fn slice(b: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset,
                        size: wgpu::BufferSize::new(size),
                    })
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("lovasz"),
                    layout: &bgl,
                    entries: &[
                        entry(0, logits.binding_led(gpu, whole(segs[i])).0),
                        entry(1, target.binding_led(gpu, target_range(segs[i])).0),
                        entry(2, out.grad.binding_led(gpu, whole(segs[i])).0),
                        entry(3, out.loss.binding(0, 1)),
                        entry(4, slice(&keys, k as u64 * chunk_bytes, chunk_bytes)),
                        entry(5, slice(&vals, k as u64 * chunk_bytes, chunk_bytes)),
                        entry(
                            6,
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &uniforms,
                                offset: (k * segs.len() + i) as u64 * PARAMS_STRIDE,
                                size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                            }),
                        ),
                        entry(7, work.as_entire_binding()),
                        entry(8, out.status.binding(0, 1)),
                    ],
                })
            };
            let bound: Vec<Vec<wgpu::BindGroup>> = (0..chunks)
                .map(|k| (0..segs.len()).map(|i| bind(k, i)).collect())
                .collect();
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    &LOVASZ,
                    PipelineKey {
                        kernel: LOVASZ.name,
                        entry,
                        overrides: vec![
                            ("HINGE", self.hinge.into()),
                            ("BLOCK_WG", tile_invocations(gpu) as u32),
                        ],
                    },
                    &pipeline_layout,
                )
            };
            let chunk_view = |b: &wgpu::Buffer, k: usize, dtype| {
                Tensor::new_typed(
                    b.clone(),
                    k as u64 * chunk_bytes,
                    &[chunk_groups * p],
                    dtype,
                )
            };
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("lovasz errors"),
                    timestamp_writes: None,
                });
                for chunk in &bound {
                    pass.set_pipeline(&pipeline("init_slots"));
                    pass.set_bind_group(0, &chunk[0], &[]);
                    let (x, y) = grid((chunk_groups * p).div_ceil(256));
                    pass.dispatch_workgroups(x, y, 1);
                    pass.set_pipeline(&pipeline("errors_pass"));
                    for (i, &(_, count)) in segs.iter().enumerate() {
                        pass.set_bind_group(0, &chunk[i], &[]);
                        pass.dispatch_workgroups(row_wg(count * inner) as u32, 1, 1);
                    }
                }
            }
            for k in 0..chunks {
                encode_sort(
                    gpu,
                    encoder,
                    &chunk_view(&keys, k, DType::F32)?,
                    &chunk_view(&vals, k, DType::U32)?,
                    p,
                )?;
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("lovasz"),
                timestamp_writes: None,
            });
            let (bx, by) = grid(blocks_per_chunk);
            for chunk in &bound {
                pass.set_bind_group(0, &chunk[0], &[]);
                pass.set_pipeline(&pipeline("scan_blocks"));
                pass.dispatch_workgroups(bx, by, 1);
                if p >= SORT_BLOCK {
                    // Groups of one block or less have their totals from scan_blocks.
                    let (gx, gy) = grid(chunk_groups);
                    pass.set_pipeline(&pipeline("scan_groups"));
                    pass.dispatch_workgroups(gx, gy, 1);
                }
            }
            pass.set_bind_group(0, &bound[0][0], &[]);
            pass.set_pipeline(&pipeline("finish"));
            pass.dispatch_workgroups(1, 1, 1);
            pass.set_pipeline(&pipeline("lovasz_pass"));
            for chunk in &bound {
                for g in chunk {
                    pass.set_bind_group(0, g, &[]);
                    pass.dispatch_workgroups(bx, by, 1);
                }
            }
            if !self.hinge {
                pass.set_pipeline(&pipeline("chain_pass"));
                for (i, &(_, count)) in segs.iter().enumerate() {
                    pass.set_bind_group(0, &bound[0][i], &[]);
                    pass.dispatch_workgroups(row_wg(count * inner) as u32, 1, 1);
                }
            }
            pass.set_bind_group(0, &bound[0][0], &[]);
            pass.set_pipeline(&pipeline("reduce"));
            pass.dispatch_workgroups(1, 1, 1);
            Ok(())
        })
    }
}

macro_rules! lovasz_loss {
    ($(#[$doc:meta])* $name:ident, hinge: $hinge:literal, per_image: $per_image:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// One group per image (then the mean over images) instead of the whole batch.
            pub per_image: bool,
            /// Target value whose pixels are left out (default none).
            pub ignore_index: Option<i64>,
            /// Multiplier of the gradient.
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    per_image: $per_image,
                    ignore_index: None,
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
                logits: &Tensor,
                target: &Tensor,
                out: &LossOutput,
            ) -> Result<()> {
                let call = Lovasz {
                    hinge: $hinge,
                    per_image: self.per_image,
                    ignore_index: self.ignore_index,
                    grad_scale: self.grad_scale,
                };
                call.encode(gpu, encoder, logits, target, out)
            }

            fn check(&self, gpu: &Gpu, target: &Tensor, out: &LossOutput) -> Result<()> {
                if $hinge {
                    Ok(())
                } else {
                    crate::classification::check_labels(gpu, target, out)
                }
            }
        }
    };
}

lovasz_loss!(
    /// Lovász-softmax loss, smp `LovaszLoss('multiclass')`: per class, the errors
    /// `|fg − p_c|` of the softmax probabilities sorted in decreasing order on the GPU, dotted
    /// with the Lovász gradient of the sorted ground truth (the Lovász extension of the Jaccard
    /// loss); the mean over the classes present in the labels, of the batch or of each image
    /// (then over images). Ties sort by pixel index (a stable sort). A batch or image without
    /// a valid pixel gives 0. A label outside [0, C) that is not ignore_index is reported as for
    /// [`crate::CrossEntropy`].
    /// # Shapes
    /// `logits`: `[N, C, d...]` (f32, or F16 / BF16 through f32 copies, the gradient in their
    /// type); labels `[N, d...]` (i32); the loss is a scalar. Defaults: per_image false, no
    /// ignore index, grad_scale 1.
    LovaszSoftmax, hinge: false, per_image: false
);

lovasz_loss!(
    /// Lovász hinge loss, smp `LovaszLoss('binary')`: the hinge errors `1 − x (2t − 1)` sorted
    /// in decreasing order on the GPU, `relu` of them dotted with the Lovász gradient of the
    /// sorted masks; per image and then the mean over images by default (the catalogue's
    /// default; smp's `LovaszLoss` defaults to the whole batch). Masks are 0 or 1.
    /// # Shapes
    /// `logits` and masks: `[N, 1, d...]` (f32, or F16 / BF16 through f32 copies, the gradient in
    /// their type; masks f32 or the logits' type); the loss is a scalar. Defaults: per_image
    /// true, no ignore index, grad_scale 1.
    LovaszHinge, hinge: true, per_image: true
);
