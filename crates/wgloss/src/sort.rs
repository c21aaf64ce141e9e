//! A segmented key-value sort on the GPU (`shaders/util/sort.wgsl`), the building block of the
//! losses that rank errors (Lovász): a bitonic network whose steps within blocks of 512
//! elements run in workgroup memory, the longer ones up to four per dispatch.

use wgpu::util::DeviceExt;

use crate::elementwise::{dynamic_uniform, entry, storage};
use crate::error::{Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::SORT;
use crate::{DType, Gpu, Tensor};

/// Elements sorted in workgroup memory by one workgroup.
pub const SORT_BLOCK: usize = 512;

/// Uniform block of `sort.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    total: u32,
    k: u32,
    j: u32,
    len: u32,
}

const PARAMS_STRIDE: u64 = 256;

/// Most network steps one `global_steps` pass runs (its invocations hold 2^4 elements).
const MAX_LEVELS: u32 = 4;

/// One dispatch of the network: `levels` steps j, j/2, ... of stage k (`global_steps`), or
/// the steps of stage k below a block (`local_steps`; k = 0: every stage up to a block).
struct Step {
    entry: &'static str,
    k: u32,
    j: u32,
    levels: u32,
}

impl Step {
    fn local(k: u32) -> Self {
        Step {
            entry: "local_steps",
            k,
            j: 0,
            levels: 0,
        }
    }
}

/// Records a sort of `keys` (f32) in decreasing order within each run of `segment_len`
/// consecutive elements, carrying `vals` (u32) along; equal keys keep increasing values first,
/// and NaN keys go last. `segment_len` must be a power of two, and both tensors must hold the
/// same number of elements, a multiple of `segment_len` and of [`SORT_BLOCK`]; pad with
/// elements whose keys sort last (NaN, or any key smaller than the real ones).
pub fn encode_sort(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    keys: &Tensor,
    vals: &Tensor,
    segment_len: usize,
) -> Result<()> {
    keys.check_dtype("keys", DType::F32)?;
    vals.check_dtype("vals", DType::U32)?;
    let total = keys.len();
    if vals.len() != total {
        return Err(Error::ShapeMismatch {
            name: "vals",
            expected: keys.shape().to_vec(),
            got: vals.shape().to_vec(),
        });
    }
    if !segment_len.is_power_of_two()
        || !total.is_multiple_of(segment_len)
        || !total.is_multiple_of(SORT_BLOCK)
        || total > u32::MAX as usize
    {
        return Err(Error::InvalidShape {
            name: "keys",
            got: vec![total, segment_len],
            why: "segment_len must be a power of two dividing the length, a multiple of 512",
        });
    }
    for (t, name) in [(keys, "keys"), (vals, "vals")] {
        t.check_bindable(gpu, name)?;
        if t.byte_len() > gpu.limits().max_storage_buffer_binding_size {
            return Err(Error::InvalidShape {
                name,
                got: t.shape().to_vec(),
                why: "the sort binds the whole tensor, which exceeds a storage binding",
            });
        }
    }
    // The dispatch sequence: the whole network up to a block, then for every longer stage k
    // its steps j >= a block, up to four per pass, and the rest in workgroup memory.
    let mut steps: Vec<Step> = vec![Step::local(0)];
    let mut k = 2 * SORT_BLOCK;
    while k <= segment_len {
        let mut j = k / 2;
        while j >= SORT_BLOCK {
            let levels = (j / SORT_BLOCK).ilog2().min(MAX_LEVELS - 1) + 1;
            steps.push(Step {
                entry: "global_steps",
                k: k as u32,
                j: j as u32,
                levels,
            });
            j >>= levels;
        }
        steps.push(Step::local(k as u32));
        k *= 2;
    }
    gpu.scoped(|| {
        if total == 0 {
            return Ok(());
        }
        let device = gpu.device();
        let mut blocks = vec![0u8; PARAMS_STRIDE as usize * steps.len()];
        for (i, step) in steps.iter().enumerate() {
            let p = Params {
                total: total as u32,
                k: step.k,
                j: step.j,
                len: segment_len as u32,
            };
            let at = i * PARAMS_STRIDE as usize;
            blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
        }
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sort params"),
            contents: &blocks,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let (bgl, layout) = gpu.layout(
            "sort",
            &[
                storage(0, false),
                storage(1, false),
                dynamic_uniform(2, size_of::<Params>()),
            ],
        );
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("sort"),
            layout: &bgl,
            entries: &[
                entry(0, keys.binding(0, total)),
                entry(1, vals.binding(0, total)),
                entry(
                    2,
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniforms,
                        offset: 0,
                        size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                    }),
                ),
            ],
        });
        let pipeline = |step: &Step| {
            let overrides = match step.entry {
                "global_steps" => vec![("LEVELS", step.levels)],
                _ => Vec::new(),
            };
            gpu.pipeline(
                &SORT,
                PipelineKey {
                    kernel: SORT.name,
                    entry: step.entry,
                    overrides,
                },
                &layout,
            )
        };
        // Workgroups as a 2-D grid of rows at most 65,535 wide.
        let grid = |n: usize| {
            let x = n.clamp(1, 65_535);
            (x as u32, n.div_ceil(x).max(1) as u32)
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("sort"),
            timestamp_writes: None,
        });
        for (i, step) in steps.iter().enumerate() {
            pass.set_pipeline(&pipeline(step));
            pass.set_bind_group(0, &group, &[(i as u64 * PARAMS_STRIDE) as u32]);
            let (x, y) = if step.entry == "local_steps" {
                grid(total / SORT_BLOCK)
            } else {
                grid((total >> step.levels).div_ceil(256))
            };
            pass.dispatch_workgroups(x, y, 1);
        }
        Ok(())
    })
}
