//! The driver of the losses over a class dimension (`shaders/classification/class_rows.wgsl`):
//! cross-entropy, poly1, softmax focal and multi-class hinge share its passes, label checks,
//! segmenting and reductions, and differ only in what a row accumulates.

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, samples_per_segment, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS, MAX_WHOLE_ROW_CLASSES};
use crate::kernel::{
    CLASS_ROWS, CLASS_ROWS_HALF, CLASS_ROWS_HALF4, CLASS_ROWS_STAGED, CLASS_ROWS_VEC4,
};
use crate::narrow::Narrow;
use crate::{DType, Gpu, LossOutput, Reduction, Tensor};

/// Which loss a row computes (the kernel's `KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Cross-entropy, with poly1's term when `poly` is not 0.
    CrossEntropy = 0,
    /// Softmax focal loss.
    Focal = 1,
    /// Multi-class hinge (multi-margin) loss.
    Margin = 2,
}

/// One call's configuration of the class-row kernel.
pub(crate) struct ClassRows<'a> {
    pub kind: Kind,
    /// Per-class weights (alpha for the focal loss).
    pub weight: Option<&'a [f32]>,
    /// Rows with this label are skipped; `None`: every label must be in [0, C).
    pub ignore_index: Option<i64>,
    pub label_smoothing: f32,
    pub poly: f32,
    pub z_loss: f32,
    pub logit_softcap: Option<f32>,
    pub gamma: f32,
    pub margin: f32,
    pub power: u32,
    /// The mean divides by the number of non-ignored rows instead of the sum of their weights.
    pub count_rows: bool,
    pub reduction: Reduction,
    pub grad_scale: f32,
}

impl Default for ClassRows<'_> {
    fn default() -> Self {
        Self {
            kind: Kind::CrossEntropy,
            weight: None,
            ignore_index: None,
            label_smoothing: 0.0,
            poly: 0.0,
            z_loss: 0.0,
            logit_softcap: None,
            gamma: 0.0,
            margin: 0.0,
            power: 1,
            count_rows: false,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// Uniform block of `class_rows.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
    inner: u32,
    row_base: u32,
    wg_base: u32,
    num_partials: u32,
    ignore_index: i32,
    has_ignore: u32,
    grad_scale: f32,
    smoothing: f32,
    weight_sum: f32,
    mean: u32,
    per_row: u32,
    lead: u32,
    poly: f32,
    z_loss: f32,
    softcap: f32,
    gamma: f32,
    margin: f32,
    power: u32,
    count_rows: u32,
    fixed_denom: f32,
    row_lead: u32,
    target_lead: u32,
}

const PARAMS_STRIDE: u64 = 256;

/// Words of the state before its edge slots (`EDGES` in class_rows.wgsl): D, then padding.
const STATE_HEAD: usize = 4;

/// Geometry of a `[N, C, S]` problem.
struct Dims {
    samples: usize,
    classes: usize,
    inner: usize,
}

/// Whether a target of `target_shape` for logits of `logits_shape` holds probabilities (the
/// logits' shape) rather than labels (the logits' shape without the class dimension).
pub(crate) fn is_probability_target(logits_shape: &[usize], target_shape: &[usize]) -> bool {
    logits_shape.len() >= 2 && target_shape.len() == logits_shape.len()
}

/// Shape of the loss for logits of `logits_shape`: one per row (`[N, d...]`) under reduction
/// none, else a scalar.
pub(crate) fn loss_shape(logits_shape: &[usize], reduction: Reduction) -> Vec<usize> {
    match reduction {
        Reduction::None => logits_shape
            .first()
            .into_iter()
            .chain(logits_shape.get(2..).unwrap_or_default())
            .copied()
            .collect(),
        Reduction::Mean | Reduction::Sum => Vec::new(),
    }
}

/// Outputs for logits of `logits_shape`, the gradient of `dtype`.
pub(crate) fn output(
    gpu: &Gpu,
    logits_shape: &[usize],
    reduction: Reduction,
    dtype: DType,
) -> Result<LossOutput> {
    let loss_shape = loss_shape(logits_shape, reduction);
    LossOutput::with_grad_type(gpu, logits_shape, &loss_shape, dtype)
}

/// Rejects a class-weight vector that is not `[C]` or not finite.
pub(crate) fn check_weight(
    name: &'static str,
    weight: Option<&[f32]>,
    classes: usize,
) -> Result<()> {
    let Some(w) = weight else { return Ok(()) };
    if w.len() != classes {
        return Err(Error::ShapeMismatch {
            name,
            expected: vec![classes],
            got: vec![w.len()],
        });
    }
    match w.iter().find(|x| !x.is_finite()) {
        Some(bad) => check_param(name, f64::from(*bad), "finite", false),
        None => Ok(()),
    }
}

fn layout(gpu: &Gpu) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    gpu.layout(
        "class_rows",
        &[
            storage(0, true),
            storage(1, true),
            storage(2, false),
            storage(3, false),
            storage(4, false),
            storage(5, true),
            uniform(6),
            storage(7, false),
            storage(8, false),
        ],
    )
}

impl ClassRows<'_> {
    fn dims(logits_shape: &[usize], target: &Tensor, probs: bool) -> Result<Dims> {
        let shape = logits_shape;
        if shape.len() < 2 || shape[1] == 0 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "expected [N, C, d...] with C ≥ 1",
            });
        }
        let expected: Vec<usize> = if probs {
            shape.to_vec()
        } else {
            [shape[0]]
                .into_iter()
                .chain(shape[2..].iter().copied())
                .collect()
        };
        if target.shape() != expected {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected,
                got: target.shape().to_vec(),
            });
        }
        if shape[1] > i32::MAX as usize {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "more than 2^31 - 1 classes",
            });
        }
        Ok(Dims {
            samples: shape[0],
            classes: shape[1],
            inner: shape[2..].iter().product(),
        })
    }

    /// Records the passes. `logits` is `None` in place: `out.grad` then holds the logits on entry
    /// and the gradient on exit. Targets are i32 labels or, for cross-entropy, f32 probabilities
    /// of the logits' shape. Every argument is checked before anything is recorded.
    pub(crate) fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: Option<&Tensor>,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        let logits_shape = logits.unwrap_or(&out.grad).shape();
        let probs =
            target.dtype() == DType::F32 && is_probability_target(logits_shape, target.shape());
        if probs && self.kind != Kind::CrossEntropy {
            target.check_dtype("target", DType::I32)?;
        }
        let d = Self::dims(logits_shape, target, probs)?;
        crate::config::check_grad_scale(self.grad_scale)?;
        check_weight("weight", self.weight, d.classes)?;
        // f32 logits, or 16-bit ones (and a gradient of their type) over contiguous rows.
        let values = crate::grad_type(logits.unwrap_or(&out.grad));
        if let Some(l) = logits {
            l.check_dtype("logits", values)?;
        }
        target.check_dtype("target", if probs { DType::F32 } else { DType::I32 })?;
        out.grad.check_dtype("grad", values)?;
        let half = values.is_half();
        // Contiguous rows of an odd class count share 32-bit words: each row keeps its shared
        // element's gradient in an edge slot of the state, one f32 per row of a segment. With
        // trailing dims of an even size, one invocation takes rows (n, 2k) and (n, 2k + 1),
        // which share every word they hold, while such a pair fits its loop budget. Of an odd
        // size (or rows too long for that), rows share words in every class: the gradient is
        // staged in f32 and packed after each segment (`narrow`).
        let shared_words = half && d.inner == 1 && !d.classes.is_multiple_of(2);
        let staged = half
            && d.inner > 1
            && (!d.inner.is_multiple_of(2) || d.classes > MAX_WHOLE_ROW_CLASSES);
        let pairs = half && d.inner > 1 && !staged;
        out.loss.check_dtype("loss", DType::F32)?;
        out.status.check_dtype("status", DType::U32)?;
        if out.grad.shape() != logits_shape {
            return Err(Error::ShapeMismatch {
                name: "grad",
                expected: logits_shape.to_vec(),
                got: out.grad.shape().to_vec(),
            });
        }
        let rows = d.samples * d.inner;
        let loss_shape = loss_shape(logits_shape, self.reduction);
        if out.loss.len() != loss_shape.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: loss_shape,
                got: out.loss.shape().to_vec(),
            });
        }
        if out.grad.len() > u32::MAX as usize {
            return Err(Error::InvalidShape {
                name: "logits",
                got: logits_shape.to_vec(),
                why: "more than 2^32 - 1 elements",
            });
        }
        for (t, name) in [
            (Some(target), "target"),
            (logits, "logits"),
            (Some(&out.grad), "grad"),
            (Some(&out.loss), "loss"),
            (Some(&out.status), "status"),
        ] {
            if let Some(t) = t {
                t.check_bindable(gpu, name)?;
            }
        }
        for (t, name) in [(&out.loss, "loss"), (&out.status, "status")] {
            if !t.buffer().usage().contains(wgpu::BufferUsages::COPY_DST) {
                return Err(Error::MissingUsage {
                    name,
                    missing: wgpu::BufferUsages::COPY_DST,
                });
            }
        }
        let sample = d.classes * d.inner;
        let seg_samples = samples_per_segment(
            gpu,
            logits_shape,
            (d.classes, d.inner),
            values.size(),
            if shared_words { 4 } else { 0 },
        )?;

        gpu.scoped(|| {
            encoder.clear_buffer(out.status.buffer(), out.status.offset(), Some(4));
            if self.reduction != Reduction::None {
                encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            }
            if rows == 0 {
                return Ok(());
            }
            struct Seg {
                first: usize,
                count: usize,
                workgroups: usize,
                wg_base: usize,
            }
            let mut segs = Vec::new();
            let (mut first, mut wg_base) = (0, 0);
            let small = d.classes <= gpu.whole_row_classes();
            // Rows (up to `Gpu::whole_row_classes`, or row pairs) an invocation takes whole,
            // else a workgroup per row.
            let whole = small || pairs;
            let rows_per_unit = if pairs { 2 } else { 1 };
            // Iterations of one invocation per unit: its share of the unit in the two sweeps,
            // plus the tree steps of the workgroup path.
            let per_unit = if whole {
                rows_per_unit * (2 * d.classes + 1)
            } else {
                2 * d.classes.div_ceil(256) + 24
            };
            while first < d.samples {
                let count = seg_samples.min(d.samples - first);
                let units = count * d.inner / rows_per_unit;
                let per_invocation = (MAX_ITERATIONS / per_unit).max(1);
                let needed = if whole {
                    units.div_ceil(256 * per_invocation)
                } else {
                    units.div_ceil(per_invocation)
                };
                let cap = if whole { units.div_ceil(256) } else { units };
                let workgroups = gpu.max_workgroups().max(needed).min(cap).clamp(1, 65_535);
                segs.push(Seg {
                    first,
                    count,
                    workgroups,
                    wg_base,
                });
                first += count;
                wg_base += workgroups;
            }
            let num_partials = wg_base;
            let weight_sum = self
                .weight
                .map_or(d.classes as f64, |w| w.iter().map(|&x| f64::from(x)).sum());
            let (ignore_index, has_ignore) = match self.ignore_index.map(i32::try_from) {
                Some(Ok(i)) if !probs => (i, 1),
                _ => (0, 0),
            };
            // Each segment's views are bound from the alignment before its first element, the
            // elements before it (the leads) given to the kernel.
            let whole = |s: &Seg| (s.first * sample, s.count * sample);
            let per_row = |s: &Seg| (s.first * d.inner, s.count * d.inner);
            let mut blocks = vec![0u8; PARAMS_STRIDE as usize * segs.len()];
            for (i, s) in segs.iter().enumerate() {
                let target_lead = if probs {
                    target.binding_led(gpu, whole(s)).1
                } else {
                    0
                };
                let p = Params {
                    rows: (s.count * d.inner) as u32,
                    classes: d.classes as u32,
                    inner: d.inner as u32,
                    row_base: (s.first * d.inner) as u32,
                    wg_base: s.wg_base as u32,
                    num_partials: num_partials as u32,
                    ignore_index,
                    has_ignore,
                    grad_scale: self.grad_scale,
                    smoothing: self.label_smoothing,
                    weight_sum: weight_sum as f32,
                    mean: u32::from(self.reduction == Reduction::Mean),
                    per_row: u32::from(self.reduction == Reduction::None),
                    lead: out.grad.binding_led(gpu, whole(s)).1,
                    poly: self.poly,
                    z_loss: self.z_loss,
                    softcap: self.logit_softcap.unwrap_or(0.0),
                    gamma: self.gamma,
                    margin: self.margin,
                    power: self.power,
                    count_rows: u32::from(self.count_rows),
                    fixed_denom: rows as f32,
                    // Labels and per-row losses: 4-byte values of aligned views, one lead.
                    row_lead: out.loss.binding_led(gpu, per_row(s)).1,
                    target_lead,
                };
                let at = i * PARAMS_STRIDE as usize;
                blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
            }
            let device = gpu.device();
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("class_rows params"),
                contents: &blocks,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let scratch = |label, floats: usize| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 4 * floats.max(4) as u64,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            let partials = scratch("class_rows partials", num_partials);
            // The f32 gradient of a segment and its packing, when staged.
            let narrow = staged.then(|| {
                let firsts = segs.iter().map(|s| (s.first, s.count));
                Narrow::new(gpu, &out.grad, &out.status, sample, firsts)
            });
            let edges = if shared_words { seg_samples } else { 0 };
            let state = scratch("class_rows state", STATE_HEAD + edges);
            // Stand-in for the bindings a configuration does not read.
            let unused = scratch("class_rows unused binding", 4);
            let weight = match self.weight {
                Some(w) => device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("class_rows weight"),
                    contents: bytemuck::cast_slice(w),
                    usage: wgpu::BufferUsages::STORAGE,
                }),
                None => scratch("class_rows no weight", 4),
            };
            let (bgl, pipeline_layout) = layout(gpu);
            let bind = |i: usize, s: &Seg| {
                let loss = if self.reduction == Reduction::None {
                    out.loss.binding_led(gpu, per_row(s)).0
                } else {
                    out.loss.binding(0, 1)
                };
                let logits = match (logits, staged) {
                    (Some(l), _) => l.binding_led(gpu, whole(s)).0,
                    // In place and staged: the caller's gradient holds the logits until the
                    // segment is packed.
                    (None, true) => out.grad.binding_led(gpu, whole(s)).0,
                    (None, false) => unused.as_entire_binding(),
                };
                let grad = match &narrow {
                    Some(n) => n.staging(i),
                    None => out.grad.binding_led(gpu, whole(s)).0,
                };
                let targets = if probs {
                    target.binding_led(gpu, whole(s)).0
                } else {
                    target.binding_led(gpu, per_row(s)).0
                };
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("class_rows"),
                    layout: &bgl,
                    entries: &[
                        entry(0, logits),
                        entry(1, targets),
                        entry(2, grad),
                        entry(3, loss),
                        entry(4, partials.as_entire_binding()),
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
                        entry(8, state.as_entire_binding()),
                    ],
                })
            };
            let groups: Vec<wgpu::BindGroup> =
                segs.iter().enumerate().map(|(i, s)| bind(i, s)).collect();
            // Four logits per step where every row starts on a vec4: contiguous rows of a
            // multiple of four classes (segments start on whole samples, so on a vec4 too, and
            // their leads are whole vec4s).
            // 16-bit logits likewise four per step, else two.
            let quads = gpu.vec4() && !small && d.inner == 1 && d.classes.is_multiple_of(4);
            let kernel = match (half, quads) {
                _ if staged => &CLASS_ROWS_STAGED,
                (true, true) => &CLASS_ROWS_HALF4,
                (true, false) => &CLASS_ROWS_HALF,
                (false, true) => &CLASS_ROWS_VEC4,
                (false, false) => &CLASS_ROWS,
            };
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    kernel,
                    PipelineKey {
                        kernel: kernel.name,
                        entry,
                        overrides: vec![
                            ("KIND", self.kind as u32),
                            ("SOFTCAP", self.logit_softcap.is_some().into()),
                            ("PROBS", probs.into()),
                            ("IN_PLACE", (logits.is_none() && !staged).into()),
                            ("WEIGHTED", self.weight.is_some().into()),
                            ("SHARED_WORDS", shared_words.into()),
                        ]
                        .into_iter()
                        .chain(half.then_some(("BF16", (values == DType::BF16).into())))
                        .collect(),
                    },
                    &pipeline_layout,
                )
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("class_rows"),
                timestamp_writes: None,
            });
            let fused = match (pairs, small) {
                (true, _) => "fused_row_pairs",
                (false, true) => "fused_rows",
                (false, false) => "fused",
            };
            for (entry, all) in [
                ("labels_pass", true),
                ("labels_reduce", false),
                (fused, true),
                ("reduce", false),
            ] {
                let skipped = match entry {
                    "labels_pass" | "labels_reduce" => probs,
                    "reduce" => self.reduction == Reduction::None,
                    _ => false,
                };
                if skipped {
                    continue;
                }
                let main = pipeline(entry);
                // Shared words are packed after each segment's rows, before the next segment
                // reuses the edge slots.
                let pack = (entry == fused && shared_words).then(|| pipeline("shared_words"));
                pass.set_pipeline(&main);
                if all {
                    for (i, (s, g)) in segs.iter().zip(&groups).enumerate() {
                        pass.set_bind_group(0, g, &[]);
                        pass.dispatch_workgroups(s.workgroups as u32, 1, 1);
                        if let (true, Some(narrow)) = (entry == fused, &narrow) {
                            narrow.dispatch(&mut pass, i);
                            pass.set_pipeline(&main);
                        }
                        if let Some(pack) = &pack {
                            let pairs = (s.count * d.inner).div_ceil(2);
                            pass.set_pipeline(pack);
                            pass.dispatch_workgroups(
                                pairs.div_ceil(256).clamp(1, 65_535) as u32,
                                1,
                                1,
                            );
                            pass.set_pipeline(&main);
                        }
                    }
                } else {
                    pass.set_bind_group(0, &groups[0], &[]);
                    pass.dispatch_workgroups(1, 1, 1);
                }
            }
            Ok(())
        })
    }
}

/// Turns a bad label recorded by the kernel into [`Error::LabelOutOfRange`].
pub(crate) fn check_labels(gpu: &Gpu, labels: &Tensor, out: &LossOutput) -> Result<()> {
    check_labels_of(
        gpu,
        labels,
        out,
        out.grad.shape().get(1).copied().unwrap_or(0),
    )
}

/// [`check_labels`] for labels in `[0, classes)`.
pub(crate) fn check_labels_of(
    gpu: &Gpu,
    labels: &Tensor,
    out: &LossOutput,
    classes: usize,
) -> Result<()> {
    let Some(position) = out.first_bad_label(gpu)? else {
        return Ok(());
    };
    let label = labels
        .to_labels(gpu)?
        .get(position)
        .copied()
        .unwrap_or_default();
    Err(Error::LabelOutOfRange {
        position,
        label: label.into(),
        classes,
    })
}
