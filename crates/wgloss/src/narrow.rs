//! Conversions between 16-bit values and f32 ones on the GPU (`shaders/util/narrow.wgsl`,
//! `shaders/util/widen.wgsl`), for 16-bit inputs where a kernel computes in f32 arrays:
//! - the 16-bit layouts whose rows share 32-bit words across invocations (class rows and
//!   overlap losses with trailing dims of an odd size): the loss passes write a segment's
//!   gradient to an f32 staging buffer, and one `narrow` dispatch per segment packs it;
//! - the losses whose kernels read f32 arrays (SSIM, Lovász, the metric losses, the tuple and
//!   layered generative losses, CTC, Sinkhorn): [`via_f32`] and [`via_f32_grads`] widen the
//!   16-bit inputs, run the f32 loss and narrow its gradients.

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, storage, uniform};
use crate::error::{Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::{Kernel, NARROW, WIDEN};
use crate::{DType, Gpu, LossOutput, Tensor};

/// Stride of the per-segment counts in their uniform buffer (the largest uniform offset
/// alignment WebGPU allows).
const STRIDE: u64 = 256;

/// One conversion kernel's dispatches, a bind group per segment of `lens` values.
struct Convert {
    pipeline: wgpu::ComputePipeline,
    groups: Vec<wgpu::BindGroup>,
    lens: Vec<usize>,
}

impl Convert {
    /// `kernel`'s entry `name` (layout: `layout`, then the per-segment count and lead as the
    /// last binding) over segments of `(values, lead)` whose other bindings `bind` gives.
    fn new<'a>(
        gpu: &Gpu,
        kernel: &Kernel,
        name: &'static str,
        layout: &[wgpu::BindGroupLayoutEntry],
        bf16: bool,
        segs: &[(usize, u32)],
        bind: impl Fn(usize) -> Vec<wgpu::BindGroupEntry<'a>>,
    ) -> Self {
        let device = gpu.device();
        let mut counts = vec![0u8; STRIDE as usize * segs.len().max(1)];
        for (i, &(n, lead)) in segs.iter().enumerate() {
            let at = i * STRIDE as usize;
            counts[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            counts[at + 4..at + 8].copy_from_slice(&lead.to_le_bytes());
        }
        let lens = segs.iter().map(|s| s.0).collect::<Vec<_>>();
        let counts = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wgloss conversion counts"),
            contents: &counts,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let last = layout.len() as u32;
        let mut entries = layout.to_vec();
        entries.push(uniform(last));
        let (bgl, pipeline_layout) = gpu.layout(name, &entries);
        let groups = (0..segs.len())
            .map(|i| {
                let mut entries = bind(i);
                entries.push(entry(
                    last,
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &counts,
                        offset: i as u64 * STRIDE,
                        size: wgpu::BufferSize::new(16),
                    }),
                ));
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(name),
                    layout: &bgl,
                    entries: &entries,
                })
            })
            .collect();
        let pipeline = gpu.pipeline(
            kernel,
            PipelineKey {
                kernel: kernel.name,
                entry: name,
                overrides: vec![("BF16", bf16.into())],
            },
            &pipeline_layout,
        );
        Self {
            pipeline,
            groups,
            lens,
        }
    }

    fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, seg: usize) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.groups[seg], &[]);
        pass.dispatch_workgroups(
            self.lens[seg].div_ceil(2).div_ceil(256).clamp(1, 65_535) as u32,
            1,
            1,
        );
    }
}

/// Runs of a tensor of `n` values whose f32 form fits a storage binding and whose 16-bit and
/// f32 bindings start aligned: `(first value, values)` (none for an empty tensor).
fn chunks(gpu: &Gpu, n: usize) -> Vec<(usize, usize)> {
    let limits = gpu.limits();
    let align = limits.min_storage_buffer_offset_alignment as usize / 2;
    let most = ((limits.max_storage_buffer_binding_size / 4) as usize / align).max(1) * align;
    (0..n)
        .step_by(most)
        .map(|start| (start, most.min(n - start)))
        .collect()
}

/// An f32 gradient packed into a caller's 16-bit one, segment by segment.
pub(crate) struct Narrow {
    staging: wgpu::Buffer,
    /// Byte offset and length of each segment's f32 values in `staging`.
    ranges: Vec<(u64, usize)>,
    convert: Convert,
}

impl Narrow {
    /// Staging for the largest of the segments `(first sample, samples)` of `grad` (16-bit,
    /// `sample` values a sample, each segment starting on an even value), reused by each, which
    /// `narrow` packs unless `status` reports a bad label. A segment's f32 values stand in its
    /// staging at the index they have in its `Tensor::binding_led` of `grad` (after its lead).
    pub(crate) fn new(
        gpu: &Gpu,
        grad: &Tensor,
        status: &Tensor,
        sample: usize,
        segs: impl Iterator<Item = (usize, usize)>,
    ) -> Self {
        let segs: Vec<(usize, usize)> = segs.map(|(f, c)| (f * sample, c * sample)).collect();
        let leads: Vec<u32> = (segs.iter()).map(|s| grad.binding_led(gpu, *s).1).collect();
        let most = (segs.iter().zip(&leads))
            .map(|(s, &lead)| lead as usize + s.1)
            .max()
            .unwrap_or(0);
        let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgloss staged gradient"),
            size: 4 * most.max(4) as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let ranges = (segs.iter().zip(&leads))
            .map(|(s, &lead)| (0, lead as usize + s.1))
            .collect();
        Self::over(gpu, staging, ranges, &segs, grad, status)
    }

    /// Packs the whole f32 tensor `source` into `grad` (16-bit, the same length).
    fn of(gpu: &Gpu, source: &Tensor, grad: &Tensor, status: &Tensor) -> Self {
        let segs = chunks(gpu, grad.len());
        let ranges = segs
            .iter()
            .map(|s| (source.offset() + 4 * s.0 as u64, s.1))
            .collect();
        Self::over(gpu, source.buffer().clone(), ranges, &segs, grad, status)
    }

    /// `ranges`: each segment's staging, whose f32 values stand after the lead of the
    /// segment's binding of `grad` (none for the aligned chunks of `of`).
    fn over(
        gpu: &Gpu,
        staging: wgpu::Buffer,
        ranges: Vec<(u64, usize)>,
        segs: &[(usize, usize)],
        grad: &Tensor,
        status: &Tensor,
    ) -> Self {
        let bindings: Vec<_> = (segs.iter()).map(|s| grad.binding_led(gpu, *s)).collect();
        let counts: Vec<(usize, u32)> = (segs.iter().zip(&bindings))
            .map(|(s, b)| (s.1, b.1))
            .collect();
        let convert = Convert::new(
            gpu,
            &NARROW,
            "narrow",
            &[storage(0, true), storage(1, false), storage(2, true)],
            grad.dtype() == DType::BF16,
            &counts,
            |i| {
                vec![
                    entry(0, staged(&staging, ranges[i])),
                    entry(1, bindings[i].0.clone()),
                    entry(2, status.binding(0, 1)),
                ]
            },
        );
        Self {
            staging,
            ranges,
            convert,
        }
    }

    /// Segment `seg`'s f32 gradient, as the loss passes bind it.
    pub(crate) fn staging(&self, seg: usize) -> wgpu::BindingResource<'_> {
        staged(&self.staging, self.ranges[seg])
    }

    /// Packs segment `seg`; the caller sets its own pipeline and bind group again after.
    pub(crate) fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, seg: usize) {
        self.convert.dispatch(pass, seg);
    }
}

fn staged(buffer: &wgpu::Buffer, (offset, len): (u64, usize)) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: wgpu::BufferSize::new(4 * len.max(1) as u64),
    })
}

/// Records the loss `encode_f32` over f32 copies of the 16-bit tensors among `values` (the
/// others as they are), with its gradient in an f32 tensor packed afterwards into `out.grad`,
/// which must have the values' 16-bit type and the first value's shape. See [`via_f32_grads`].
pub(crate) fn via_f32(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    values: &[(&'static str, &Tensor)],
    out: &LossOutput,
    encode_f32: impl FnOnce(&mut wgpu::CommandEncoder, &[Tensor], &LossOutput) -> Result<()>,
) -> Result<()> {
    let shape = values.first().map_or(&[][..], |v| v.1.shape());
    let grads = [("grad", &out.grad, shape)];
    via_f32_grads(
        gpu,
        encoder,
        values,
        &grads,
        Some(&out.status),
        |encoder, wide, grads| {
            let out32 = LossOutput {
                loss: out.loss.clone(),
                grad: grads[0].clone(),
                status: out.status.clone(),
            };
            encode_f32(encoder, wide, &out32)
        },
    )
}

/// Records the loss `encode_f32` over f32 copies of the 16-bit tensors among `values` (the
/// others as they are), with f32 gradients that are packed afterwards into `grads` (name,
/// tensor, expected shape; the values' 16-bit type), unless `status` reports a bad label.
/// Checked before anything is recorded: the types agree, the gradients' shapes, the views
/// bindable; errors of `encode_f32` come after the conversions were recorded (into the call's
/// own buffers: the caller's outputs are untouched).
pub(crate) fn via_f32_grads(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    values: &[(&'static str, &Tensor)],
    grads: &[(&'static str, &Tensor, &[usize])],
    status: Option<&Tensor>,
    encode_f32: impl FnOnce(&mut wgpu::CommandEncoder, &[Tensor], &[Tensor]) -> Result<()>,
) -> Result<()> {
    // The first value's type (an empty list is the f32 call's to reject).
    let half = values.first().map_or(DType::F32, |v| v.1.dtype());
    for &(name, t) in values {
        if t.dtype().is_half() {
            t.check_dtype(name, half)?;
            t.check_bindable(gpu, name)?;
        }
    }
    for &(name, g, shape) in grads {
        g.check_dtype(name, half)?;
        g.check_bindable(gpu, name)?;
        if g.shape() != shape {
            return Err(Error::ShapeMismatch {
                name,
                expected: shape.to_vec(),
                got: g.shape().to_vec(),
            });
        }
    }
    gpu.scoped(|| {
        let mut wide = Vec::with_capacity(values.len());
        for &(_, t) in values {
            wide.push(if t.dtype().is_half() {
                widen(gpu, encoder, t)?
            } else {
                t.clone()
            });
        }
        let grads32 = grads
            .iter()
            .map(|g| Tensor::zeros(gpu, g.1.shape()))
            .collect::<Result<Vec<_>>>()?;
        encode_f32(encoder, &wide, &grads32)?;
        let pairs: Vec<(&Tensor, &Tensor)> = grads32
            .iter()
            .zip(grads)
            .map(|(g32, g)| (g32, g.1))
            .collect();
        narrow_into(gpu, encoder, &pairs, status)?;
        Ok(())
    })
}

/// Records the packing of each f32 tensor `source` into its 16-bit `dst` (the same length),
/// unless `status` reports a bad label (without one, a zero word).
pub(crate) fn narrow_into(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pairs: &[(&Tensor, &Tensor)],
    status: Option<&Tensor>,
) -> Result<()> {
    let clear;
    let status = match status {
        Some(s) => s,
        None => {
            clear = Tensor::zeros_typed(gpu, &[1], DType::U32)?;
            &clear
        }
    };
    let narrows: Vec<Narrow> = (pairs.iter())
        .map(|&(source, dst)| Narrow::of(gpu, source, dst, status))
        .collect();
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("narrow"),
        timestamp_writes: None,
    });
    for narrow in &narrows {
        for seg in 0..narrow.ranges.len() {
            narrow.dispatch(&mut pass, seg);
        }
    }
    Ok(())
}

/// An f32 copy of the 16-bit tensor `t`, recorded into `encoder`.
pub(crate) fn widen(gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, t: &Tensor) -> Result<Tensor> {
    let wide = Tensor::zeros(gpu, t.shape())?;
    let segs = chunks(gpu, t.len());
    let convert = Convert::new(
        gpu,
        &WIDEN,
        "widen",
        &[storage(0, true), storage(1, false)],
        t.dtype() == DType::BF16,
        &segs.iter().map(|s| (s.1, 0)).collect::<Vec<_>>(),
        |i| {
            vec![
                entry(0, t.binding(segs[i].0, segs[i].1)),
                entry(1, wide.binding(segs[i].0, segs[i].1)),
            ]
        },
    );
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("widen"),
        timestamp_writes: None,
    });
    for seg in 0..segs.len() {
        convert.dispatch(&mut pass, seg);
    }
    drop(pass);
    Ok(wide)
}

/// `out` with its gradient in `input`'s type where that is a 16-bit one (`Loss::output_for`).
pub(crate) fn typed_output(gpu: &Gpu, mut out: LossOutput, input: &Tensor) -> Result<LossOutput> {
    if input.dtype().is_half() {
        out.grad = Tensor::zeros_typed(gpu, input.shape(), input.dtype())?;
    }
    Ok(out)
}
