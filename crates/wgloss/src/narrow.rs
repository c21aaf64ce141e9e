//! Packing an f32 staging gradient into a caller's 16-bit one (`shaders/util/narrow.wgsl`), for
//! the 16-bit layouts whose rows share 32-bit words across invocations (class rows and overlap
//! losses with trailing dims of an odd size): the loss passes write a segment's gradient in
//! f32, and one `narrow` dispatch per segment packs it.

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, storage, uniform};
use crate::gpu::PipelineKey;
use crate::kernel::NARROW;
use crate::{DType, Gpu, Tensor};

/// Stride of the per-segment counts in their uniform buffer (the largest uniform offset
/// alignment WebGPU allows).
const STRIDE: u64 = 256;

/// The staging buffer and the `narrow` dispatches of one call's segments.
pub(crate) struct Narrow {
    staging: wgpu::Buffer,
    pipeline: wgpu::ComputePipeline,
    groups: Vec<wgpu::BindGroup>,
    lens: Vec<usize>,
}

impl Narrow {
    /// Staging for the largest of the segments `(first sample, samples)` of `grad` (16-bit,
    /// `sample` values a sample), which `narrow` packs unless `status` reports a bad label.
    pub(crate) fn new(
        gpu: &Gpu,
        grad: &Tensor,
        status: &Tensor,
        sample: usize,
        segs: impl Iterator<Item = (usize, usize)>,
    ) -> Self {
        let segs: Vec<(usize, usize)> = segs.map(|(f, c)| (f * sample, c * sample)).collect();
        let device = gpu.device();
        let most = segs.iter().map(|s| s.1).max().unwrap_or(0);
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgloss staged gradient"),
            size: 4 * most.max(4) as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let mut counts = vec![0u8; STRIDE as usize * segs.len().max(1)];
        for (i, s) in segs.iter().enumerate() {
            let at = i * STRIDE as usize;
            counts[at..at + 4].copy_from_slice(&(s.1 as u32).to_le_bytes());
        }
        let counts = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("narrow counts"),
            contents: &counts,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let (bgl, layout) = gpu.layout(
            "narrow",
            &[
                storage(0, true),
                storage(1, false),
                storage(2, true),
                uniform(3),
            ],
        );
        let groups = segs
            .iter()
            .enumerate()
            .map(|(i, &(start, len))| {
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("narrow"),
                    layout: &bgl,
                    entries: &[
                        entry(
                            0,
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &staging,
                                offset: 0,
                                size: wgpu::BufferSize::new(4 * len.max(1) as u64),
                            }),
                        ),
                        entry(1, grad.binding(start, len)),
                        entry(2, status.binding(0, 1)),
                        entry(
                            3,
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &counts,
                                offset: i as u64 * STRIDE,
                                size: wgpu::BufferSize::new(16),
                            }),
                        ),
                    ],
                })
            })
            .collect();
        let pipeline = gpu.pipeline(
            &NARROW,
            PipelineKey {
                kernel: NARROW.name,
                entry: "narrow",
                overrides: vec![("BF16", (grad.dtype() == DType::BF16).into())],
            },
            &layout,
        );
        Self {
            staging,
            pipeline,
            groups,
            lens: segs.iter().map(|s| s.1).collect(),
        }
    }

    /// Segment `seg`'s f32 gradient, as the loss passes bind it.
    pub(crate) fn staging(&self, seg: usize) -> wgpu::BindingResource<'_> {
        let len = self.lens[seg];
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.staging,
            offset: 0,
            size: wgpu::BufferSize::new(4 * len.max(1) as u64),
        })
    }

    /// Packs segment `seg`; the caller sets its own pipeline and bind group again after.
    pub(crate) fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, seg: usize) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.groups[seg], &[]);
        pass.dispatch_workgroups(
            self.lens[seg].div_ceil(2).div_ceil(256).clamp(1, 65_535) as u32,
            1,
            1,
        );
    }
}
