//! Host side of the element-wise driver (`shaders/elementwise.wgsl`): validation, segmentation
//! of inputs larger than one storage binding, per-segment parameters and the dispatch sequence
//! of each plan.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS, WG};
use crate::kernel::{HalfKernels, Kernel};
use crate::{DType, Gpu, LossOutput, Reduction, Tensor};

/// Stride of per-segment parameter blocks in the uniform buffer (the largest uniform offset
/// alignment WebGPU allows).
const PARAMS_STRIDE: u64 = 256;

/// How the driver's passes are sequenced for one loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `fused` writes gradient and partials, `reduce` finishes the loss.
    OnePass,
    /// `fused` (the gradient of the mean square), `reduce` as sqrt(mean) leaving the chain rule's
    /// coefficient, `apply` (the gradient scaled by it in place).
    Root,
    /// `coord_stats`, `coord_update`, `coord_fused` and `reduce` (per-coordinate state).
    CoordStats,
    /// `fused_kth` and `reduce_kth` (k-th smallest residual recorded into the state), then
    /// `kth_fallback` and `reduce_fallback`, dispatched indirectly with the workgroup counts
    /// `reduce_kth` sets: none unless the filter bound kept too few.
    Kth,
    /// `hist_pass`, `hist_update` (a histogram of `k` bins turned into per-bin weights in the
    /// state), then as `OnePass` with sum scales: the kernel normalises the loss itself.
    Histogram,
}

/// A validated element-wise loss, ready to encode. Built by each loss's `spec`.
#[derive(Debug)]
pub struct ElementwiseSpec<'a> {
    pub(crate) kernel: &'static Kernel,
    /// The same loss four elements per step.
    pub(crate) kernel4: Option<&'static Kernel>,
    /// The same loss over 16-bit inputs and gradient (`elementwise_half.wgsl`, and
    /// `elementwise_half4.wgsl` for the aligned prefix), for every plan.
    pub(crate) kernel_half: Option<&'static HalfKernels>,
    pub(crate) plan: Plan,
    pub(crate) p: [f32; 4],
    pub(crate) p2: [f32; 4],
    pub(crate) coords: u32,
    pub(crate) k: u32,
    pub(crate) iters: u32,
    pub(crate) state: Option<&'a wgpu::Buffer>,
    /// Values uploaded as the state buffer of this call when `state` is `None` (per-class
    /// weights).
    pub(crate) aux: Vec<f32>,
    /// Per-element validity mask (> 0: valid), the inputs' shape, bound at binding 7.
    pub(crate) mask: Option<&'a Tensor>,
    /// Per-sample values `[N]`, bound whole at binding 7 (instead of a mask); `coords` holds the
    /// elements per sample.
    pub(crate) sample_weights: Option<&'a Tensor>,
    /// Consecutive elements that make one loss term (4 for a box): segments start on a group,
    /// reduction none writes one loss per group, and the mean divides by the number of groups.
    pub(crate) group: usize,
    /// Pipeline constants of the kernel beyond the driver's own.
    pub(crate) overrides: Vec<(&'static str, u32)>,
    /// What the mean divides by instead of the number of loss terms (kl_div's batchmean).
    pub(crate) mean_divisor: Option<usize>,
    pub(crate) reduction: Reduction,
    pub(crate) grad_scale: f32,
}

impl<'a> ElementwiseSpec<'a> {
    pub(crate) fn new(kernel: &'static Kernel, reduction: Reduction, grad_scale: f32) -> Self {
        Self {
            kernel,
            kernel4: None,
            kernel_half: None,
            plan: Plan::OnePass,
            p: [0.0; 4],
            p2: [0.0; 4],
            coords: 1,
            k: 0,
            iters: 0,
            state: None,
            aux: Vec::new(),
            mask: None,
            sample_weights: None,
            group: 1,
            overrides: Vec::new(),
            mean_divisor: None,
            reduction,
            grad_scale,
        }
    }

    /// Binds `weights` (`[N]`, one per sample of `per_sample` elements) at binding 7.
    pub(crate) fn sample_weights(mut self, weights: &'a Tensor, per_sample: usize) -> Self {
        self.sample_weights = Some(weights);
        self.coords = per_sample.max(1) as u32;
        self
    }

    /// The mean divides the sum by `divisor` rather than by the number of terms.
    pub(crate) fn mean_over(mut self, divisor: usize) -> Self {
        self.mean_divisor = Some(divisor);
        self
    }

    pub(crate) fn params(mut self, p: [f32; 4]) -> Self {
        self.p = p;
        self
    }

    pub(crate) fn params2(mut self, p2: [f32; 4]) -> Self {
        self.p2 = p2;
        self
    }

    pub(crate) fn vec4(mut self, kernel4: &'static Kernel) -> Self {
        self.kernel4 = Some(kernel4);
        self
    }

    /// Accepts F16 and BF16 inputs through `kernel_half`.
    pub(crate) fn half(mut self, kernel_half: &'static HalfKernels) -> Self {
        self.kernel_half = Some(kernel_half);
        self
    }

    pub(crate) fn plan(mut self, plan: Plan) -> Self {
        self.plan = plan;
        self
    }
}

/// Per-segment uniform block; mirrors `Params` in `elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    elem_base: u32,
    wg_base: u32,
    num_partials: u32,
    coords: u32,
    k: u32,
    iters: u32,
    total: u32,
    grad_scale: f32,
    loss_scale: f32,
    pad: [f32; 2],
    p: [f32; 4],
    p2: [f32; 4],
}

/// A slice of the inputs that fits one storage binding.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: usize,
    len: usize,
    workgroups: usize,
    wg_base: usize,
    /// Run by the four-elements-per-step kernel (`len` is then a multiple of 4).
    vec4: bool,
}

pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Least common multiple (a, b >= 1).
pub(crate) fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Samples per segment when `[N, C, S]` inputs (`logits_shape`) are split into runs of whole
/// samples (`C·S` elements each, rows of `S`) that fit one storage binding each. The kernels
/// bind a run's views from the storage offset alignment before it (`Tensor::binding_led`), so
/// that a run may start at any sample (16-bit values: on an even element); every binding but the
/// first then holds less than the alignment before the run. Fails when one sample (or, past one
/// segment, the shortest run) exceeds a binding. `size` is the inputs' element size in bytes
/// (the bound stays that of f32 values, which probability targets and per-element losses beside
/// them take). `scratch` bytes per row of the segment go to one more binding, beside 16 bytes
/// of its own.
pub(crate) fn samples_per_segment(
    gpu: &Gpu,
    logits_shape: &[usize],
    (classes, inner): (usize, usize),
    size: usize,
    scratch: usize,
) -> Result<usize> {
    let limits = gpu.limits();
    let sample = classes * inner;
    // Samples from one even element to the next.
    let per_word = (4 / size).max(1);
    let unit = per_word / gcd(per_word, sample.max(1));
    let max_elems = (limits.max_storage_buffer_binding_size / 4) as usize;
    if sample > max_elems {
        return Err(Error::InvalidShape {
            name: "logits",
            got: logits_shape.to_vec(),
            why: "one sample (C times the trailing dims) exceeds a storage binding",
        });
    }
    let rows = (limits.max_storage_buffer_binding_size as usize)
        .saturating_sub(16)
        .checked_div(scratch)
        .map_or(usize::MAX, |rows| rows / inner.max(1));
    let fits = |elems: usize| (elems / sample.max(1)).min(rows);
    let n = logits_shape.first().copied().unwrap_or(1);
    if n <= fits(max_elems).max(1) {
        return Ok(n.max(1));
    }
    let lead_room = limits.min_storage_buffer_offset_alignment as usize / 4;
    let fit = fits(max_elems.saturating_sub(lead_room));
    if unit > fit {
        return Err(Error::InvalidShape {
            name: "logits",
            got: logits_shape.to_vec(),
            why: "no run of whole samples that ends on a 32-bit word fits a storage binding",
        });
    }
    Ok(fit / unit * unit)
}

/// Largest element count per segment of `size`-byte inputs: fits the device's storage binding
/// size (with `per_element`, that of the f32 losses too), starts every segment at an offset
/// aligned for binding (the inputs' and the f32 losses'), on a whole vec4 and on a row boundary
/// of `coords`.
fn segment_len(gpu: &Gpu, coords: usize, size: usize, per_element: bool) -> usize {
    let limits = gpu.limits();
    let unit = lcm(vec4_unit(gpu, size), coords);
    let widest = if per_element { size.max(4) } else { size };
    let max_elems =
        (limits.max_storage_buffer_binding_size / widest as u64).min(u32::MAX as u64 / 2) as usize;
    (max_elems / unit).max(1) * unit
}

/// Elements of `size` bytes (at most 4) per unit of the four-elements-per-step kernels: a
/// multiple of 4 whose byte size is a multiple of the device's storage offset alignment, and so
/// is that of as many f32 values (the per-element losses beside 16-bit inputs).
fn vec4_unit(gpu: &Gpu, size: usize) -> usize {
    let align = (gpu.limits().min_storage_buffer_offset_alignment as usize / size).max(1);
    lcm(align, 4)
}

/// Splits `n` elements into segments of at most `seg_len`. With `vec4_unit`, the prefix of whole
/// units goes to the four-elements-per-step kernel and the rest (fewer than `vec4_unit`
/// elements) to a segment of its own for the one-element kernel; the unit's byte size is a
/// valid binding offset, so that last segment starts aligned.
fn segments(
    n: usize,
    seg_len: usize,
    max_workgroups: usize,
    vec4_unit: Option<usize>,
) -> Vec<Segment> {
    let vec4 = vec4_unit.is_some();
    let main = vec4_unit.map_or(n, |unit| n / unit * unit);
    let per_step = if vec4 { 4 } else { 1 };
    let mut out = Vec::new();
    let mut start = 0;
    let mut wg_base = 0;
    while start < n {
        let (len, vec4) = if start < main {
            (seg_len.min(main - start), vec4)
        } else {
            (n - start, false)
        };
        let steps = len.div_ceil(WG * per_step);
        // Bounded in elements, not steps: a pass may walk a four-element segment one element
        // at a time (`elem_inputs`).
        let workgroups = steps
            .min(max_workgroups)
            .max(len.div_ceil(WG * MAX_ITERATIONS))
            .min(65_535);
        out.push(Segment {
            start,
            len,
            workgroups,
            wg_base,
            vec4,
        });
        start += len;
        wg_base += workgroups;
    }
    out
}

pub(crate) fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

pub(crate) fn uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A uniform block bound at a dynamic offset: one buffer holds the parameter blocks of a
/// call's dispatches, `size` bytes each.
pub(crate) fn dynamic_uniform(binding: u32, size: usize) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: wgpu::BufferSize::new(size as u64),
        },
        count: None,
    }
}

/// Layout of `elementwise.wgsl`: inputs read-only, outputs and scratch read-write, one uniform.
fn elementwise_layout(gpu: &Gpu) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    gpu.layout(
        "elementwise",
        &[
            storage(0, true),
            storage(1, true),
            storage(2, false),
            storage(3, false),
            storage(4, false),
            storage(5, false),
            uniform(6),
            storage(7, true),
        ],
    )
}

/// The k-th smallest plan's second group, bound for `reduce_kth`: the indirect dispatch
/// arguments of the fallback passes it sets. Its pipeline layout is the element-wise group
/// followed by this one.
fn kth_dispatch_layout(gpu: &Gpu) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let (first, _) = elementwise_layout(gpu);
    gpu.layout_after("elementwise kth dispatch", &first, &[storage(0, false)])
}

/// Checks that `pred`, `target` and `out` agree and can be bound.
fn validate(
    gpu: &Gpu,
    spec: &ElementwiseSpec<'_>,
    pred: &Tensor,
    target: &Tensor,
    out: &LossOutput,
) -> Result<()> {
    if target.shape() != pred.shape() {
        return Err(Error::ShapeMismatch {
            name: "target",
            expected: pred.shape().to_vec(),
            got: target.shape().to_vec(),
        });
    }
    if out.grad.shape() != pred.shape() {
        return Err(Error::ShapeMismatch {
            name: "grad",
            expected: pred.shape().to_vec(),
            got: out.grad.shape().to_vec(),
        });
    }
    let loss_shape = group_loss_shape(pred.shape(), spec.group, spec.reduction);
    if out.loss.len() != loss_shape.iter().product::<usize>() {
        return Err(Error::ShapeMismatch {
            name: "loss",
            expected: loss_shape,
            got: out.loss.shape().to_vec(),
        });
    }
    if pred.len() > u32::MAX as usize {
        return Err(Error::InvalidShape {
            name: "pred",
            got: pred.shape().to_vec(),
            why: "more than 2^32 - 1 elements",
        });
    }
    if let Some(mask) = spec.mask {
        if mask.shape() != pred.shape() {
            return Err(Error::ShapeMismatch {
                name: "mask",
                expected: pred.shape().to_vec(),
                got: mask.shape().to_vec(),
            });
        }
    }
    // Inputs and gradient of one float type (16-bit ones where the loss has a kernel for
    // them); the loss, mask and weights f32.
    let values = match pred.dtype() {
        DType::F16 | DType::BF16 if spec.kernel_half.is_some() => pred.dtype(),
        _ => DType::F32,
    };
    for (t, name, dtype) in [
        (Some(pred), "pred", values),
        (Some(target), "target", values),
        (Some(&out.grad), "grad", values),
        (Some(&out.loss), "loss", DType::F32),
        (spec.mask, "mask", DType::F32),
        (spec.sample_weights, "weights", DType::F32),
    ] {
        if let Some(t) = t {
            t.check_dtype(name, dtype)?;
            t.check_bindable(gpu, name)?;
        }
    }
    if pred.is_empty()
        && spec.reduction != Reduction::None
        && !out
            .loss
            .buffer()
            .usage()
            .contains(wgpu::BufferUsages::COPY_DST)
    {
        return Err(Error::MissingUsage {
            name: "loss",
            missing: wgpu::BufferUsages::COPY_DST,
        });
    }
    Ok(())
}

/// Outputs of `loss` for inputs of `shape`, the gradient of `dtype`: one loss per group of
/// elements (a box) under reduction none; a bad shape is reported by `encode`.
pub(crate) fn output<L: crate::ElementwiseLoss + ?Sized>(
    loss: &L,
    gpu: &Gpu,
    shape: &[usize],
    dtype: DType,
) -> Result<LossOutput> {
    let group = loss.spec(shape).map_or(1, |s| s.group);
    let loss_shape = group_loss_shape(shape, group, loss.reduction());
    LossOutput::with_grad_type(gpu, shape, &loss_shape, dtype)
}

/// Shape of the loss of an input of `shape` whose loss terms are groups of `group` elements
/// along the last dimension (that dimension is dropped when it is one group).
pub(crate) fn group_loss_shape(shape: &[usize], group: usize, reduction: Reduction) -> Vec<usize> {
    match (reduction, shape.split_last()) {
        (Reduction::None, Some((&last, rest))) if group > 1 && last == group => rest.to_vec(),
        (Reduction::None, _) => shape.to_vec(),
        (Reduction::Mean | Reduction::Sum, _) => Vec::new(),
    }
}

/// Partial slots a workgroup of the fused pass fills, as `partial_slots` in `elementwise.wgsl`:
/// one on a GPU, one per invocation on a CPU adapter (fewer lanes than a workgroup).
fn partial_slots(gpu: &Gpu) -> usize {
    if (gpu.lanes() as usize) < WG {
        WG
    } else {
        1
    }
}

fn scratch(gpu: &Gpu, label: &str, floats: usize) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 4 * floats.max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// Records the passes of `spec` into `encoder`. Nothing is recorded if validation fails.
pub(crate) fn encode(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    spec: &ElementwiseSpec<'_>,
    pred: &Tensor,
    target: &Tensor,
    out: &LossOutput,
) -> Result<()> {
    validate(gpu, spec, pred, target, out)?;
    let n = pred.len();
    if n == 0 {
        // An empty batch: loss 0 (documented; torch gives NaN under mean), no gradient to write.
        if spec.reduction != Reduction::None {
            encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
        }
        return Ok(());
    }
    let coords = spec.coords as usize;
    // Each workgroup of the k-th smallest plan merges k sorted lists in k rounds of barriers, and
    // the final pass merges one list per workgroup: fewer, fuller workgroups pay off there.
    let max_workgroups = match spec.plan {
        Plan::Kth => gpu.max_workgroups().min(1024),
        _ => gpu.max_workgroups(),
    };
    // 16-bit inputs: four elements per step over the aligned prefix (with `Gpu::vec4`), two over
    // the rest, segments of whole words.
    let half = spec.kernel_half.filter(|_| pred.dtype().is_half());
    let kernel4 = match half {
        Some(h) => Some(&h.four).filter(|_| gpu.vec4()),
        None => spec.kernel4.filter(|_| gpu.vec4()),
    };
    // Per-coordinate statistics need segments to start on a row (the one-element tail after the
    // four-element prefix too); grouped losses on a group whose per-group loss view starts
    // aligned too.
    let row = if spec.plan == Plan::CoordStats {
        coords
    } else if spec.group > 1 {
        spec.group * vec4_unit(gpu, 4)
    } else {
        1
    };
    let seg_len = segment_len(
        gpu,
        row,
        pred.dtype().size(),
        spec.reduction == Reduction::None,
    );
    // With a partial slot per invocation, each invocation of `reduce` adds one slot per
    // workgroup over all segments (at most one more segment for the tail): within the loop
    // budget however many workgroups `WGLOSS_MAX_WORKGROUPS` allows.
    let max_workgroups = if partial_slots(gpu) > 1 {
        let segments = n.div_ceil(seg_len) + 1;
        max_workgroups.min((MAX_ITERATIONS / segments).max(1))
    } else {
        max_workgroups
    };
    let segs = segments(
        n,
        seg_len,
        max_workgroups,
        kernel4.map(|_| lcm(vec4_unit(gpu, pred.dtype().size()), row)),
    );
    let num_partials: usize = segs.iter().map(|s| s.workgroups).sum();
    let per_element = spec.reduction == Reduction::None;
    let terms = spec.mean_divisor.unwrap_or(n / spec.group) as f64;
    let (loss_scale, grad_scale) = match (spec.plan, spec.reduction) {
        (Plan::Root, _) => (1.0 / terms, f64::from(spec.grad_scale)),
        (Plan::Histogram, _) => (1.0, f64::from(spec.grad_scale)),
        (_, Reduction::Mean) => (1.0 / terms, f64::from(spec.grad_scale) / terms),
        (_, Reduction::Sum | Reduction::None) => (1.0, f64::from(spec.grad_scale)),
    };

    let mut blocks = vec![0u8; PARAMS_STRIDE as usize * segs.len()];
    for (i, s) in segs.iter().enumerate() {
        let params = Params {
            n: s.len as u32,
            elem_base: s.start as u32,
            wg_base: s.wg_base as u32,
            num_partials: num_partials as u32,
            coords: spec.coords,
            k: spec.k,
            iters: spec.iters,
            total: n as u32,
            grad_scale: grad_scale as f32,
            loss_scale: loss_scale as f32,
            pad: [0.0; 2],
            p: spec.p,
            p2: spec.p2,
        };
        let at = i * PARAMS_STRIDE as usize;
        blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&params));
    }
    let device = gpu.device();
    let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("wgloss params"),
        contents: &blocks,
        usage: wgpu::BufferUsages::UNIFORM,
    });
    // The fused pass's slots, then whatever the plan's earlier passes leave there.
    let partial_floats = (num_partials * partial_slots(gpu)).max(match spec.plan {
        Plan::OnePass | Plan::Root => 0,
        Plan::CoordStats => num_partials * coords * 2,
        // A sum, a candidate list and a floor per slot: k per workgroup, or two per invocation
        // (KEPT in `dynamic_smooth_l1.wgsl`) on a CPU adapter.
        Plan::Kth => num_partials * (2 + spec.k as usize).max(partial_slots(gpu) * 4),
        Plan::Histogram => num_partials * (1 + spec.k as usize),
    });
    let partials = scratch(gpu, "wgloss partials", partial_floats);
    let own_state;
    let state = match spec.state {
        Some(s) => s,
        None if !spec.aux.is_empty() => {
            own_state = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgloss per-class parameters"),
                contents: bytemuck::cast_slice(&spec.aux),
                usage: wgpu::BufferUsages::STORAGE,
            });
            &own_state
        }
        None => {
            own_state = scratch(gpu, "wgloss state", 4);
            &own_state
        }
    };

    let no_mask = scratch(gpu, "wgloss no mask", 4);
    let (bgl, layout) = elementwise_layout(gpu);
    let groups: Vec<wgpu::BindGroup> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let loss = if per_element {
                out.loss.binding(s.start / spec.group, s.len / spec.group)
            } else {
                out.loss.binding(0, 1)
            };
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgloss elementwise"),
                layout: &bgl,
                entries: &[
                    entry(0, pred.binding(s.start, s.len)),
                    entry(1, target.binding(s.start, s.len)),
                    entry(2, out.grad.binding(s.start, s.len)),
                    entry(3, loss),
                    entry(4, partials.as_entire_binding()),
                    entry(5, state.as_entire_binding()),
                    entry(
                        6,
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniforms,
                            offset: i as u64 * PARAMS_STRIDE,
                            size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                        }),
                    ),
                    entry(
                        7,
                        match (spec.sample_weights, spec.mask) {
                            (Some(w), _) => w.binding(0, w.len()),
                            (None, Some(m)) => m.binding(s.start, s.len),
                            (None, None) => no_mask.as_entire_binding(),
                        },
                    ),
                ],
            })
        })
        .collect();

    let key = |kernel: &'static Kernel, entry: &'static str, root: bool| PipelineKey {
        kernel: kernel.name,
        entry,
        overrides: [("PER_ELEMENT", per_element.into()), ("ROOT", root.into())]
            .into_iter()
            .chain(
                half.is_some_and(|h| [h.two.name, h.four.name].contains(&kernel.name))
                    .then_some(("BF16", (pred.dtype() == DType::BF16).into())),
            )
            .chain(spec.overrides.iter().copied())
            .collect(),
    };
    let pipeline = |kernel: &'static Kernel, entry: &'static str, root: bool| {
        gpu.pipeline(kernel, key(kernel, entry, root), &layout)
    };
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(spec.kernel.name),
        timestamp_writes: None,
    });
    // The kernel of a segment's step width.
    let kernel_of = |s: &Segment| match (kernel4, half) {
        (Some(k4), _) if s.vec4 => k4,
        (_, Some(h)) => &h.two,
        _ => spec.kernel,
    };
    // Every segment, each with the kernel of its step width.
    let over_segments = |pass: &mut wgpu::ComputePass<'_>, entry, root| {
        for (s, g) in segs.iter().zip(&groups) {
            pass.set_pipeline(&pipeline(kernel_of(s), entry, root));
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups(s.workgroups as u32, 1, 1);
        }
    };
    // One workgroup over the whole input (reductions and state updates).
    let once = |pass: &mut wgpu::ComputePass<'_>, entry, root| {
        pass.set_pipeline(&pipeline(spec.kernel, entry, root));
        pass.set_bind_group(0, &groups[0], &[]);
        pass.dispatch_workgroups(1, 1, 1);
    };
    match spec.plan {
        Plan::OnePass | Plan::CoordStats | Plan::Histogram => {
            if spec.plan == Plan::CoordStats {
                over_segments(&mut pass, "coord_stats", false);
                once(&mut pass, "coord_update", false);
            }
            if spec.plan == Plan::Histogram {
                over_segments(&mut pass, "hist_pass", false);
                once(&mut pass, "hist_update", false);
            }
            let fused = if spec.plan == Plan::CoordStats {
                "coord_fused"
            } else {
                "fused"
            };
            over_segments(&mut pass, fused, false);
            if !per_element {
                once(&mut pass, "reduce", false);
            }
        }
        Plan::Root => {
            over_segments(&mut pass, "fused", true);
            once(&mut pass, "reduce", true);
            over_segments(&mut pass, "apply", true);
        }
        Plan::Kth => {
            over_segments(&mut pass, "fused_kth", false);
            // Records (x, 1, 1, count) as `dynamic_smooth_l1.wgsl` reads them: one per segment,
            // then reduce_fallback's single workgroup.
            let records: Vec<u32> = segs
                .iter()
                .map(|s| s.workgroups as u32)
                .chain([1])
                .flat_map(|count| [0, 1, 1, count])
                .collect();
            let dispatch = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgloss fallback dispatch"),
                contents: bytemuck::cast_slice(&records),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::INDIRECT,
            });
            let (dispatch_bgl, dispatch_layout) = kth_dispatch_layout(gpu);
            let dispatch_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgloss fallback dispatch"),
                layout: &dispatch_bgl,
                entries: &[entry(0, dispatch.as_entire_binding())],
            });
            let reduce = key(spec.kernel, "reduce_kth", false);
            pass.set_pipeline(&gpu.pipeline(spec.kernel, reduce, &dispatch_layout));
            pass.set_bind_group(0, &groups[0], &[]);
            pass.set_bind_group(1, &dispatch_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
            // No workgroups unless fewer than k values were under the filter bound.
            let record = 4 * size_of::<u32>() as u64;
            for (i, (s, g)) in segs.iter().zip(&groups).enumerate() {
                pass.set_pipeline(&pipeline(kernel_of(s), "kth_fallback", false));
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups_indirect(&dispatch, i as u64 * record);
            }
            pass.set_pipeline(&pipeline(spec.kernel, "reduce_fallback", false));
            pass.set_bind_group(0, &groups[0], &[]);
            pass.dispatch_workgroups_indirect(&dispatch, segs.len() as u64 * record);
        }
    }
    Ok(())
}

pub(crate) fn entry(binding: u32, resource: wgpu::BindingResource<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry { binding, resource }
}

/// Records a plain copy of `src` into `dst` with the same block shape and segmentation as the
/// loss kernels, one element per step or, with `vec4`, four (16-byte accesses; the element count
/// must then be a multiple of the storage offset alignment in elements): the bandwidth roofline
/// of the benchmarks.
pub fn encode_copy(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    src: &Tensor,
    dst: &Tensor,
    vec4: bool,
) -> Result<()> {
    if src.shape() != dst.shape() {
        return Err(Error::ShapeMismatch {
            name: "dst",
            expected: src.shape().to_vec(),
            got: dst.shape().to_vec(),
        });
    }
    if vec4 && !src.len().is_multiple_of(vec4_unit(gpu, 4)) || src.is_empty() {
        return Err(Error::InvalidShape {
            name: "src",
            got: src.shape().to_vec(),
            why: "the copy kernels need a non-zero length, and the vec4 one a multiple of the \
                  storage offset alignment in elements",
        });
    }
    src.check_bindable(gpu, "src")?;
    dst.check_bindable(gpu, "dst")?;
    gpu.scoped(|| {
        let (bgl, layout) = gpu.layout("copy", &[storage(0, true), storage(1, false)]);
        let kernel = if vec4 {
            &crate::kernel::COPY_VEC4
        } else {
            &crate::kernel::COPY
        };
        let pipeline = gpu.pipeline(
            kernel,
            PipelineKey {
                kernel: kernel.name,
                entry: "copy",
                overrides: Vec::new(),
            },
            &layout,
        );
        let segs = segments(
            src.len(),
            segment_len(gpu, 1, 4, false),
            gpu.max_workgroups(),
            vec4.then(|| vec4_unit(gpu, 4)),
        );
        let groups: Vec<wgpu::BindGroup> = segs
            .iter()
            .map(|s| {
                gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgloss copy"),
                    layout: &bgl,
                    entries: &[
                        entry(0, src.binding(s.start, s.len)),
                        entry(1, dst.binding(s.start, s.len)),
                    ],
                })
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("copy"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        for (s, g) in segs.iter().zip(&groups) {
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups(s.workgroups as u32, 1, 1);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_input_in_order() {
        let segs = segments(1000, 256, 4096, None);
        let lens: Vec<usize> = segs.iter().map(|s| s.len).collect();
        assert_eq!(lens, [256, 256, 256, 232]);
        assert_eq!(segs[3].start, 768);
        assert_eq!(segs[3].wg_base, 3);
        let quads = segments(1003, 512, 4096, Some(64));
        let spans: Vec<(usize, usize, bool)> =
            quads.iter().map(|s| (s.start, s.len, s.vec4)).collect();
        assert_eq!(spans, [(0, 512, true), (512, 448, true), (960, 43, false)]);
        assert_eq!(quads[2].wg_base, 2);
        let big = segments(40_000_003, 33_554_432, 4096, None);
        assert_eq!(big.len(), 2);
        assert_eq!(big[0].workgroups, 4096);
        assert_eq!(big[1].len, 40_000_003 - 33_554_432);
    }
}
