use wgpu::util::DeviceExt;

use crate::elementwise::{entry, gcd, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::CROSS_ENTROPY;
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor};

/// Cross-entropy over a class dimension with class-index targets, torch `cross_entropy`, fused:
/// each row's log-sum-exp is computed online and the gradient written in a second sweep of the
/// row, which rows of any length stream through (no class-count limit).
///
/// ```text
/// loss_r = (1 − ε) w_y (LSE − x_y) + ε/C (W·LSE − Σ_c w_c x_c),   W = Σ_c w_c
/// mean:  Σ_r loss_r / Σ_r w_{y_r}   over rows whose label is not ignore_index (torch's weighted
///        mean, label smoothing included); an all-ignored batch gives 0 and a zero gradient
/// ```
/// Extras: `z_loss` adds `z · LSE²` to each non-ignored row (reduced like the rest);
/// `logit_softcap` reads every logit as `cap · tanh(x / cap)` and chains its derivative.
/// A label outside [0, C) that is not `ignore_index` makes the call fail with
/// [`Error::LabelOutOfRange`] naming the first such position; the kernel then writes no output.
/// With `encode`, read it with [`LossOutput::first_bad_label`] once the work is done.
/// # Shapes
/// `logits`: `[N, C]` or `[N, C, d1, ...]` (f32); `labels`: `[N]` or `[N, d1, ...]` (i32);
/// gradient: the shape of `logits`; loss under reduction none: the shape of `labels`.
/// Defaults: no weight, ignore_index −100, label_smoothing 0, reduction mean, grad_scale 1.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy {
    /// Weight of each class, `[C]` (finite).
    pub weight: Option<Vec<f32>>,
    /// Label whose rows are skipped (loss 0, gradient 0, not counted by the mean). Any value,
    /// also outside [0, C).
    pub ignore_index: i64,
    /// ε in [0, 1]: the target is (1 − ε) one-hot + ε / C.
    pub label_smoothing: f32,
    /// z of the z-loss `z · LSE²` added to each non-ignored row (PaLM; ≥ 0, default 0).
    pub z_loss: f32,
    /// Soft cap: logits are read as `cap · tanh(x / cap)` (Gemma; > 0, default none).
    pub logit_softcap: Option<f32>,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            logit_softcap: None,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// Uniform block of `cross_entropy.wgsl`.
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
    has_weight: u32,
    poly: f32,
    z_loss: f32,
    softcap: f32,
    pad: [u32; 3],
}

const PARAMS_STRIDE: u64 = 256;
/// Largest class count handled with one invocation per row; more classes get a workgroup per
/// row.
const SMALL_C: usize = 32;

/// Geometry of a `[N, C, S]` problem.
struct Dims {
    samples: usize,
    classes: usize,
    inner: usize,
}

impl CrossEntropy {
    fn dims(&self, logits: &Tensor, labels: &Tensor) -> Result<Dims> {
        let shape = logits.shape();
        if shape.len() < 2 || shape[1] == 0 {
            return Err(Error::InvalidShape {
                name: "logits",
                got: shape.to_vec(),
                why: "expected [N, C, d...] with C ≥ 1",
            });
        }
        let expected: Vec<usize> = [shape[0]]
            .into_iter()
            .chain(shape[2..].iter().copied())
            .collect();
        if labels.shape() != expected {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected,
                got: labels.shape().to_vec(),
            });
        }
        Ok(Dims {
            samples: shape[0],
            classes: shape[1],
            inner: shape[2..].iter().product(),
        })
    }

    fn validate(&self, classes: usize) -> Result<()> {
        let eps = self.label_smoothing;
        check_param(
            "label_smoothing",
            eps.into(),
            "in [0, 1]",
            (0.0..=1.0).contains(&eps),
        )?;
        check_param("z_loss", self.z_loss.into(), ">= 0", self.z_loss >= 0.0)?;
        if let Some(cap) = self.logit_softcap {
            check_param("logit_softcap", cap.into(), "> 0", cap > 0.0)?;
        }
        crate::config::check_grad_scale(self.grad_scale)?;
        if let Some(w) = &self.weight {
            if w.len() != classes {
                return Err(Error::ShapeMismatch {
                    name: "weight",
                    expected: vec![classes],
                    got: vec![w.len()],
                });
            }
            if let Some(bad) = w.iter().find(|x| !x.is_finite()) {
                check_param("weight", f64::from(*bad), "finite", false)?;
            }
        }
        if classes > i32::MAX as usize {
            return Err(Error::InvalidShape {
                name: "logits",
                got: vec![classes],
                why: "more than 2^31 - 1 classes",
            });
        }
        Ok(())
    }
}

fn layout(gpu: &Gpu) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    gpu.layout(
        "cross_entropy",
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

impl Loss for CrossEntropy {
    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        target_shape: &[usize],
    ) -> Result<LossOutput> {
        let loss_shape = match self.reduction {
            Reduction::None => target_shape.to_vec(),
            Reduction::Mean | Reduction::Sum => Vec::new(),
        };
        LossOutput::with_loss_shape(gpu, input_shape, &loss_shape)
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        labels: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        self.encode_with_poly(gpu, encoder, logits, labels, out, 0.0)
    }

    fn check(&self, gpu: &Gpu, labels: &Tensor, out: &LossOutput) -> Result<()> {
        check_labels(gpu, labels, out)
    }
}

impl CrossEntropy {
    /// Records the passes, with poly1's `ε (1 − p_y)` term added when `poly` is not 0.
    fn encode_with_poly(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        labels: &Tensor,
        out: &LossOutput,
        poly: f32,
    ) -> Result<()> {
        let d = self.dims(logits, labels)?;
        self.validate(d.classes)?;
        logits.check_dtype("logits", DType::F32)?;
        labels.check_dtype("target", DType::I32)?;
        out.grad.check_dtype("grad", DType::F32)?;
        out.loss.check_dtype("loss", DType::F32)?;
        out.status.check_dtype("status", DType::U32)?;
        if out.grad.shape() != logits.shape() {
            return Err(Error::ShapeMismatch {
                name: "grad",
                expected: logits.shape().to_vec(),
                got: out.grad.shape().to_vec(),
            });
        }
        let rows = d.samples * d.inner;
        let loss_len = if self.reduction == Reduction::None {
            rows
        } else {
            1
        };
        if out.loss.len() != loss_len {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: if self.reduction == Reduction::None {
                    labels.shape().to_vec()
                } else {
                    Vec::new()
                },
                got: out.loss.shape().to_vec(),
            });
        }
        if logits.len() > u32::MAX as usize {
            return Err(Error::InvalidShape {
                name: "logits",
                got: logits.shape().to_vec(),
                why: "more than 2^32 - 1 elements",
            });
        }
        for (t, name) in [
            (logits, "logits"),
            (labels, "target"),
            (&out.grad, "grad"),
            (&out.loss, "loss"),
            (&out.status, "status"),
        ] {
            t.check_bindable(gpu, name)?;
        }
        for (t, name) in [(&out.loss, "loss"), (&out.status, "status")] {
            if !t.buffer().usage().contains(wgpu::BufferUsages::COPY_DST) {
                return Err(Error::MissingUsage {
                    name,
                    missing: wgpu::BufferUsages::COPY_DST,
                });
            }
        }
        // Segments of whole samples that fit one binding and start aligned for all views.
        let limits = gpu.limits();
        let align = (limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
        let sample = d.classes * d.inner;
        let unit = {
            let a = align / gcd(align, sample.max(1));
            let b = align / gcd(align, d.inner.max(1));
            a / gcd(a, b) * b
        };
        let max_elems = (limits.max_storage_buffer_binding_size / 4) as usize;
        if sample > max_elems {
            return Err(Error::InvalidShape {
                name: "logits",
                got: logits.shape().to_vec(),
                why: "one sample (C times the trailing dims) exceeds a storage binding",
            });
        }
        let seg_samples = ((max_elems / sample.max(1)) / unit).max(1) * unit;

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
            let small = d.classes <= SMALL_C;
            // Iterations of one invocation per row: its share of the row in the two sweeps,
            // plus the tree steps of the workgroup path.
            let per_row = if small {
                2 * d.classes + 1
            } else {
                2 * d.classes.div_ceil(256) + 24
            };
            while first < d.samples {
                let count = seg_samples.min(d.samples - first);
                let rows = count * d.inner;
                let per_invocation_rows = (MAX_ITERATIONS / per_row).max(1);
                let needed = if small {
                    rows.div_ceil(256 * per_invocation_rows)
                } else {
                    rows.div_ceil(per_invocation_rows)
                };
                let cap = if small { rows.div_ceil(256) } else { rows };
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
                .as_ref()
                .map_or(d.classes as f64, |w| w.iter().map(|&x| f64::from(x)).sum());
            let (ignore_index, has_ignore) = match i32::try_from(self.ignore_index) {
                Ok(i) => (i, 1),
                Err(_) => (0, 0),
            };
            let mut blocks = vec![0u8; PARAMS_STRIDE as usize * segs.len()];
            for (i, s) in segs.iter().enumerate() {
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
                    has_weight: u32::from(self.weight.is_some()),
                    poly,
                    z_loss: self.z_loss,
                    softcap: self.logit_softcap.unwrap_or(0.0),
                    pad: [0; 3],
                };
                let at = i * PARAMS_STRIDE as usize;
                blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
            }
            let device = gpu.device();
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("cross_entropy params"),
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
            let partials = scratch("cross_entropy partials", num_partials);
            let state = scratch("cross_entropy state", 4);
            let weight = match &self.weight {
                Some(w) => device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("cross_entropy weight"),
                    contents: bytemuck::cast_slice(w),
                    usage: wgpu::BufferUsages::STORAGE,
                }),
                None => scratch("cross_entropy no weight", 4),
            };
            let (bgl, pipeline_layout) = layout(gpu);
            let bind = |i: usize, s: &Seg| {
                let loss = if self.reduction == Reduction::None {
                    out.loss.binding(s.first * d.inner, s.count * d.inner)
                } else {
                    out.loss.binding(0, 1)
                };
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("cross_entropy"),
                    layout: &bgl,
                    entries: &[
                        entry(0, logits.binding(s.first * sample, s.count * sample)),
                        entry(1, labels.binding(s.first * d.inner, s.count * d.inner)),
                        entry(2, out.grad.binding(s.first * sample, s.count * sample)),
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
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    &CROSS_ENTROPY,
                    PipelineKey {
                        kernel: CROSS_ENTROPY.name,
                        entry,
                        overrides: vec![("SOFTCAP", self.logit_softcap.is_some())],
                    },
                    &pipeline_layout,
                )
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("cross_entropy"),
                timestamp_writes: None,
            });
            let fused = if small { "fused_rows" } else { "fused" };
            for (entry, all) in [
                ("labels_pass", true),
                ("labels_reduce", false),
                (fused, true),
                ("reduce", false),
            ] {
                if entry == "reduce" && self.reduction == Reduction::None {
                    continue;
                }
                pass.set_pipeline(&pipeline(entry));
                if all {
                    for (s, g) in segs.iter().zip(&groups) {
                        pass.set_bind_group(0, g, &[]);
                        pass.dispatch_workgroups(s.workgroups as u32, 1, 1);
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
fn check_labels(gpu: &Gpu, labels: &Tensor, out: &LossOutput) -> Result<()> {
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
        classes: out.grad.shape().get(1).copied().unwrap_or(0),
    })
}

/// Poly-1 loss (Leng et al. 2022; optax `poly_loss_cross_entropy`) with class-index targets:
/// cross-entropy plus ε times one minus the probability of the label, fused in the
/// cross-entropy kernel.
///
/// ```text
/// loss_r = LSE − x_y + ε (1 − p_y),   d/dx_j = p_j − [j = y] + ε p_y (p_j − [j = y])
/// ```
/// Rows labelled `ignore_index` are skipped; the mean is over the other rows; bad labels are
/// reported as for [`CrossEntropy`].
/// # Shapes
/// As [`CrossEntropy`]. Defaults: epsilon 1.0, ignore_index −100, reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Poly1 {
    /// Weight ε of the polynomial term (finite).
    pub epsilon: f32,
    /// Label whose rows are skipped.
    pub ignore_index: i64,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for Poly1 {
    fn default() -> Self {
        Self {
            epsilon: 1.0,
            ignore_index: -100,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl Loss for Poly1 {
    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        target_shape: &[usize],
    ) -> Result<LossOutput> {
        self.cross_entropy().output(gpu, input_shape, target_shape)
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        logits: &Tensor,
        labels: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        check_param("epsilon", self.epsilon.into(), "finite", true)?;
        self.cross_entropy()
            .encode_with_poly(gpu, encoder, logits, labels, out, self.epsilon)
    }

    fn check(&self, gpu: &Gpu, labels: &Tensor, out: &LossOutput) -> Result<()> {
        check_labels(gpu, labels, out)
    }
}

impl Poly1 {
    fn cross_entropy(&self) -> CrossEntropy {
        CrossEntropy {
            weight: None,
            ignore_index: self.ignore_index,
            label_smoothing: 0.0,
            z_loss: 0.0,
            logit_softcap: None,
            reduction: self.reduction,
            grad_scale: self.grad_scale,
        }
    }
}
