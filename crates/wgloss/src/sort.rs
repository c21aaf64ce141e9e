//! A segmented key-value sort on the GPU (`shaders/util/sort.wgsl`), the building block of the
//! losses that rank errors (Lovász): segments of up to [`SORT_BLOCK`] elements through a bitonic
//! network in workgroup memory, longer ones through a stable radix sort of the keys' ranks, four
//! bits a pass.

use wgpu::util::DeviceExt;

use crate::elementwise::{dynamic_uniform, entry, storage};
use crate::error::{Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::{RADIX_SORT, SORT};
use crate::{DType, Gpu, Tensor};

/// Elements sorted in workgroup memory by one workgroup.
pub const SORT_BLOCK: usize = 512;

/// Uniform block of `sort.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    total: u32,
    len: u32,
    shift: u32,
    tiles: u32,
}

const PARAMS_STRIDE: u64 = 256;

/// Rank bits one radix pass sorts by (the shader's `DIGIT_BITS`); 32 / 4 = 8 passes, an even
/// number, so the sorted data ends in the caller's tensors.
const DIGIT_BITS: u32 = 4;

/// Elements of a radix tile at most.
const MAX_TILE: usize = 4096;

/// Histogram entries one workgroup of the radix sort's prefix sum covers (the shader's
/// `SCAN_BLOCK`).
const SCAN_BLOCK: usize = 16_384;

/// Invocations of a workgroup that cooperates on a block of elements through workgroup memory
/// (the sort's tiles and blocks, Lovász's block passes): the invocations that walk together
/// ([`Gpu::lanes`]), at least a SIMD group of eight. A whole workgroup on a GPU; one SIMD group
/// on a CPU adapter, which runs each group of a workgroup as a coroutine and switches between
/// them at every barrier.
pub(crate) fn tile_invocations(gpu: &Gpu) -> usize {
    (gpu.lanes() as usize).max(8)
}

/// Workgroups as a 2-D grid of rows at most 65,535 wide.
pub(crate) fn grid(n: usize) -> (u32, u32) {
    let x = n.clamp(1, 65_535);
    (x as u32, n.div_ceil(x).max(1) as u32)
}

/// Records a sort of `keys` (f32) in decreasing order within each run of `segment_len`
/// consecutive elements, carrying `vals` (u32) along. The sort is stable: equal keys keep their
/// input order, -0 and +0 are equal, and NaN keys, all equal, go last; keys and values keep their
/// bits. `segment_len` must be a power of two, and both tensors must hold the same number of
/// elements, a multiple of `segment_len` and of [`SORT_BLOCK`]; pad with elements whose keys sort
/// last (NaN, or any key smaller than the real ones). Segments longer than a block take two
/// scratch buffers the size of the tensors.
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
    // Radix tiles: RADIX_WG invocations, RUN elements each, at most MAX_TILE elements, within
    // one segment.
    let radix_wg = tile_invocations(gpu);
    let tile = segment_len.min(MAX_TILE);
    let run = tile / radix_wg;
    gpu.scoped(|| {
        if total == 0 {
            return Ok(());
        }
        let device = gpu.device();
        let len = segment_len as u32;
        // One parameter block: the local sort's, or each radix pass's.
        let passes: Vec<Params> = if segment_len <= SORT_BLOCK {
            vec![Params {
                total: total as u32,
                len,
                shift: 0,
                tiles: 0,
            }]
        } else {
            (0..32 / DIGIT_BITS)
                .map(|pass| Params {
                    total: total as u32,
                    len,
                    shift: pass * DIGIT_BITS,
                    tiles: (segment_len / tile) as u32,
                })
                .collect()
        };
        let mut blocks = vec![0u8; PARAMS_STRIDE as usize * passes.len()];
        for (i, p) in passes.iter().enumerate() {
            let at = i * PARAMS_STRIDE as usize;
            blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(p));
        }
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sort params"),
            contents: &blocks,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let params = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &uniforms,
            offset: 0,
            size: wgpu::BufferSize::new(size_of::<Params>() as u64),
        });
        let pipeline = |entry: &'static str, layout: &wgpu::PipelineLayout| {
            let overrides = match entry {
                "local_sort" => vec![("SORT_WG", radix_wg as u32)],
                _ => vec![("RADIX_WG", radix_wg as u32), ("RUN", run as u32)],
            };
            let kernel = match entry {
                "local_sort" => &SORT,
                _ => &RADIX_SORT,
            };
            gpu.pipeline(
                kernel,
                PipelineKey {
                    kernel: kernel.name,
                    entry,
                    overrides,
                },
                layout,
            )
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("sort"),
            timestamp_writes: None,
        });
        if segment_len <= SORT_BLOCK {
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
                    entry(2, params),
                ],
            });
            pass.set_pipeline(&pipeline("local_sort", &layout));
            pass.set_bind_group(0, &group, &[0]);
            let (x, y) = grid(total / SORT_BLOCK);
            pass.dispatch_workgroups(x, y, 1);
            return Ok(());
        }
        let (bgl, layout) = gpu.layout(
            "radix sort",
            &[
                storage(0, false),
                storage(1, false),
                dynamic_uniform(2, size_of::<Params>()),
                storage(3, false),
                storage(4, false),
                storage(5, false),
            ],
        );
        let scratch = |label, words: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4 * words as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let tiles = total / tile;
        let entries = 16 * tiles;
        let scan_blocks = entries.div_ceil(SCAN_BLOCK);
        let (keys_alt, vals_alt) = (scratch("sort keys", total), scratch("sort vals", total));
        let hist = scratch("sort histogram", entries + scan_blocks);
        let all = |b| wgpu::Buffer::as_entire_binding(b);
        // Pass i reads from group i % 2 and writes into the other pair.
        let groups = [
            [
                keys.binding(0, total),
                vals.binding(0, total),
                all(&keys_alt),
                all(&vals_alt),
            ],
            [
                all(&keys_alt),
                all(&vals_alt),
                keys.binding(0, total),
                vals.binding(0, total),
            ],
        ]
        .map(|[k, v, k_out, v_out]| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("radix sort"),
                layout: &bgl,
                entries: &[
                    entry(0, k),
                    entry(1, v),
                    entry(2, params.clone()),
                    entry(3, k_out),
                    entry(4, v_out),
                    entry(5, all(&hist)),
                ],
            })
        });
        let (tx, ty) = grid(tiles);
        let dispatches = [
            ("radix_count", (tx, ty)),
            ("scan_reduce", (scan_blocks as u32, 1)),
            ("scan_top", (1, 1)),
            ("scan_down", (scan_blocks as u32, 1)),
            ("radix_scatter", (tx, ty)),
        ]
        .map(|(entry, size)| (pipeline(entry, &layout), size));
        for i in 0..passes.len() {
            pass.set_bind_group(0, &groups[i % 2], &[(i as u64 * PARAMS_STRIDE) as u32]);
            for (pipeline, (x, y)) in &dispatches {
                pass.set_pipeline(pipeline);
                pass.dispatch_workgroups(*x, *y, 1);
            }
        }
        Ok(())
    })
}
