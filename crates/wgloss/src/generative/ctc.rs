use wgpu::util::DeviceExt;

use crate::config::check_grad_scale;
use crate::elementwise::{dynamic_uniform, entry, storage};
use crate::error::{Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS, WG};
use crate::kernel::CTC;
use crate::narrow::{typed_output, via_f32};
use crate::{DType, Gpu, LossOutput, Reduction, Tensor};

/// Longest target (`SMAX` in `ctc.wgsl`): its `2S + 1` states live in workgroup memory.
const MAX_TARGET: usize = 512;
/// Most frames.
const MAX_FRAMES: usize = MAX_ITERATIONS;
/// Most sequences: the reduction's single workgroup walks them 256 at a time.
const MAX_BATCH: usize = 256 * MAX_ITERATIONS;
/// Distance between the parameter blocks of the chunks (a valid dynamic uniform offset).
const PARAMS_STRIDE: usize = 256;

/// Uniform block of `ctc.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t_max: u32,
    n: u32,
    c: u32,
    blank: u32,
    stride: u32,
    lstride: u32,
    t0: u32,
    t1: u32,
    zero_inf: u32,
    per_sample: u32,
    lp_len: u32,
    emo_at: u32,
    carry_at: u32,
    links_at: u32,
    rec_at: u32,
    label_base: u32,
    n_all: u32,
    dst_at: u32,
    pad: u32,
}

/// One sequence as `ctc.wgsl` reads it.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Seq {
    len: u32,
    tlen: u32,
    off: u32,
    pad: u32,
    gw: f32,
    lw: f32,
    pad1: [f32; 2],
}

/// Connectionist temporal classification (Graves et al. 2006), torch's `F.ctc_loss`: the
/// negative log-likelihood of each target over all its alignments to the input frames, and its
/// gradient w.r.t. `log_probs`.
///
/// ```text
/// l' = (∅, l_1, ∅, l_2, …, l_S, ∅)                  (∅ the blank, W = 2S + 1 states)
/// α_t(s) = lse(α_{t−1}(s), α_{t−1}(s−1), α_{t−1}(s−2) [l'_s ≠ l'_{s−2}]) + y_t(l'_s)
/// nll_n  = −lse(α_{T_n−1}(W−1), α_{T_n−1}(W−2))      y_t(c) = log_probs[t, n, c]
/// ∂nll_n/∂y_t(c) = −Σ_{s : l'_s = c} exp(α_t(s) + β_t(s) − log p)     (t < T_n)
/// none: [nll_n]    sum: Σ_n nll_n    mean: (1/N) Σ_n nll_n / max(S_n, 1)
/// ```
/// with `β_t(s)` the log-mass of finishing from state `s` after frame `t` (emissions after `t`
/// only). The gradient is the true partial derivative w.r.t. `log_probs` as independent
/// values, times the reduction's weight (`1/(N·max(S_n, 1))` under mean, else 1) and
/// `grad_scale`. torch's backward returns the gradient w.r.t. the logits of a `log_softmax`
/// instead: this plus `exp(log_probs)` times the same factors, over the first `T_n` frames.
/// Frames `t ≥ input_lengths[n]` get gradient 0.
///
/// A target that cannot be aligned (`T_n < S_n + ` its number of repeated neighbours) has an
/// infinite loss and gradient 0; with `zero_infinity` its loss is 0. `T_n = 0` gives 0 for an
/// empty target and `+∞` otherwise. A NaN or `+∞` anywhere in a sample's first `T_n` frames
/// makes its loss and the gradient of those frames NaN. Entries of `−∞` are valid, and finite
/// inputs of any magnitude give finite results: every row of the recursions is kept relative
/// to its maximum in f32 (log-masses 1e4 apart are then resolved to about 1e-3).
///
/// Labels are checked on the GPU: a label outside [0, C) or equal to the blank makes
/// [`Ctc::compute`] fail with [`Error::LabelOutOfRange`] naming its first position in
/// `targets`, and the kernel then writes neither loss nor gradient (read the position with
/// [`LossOutput::first_bad_label`] after [`Ctc::encode`]). Lengths are checked on the host
/// before anything is recorded.
/// # Shapes
/// `log_probs`: `[T, N, C]` f32 (or F16 / BF16 through an f32 copy, the gradient in their
/// type), time-major as torch. `targets`: i32, padded `[N, S_max]` (row
/// `n` holds its `target_lengths[n]` labels first) or concatenated `[Σ_n target_lengths[n]]`.
/// `input_lengths`, `target_lengths`: N entries each, `input_lengths[n] ≤ T` and
/// `target_lengths[n] ≤ S_max` (padded). Gradient: `[T, N, C]`; loss: `[N]` under reduction
/// none, `[]` otherwise. Limits: `T ≤ 16,384`, targets of at most 512 labels,
/// `N ≤ 4,194,304`, and the 32-byte records of the N sequences within one storage binding.
/// When `log_probs`, `targets` or the `N·T·(2·max_n S_n + 1)` floats of α scratch exceed one
/// binding, the batch runs in chunks of sequences copied into scratch buffers (`log_probs` and
/// `targets` then need `COPY_SRC`), with the same results; one sequence's own `[T, 1, C]`
/// frames, its row of padded targets and its `T·(2·max_n S_n + 1)` floats of α scratch must
/// still each fit one binding.
/// Defaults (torch's): blank 0, reduction mean, zero_infinity false, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ctc {
    /// Class index of the blank, in [0, C).
    pub blank: u32,
    /// Reduction over the batch (see the formula block).
    pub reduction: Reduction,
    /// Report an infinite loss as 0 (its gradient is 0 either way).
    pub zero_infinity: bool,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for Ctc {
    fn default() -> Self {
        Self {
            blank: 0,
            reduction: Reduction::Mean,
            zero_infinity: false,
            grad_scale: 1.0,
        }
    }
}

/// Everything the host derives from the arguments before recording.
struct Plan {
    t: usize,
    n: usize,
    c: usize,
    /// Longest target.
    s_max: usize,
    /// Every sequence, its label offset relative to the first label of its chunk.
    seqs: Vec<Seq>,
    /// Chunks `[n0, n1)` of the batch, each fitting one binding: one chunk `(0, N)` when the
    /// whole call does, which then runs on the caller's tensors directly.
    chunks: Vec<(usize, usize)>,
    /// The labels of each chunk in `targets`, `[start, end)`.
    label_ranges: Vec<(usize, usize)>,
    /// Whether the chunks are copied into scratch buffers (the call does not fit one binding).
    split: bool,
}

/// Consecutive chunks of `n` items in which the sums of three per-item costs stay within their
/// limits, greedily; `None` when one item alone exceeds a limit.
fn batch_chunks(
    n: usize,
    a: impl Fn(usize) -> u64,
    a_max: u64,
    b: impl Fn(usize) -> u64,
    b_max: u64,
    l: impl Fn(usize) -> u64,
    l_max: u64,
) -> Option<Vec<(usize, usize)>> {
    let mut chunks = Vec::new();
    let (mut n0, mut sa, mut sb, mut sl) = (0, 0u64, 0u64, 0u64);
    for i in 0..n {
        let (ca, cb, cl) = (a(i), b(i), l(i));
        if ca > a_max || cb > b_max || cl > l_max {
            return None;
        }
        if i > n0 && (sa + ca > a_max || sb + cb > b_max || sl + cl > l_max) {
            chunks.push((n0, i));
            (n0, sa, sb, sl) = (i, 0, 0, 0);
        }
        sa += ca;
        sb += cb;
        sl += cl;
    }
    if n0 < n {
        chunks.push((n0, n));
    }
    Some(chunks)
}

/// Invocations per workgroup of the recursions: one SIMD vector (8) on a CPU adapter (whose walks
/// are narrower than a workgroup, [`Gpu::lanes`]), where a barrier switches between the
/// workgroup's vectors, 256 otherwise.
fn recursion_workgroup_size(gpu: &Gpu) -> usize {
    if (gpu.lanes() as usize) < WG {
        8
    } else {
        256
    }
}

/// Workgroups `(x, y)` covering `groups`, at most `max_workgroups` wide unless that needs more
/// than 65,535 rows.
fn grid(gpu: &Gpu, groups: usize) -> (u32, u32) {
    let x = groups
        .min(gpu.max_workgroups())
        .max(groups.div_ceil(65_535))
        .max(1);
    (x as u32, groups.div_ceil(x) as u32)
}

/// Workgroups of a pass whose invocations stride over `len` elements in blocks, each invocation
/// looping at most `MAX_ITERATIONS` times.
fn flat_workgroups(gpu: &Gpu, len: usize) -> u32 {
    len.div_ceil(WG)
        .min(gpu.max_workgroups())
        .max(len.div_ceil(WG * MAX_ITERATIONS))
        .clamp(1, 65_535) as u32
}

fn invalid_lengths(name: &'static str, n: usize, got: usize) -> Error {
    Error::ShapeMismatch {
        name,
        expected: vec![n],
        got: vec![got],
    }
}

impl Ctc {
    /// Outputs for `log_probs` of `log_probs_shape` (`[T, N, C]`): a `[T, N, C]` gradient, a
    /// loss of `[N]` (reduction none) or `[]` (mean, sum), and the status word.
    pub fn output(&self, gpu: &Gpu, log_probs_shape: &[usize]) -> Result<LossOutput> {
        let &[_, n, _] = log_probs_shape else {
            return Err(Error::InvalidShape {
                name: "log_probs",
                got: log_probs_shape.to_vec(),
                why: "expected [T, N, C]",
            });
        };
        let loss_shape = match self.reduction {
            Reduction::None => vec![n],
            Reduction::Mean | Reduction::Sum => Vec::new(),
        };
        LossOutput::with_loss_shape(gpu, log_probs_shape, &loss_shape)
    }

    /// Checks every argument and derives the per-sequence table.
    fn plan(
        &self,
        gpu: &Gpu,
        log_probs: &Tensor,
        targets: &Tensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        out: &LossOutput,
    ) -> Result<Plan> {
        check_grad_scale(self.grad_scale)?;
        log_probs.check_dtype("log_probs", DType::F32)?;
        let &[t, n, c] = log_probs.shape() else {
            return Err(Error::InvalidShape {
                name: "log_probs",
                got: log_probs.shape().to_vec(),
                why: "expected [T, N, C]",
            });
        };
        if self.blank as usize >= c {
            return Err(Error::InvalidParameter {
                name: "blank",
                value: self.blank.into(),
                domain: "in [0, C)",
            });
        }
        if t > MAX_FRAMES || n > MAX_BATCH {
            return Err(Error::InvalidShape {
                name: "log_probs",
                got: log_probs.shape().to_vec(),
                why: "at most 16,384 frames and 4,194,304 sequences",
            });
        }
        if input_lengths.len() != n {
            return Err(invalid_lengths("input_lengths", n, input_lengths.len()));
        }
        if target_lengths.len() != n {
            return Err(invalid_lengths("target_lengths", n, target_lengths.len()));
        }
        if let Some(&bad) = input_lengths.iter().find(|&&len| len > t) {
            return Err(Error::InvalidParameter {
                name: "input_lengths",
                value: bad as f64,
                domain: "at most T (the frames of log_probs)",
            });
        }
        if let Some(&bad) = target_lengths.iter().find(|&&len| len > MAX_TARGET) {
            return Err(Error::InvalidShape {
                name: "target_lengths",
                got: vec![bad],
                why: "a target has at most 512 labels",
            });
        }
        targets.check_dtype("targets", DType::I32)?;
        // Position of each sequence's first label in `targets`.
        let offsets: Vec<usize> = match *targets.shape() {
            [rows, width] => {
                if rows != n {
                    return Err(Error::ShapeMismatch {
                        name: "targets",
                        expected: vec![n, width],
                        got: targets.shape().to_vec(),
                    });
                }
                if let Some(&bad) = target_lengths.iter().find(|&&len| len > width) {
                    return Err(Error::InvalidParameter {
                        name: "target_lengths",
                        value: bad as f64,
                        domain: "at most the width of the padded targets",
                    });
                }
                (0..n).map(|i| i * width).collect()
            }
            [len] => {
                // Each length is at most 512: the sum cannot overflow.
                let total: usize = target_lengths.iter().sum();
                if total != len {
                    return Err(Error::ShapeMismatch {
                        name: "targets",
                        expected: vec![total],
                        got: vec![len],
                    });
                }
                target_lengths
                    .iter()
                    .scan(0, |at, &len| {
                        let first = *at;
                        *at += len;
                        Some(first)
                    })
                    .collect()
            }
            _ => {
                return Err(Error::InvalidShape {
                    name: "targets",
                    got: targets.shape().to_vec(),
                    why: "padded [N, S_max] or concatenated [Σ target_lengths]",
                })
            }
        };
        let s_max = target_lengths.iter().copied().max().unwrap_or(0);
        // Every index the kernel forms is a u32, and a label's position must leave the status
        // word's "no bad label" value free.
        let limits = gpu.limits();
        let max_words = max_words(gpu);
        let max_work = max_words.min(limits.max_buffer_size / 4);
        if targets.len() as u64 > u64::from(u32::MAX) - 1 || 8 * n as u64 > max_words {
            return Err(Error::InvalidShape {
                name: "targets",
                got: targets.shape().to_vec(),
                why: "at most 2^32 - 2 labels, and the 32-byte record of every sequence within \
                      one storage binding",
            });
        }
        let fits = log_probs.len() as u64 <= max_words
            && targets.len() as u64 <= max_words
            && work_words(t, n, s_max) <= max_work;
        let chunks = if fits {
            vec![(0, n)]
        } else {
            log_probs.check_copy_source("log_probs")?;
            targets.check_copy_source("targets")?;
            let align_words = u64::from(limits.min_storage_buffer_offset_alignment).div_ceil(4);
            let labels_of = |i: usize| match *targets.shape() {
                [_, width] => width,
                _ => target_lengths[i],
            };
            batch_chunks(
                n,
                |_| (t * c) as u64,
                max_words.saturating_sub(align_words),
                |_| work_words(t, 1, s_max),
                max_work,
                |i| labels_of(i) as u64,
                max_words,
            )
            .ok_or_else(|| Error::InvalidShape {
                name: "log_probs",
                got: log_probs.shape().to_vec(),
                why: "the frames of one sequence ([T, 1, C]), its labels and its T·(2·S_max + 1) \
                      α scratch must each fit one storage binding",
            })?
        };

        out.grad.check_dtype("grad", DType::F32)?;
        out.loss.check_dtype("loss", DType::F32)?;
        out.status.check_dtype("status", DType::U32)?;
        if out.grad.shape() != log_probs.shape() {
            return Err(Error::ShapeMismatch {
                name: "grad",
                expected: log_probs.shape().to_vec(),
                got: out.grad.shape().to_vec(),
            });
        }
        let loss_len = match self.reduction {
            Reduction::None => n,
            Reduction::Mean | Reduction::Sum => 1,
        };
        if out.loss.len() != loss_len {
            let expected = match self.reduction {
                Reduction::None => vec![n],
                Reduction::Mean | Reduction::Sum => Vec::new(),
            };
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected,
                got: out.loss.shape().to_vec(),
            });
        }
        if out.status.len() != 1 {
            return Err(Error::ShapeMismatch {
                name: "status",
                expected: vec![1],
                got: out.status.shape().to_vec(),
            });
        }
        for (tensor, name) in [
            (log_probs, "log_probs"),
            (targets, "targets"),
            (&out.grad, "grad"),
            (&out.loss, "loss"),
            (&out.status, "status"),
        ] {
            tensor.check_bindable(gpu, name)?;
        }
        out.status.check_clearable("status")?;

        let mut seqs = Vec::with_capacity(n);
        for &(n0, n1) in &chunks {
            for i in n0..n1 {
                let (gw, lw) = match self.reduction {
                    Reduction::Mean => {
                        let w = 1.0 / (n as f64 * target_lengths[i].max(1) as f64);
                        (f64::from(self.grad_scale) * w, w)
                    }
                    Reduction::Sum | Reduction::None => (f64::from(self.grad_scale), 1.0),
                };
                seqs.push(Seq {
                    len: input_lengths[i] as u32,
                    tlen: target_lengths[i] as u32,
                    // Relative to the chunk's first label, which is copied to the front.
                    off: (offsets[i] - offsets[n0]) as u32,
                    pad: 0,
                    gw: gw as f32,
                    lw: lw as f32,
                    pad1: [0.0; 2],
                });
            }
        }
        let label_ranges = chunks
            .iter()
            .map(|&(n0, n1)| {
                if n0 == n1 {
                    return (0, 0);
                }
                let end = match *targets.shape() {
                    [_, width] => n1 * width,
                    _ => offsets[n1 - 1] + target_lengths[n1 - 1],
                };
                (offsets[n0], end)
            })
            .collect();
        Ok(Plan {
            t,
            n,
            c,
            s_max,
            seqs,
            chunks,
            label_ranges,
            split: !fits,
        })
    }

    /// Records the passes into `encoder`, writing `out` (allocate it with [`Ctc::output`]).
    /// Every argument is checked before anything is recorded; a bad label found by the kernel
    /// leaves everything but `out.status` untouched.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        log_probs: &Tensor,
        targets: &Tensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        out: &LossOutput,
    ) -> Result<()> {
        if log_probs.dtype().is_half() {
            // 16-bit log-probabilities through an f32 copy; the gradient packed back.
            check_grad_scale(self.grad_scale)?;
            let values = [("log_probs", log_probs)];
            return via_f32(gpu, encoder, &values, out, |encoder, wide, out| {
                let (t, lengths) = (targets, (input_lengths, target_lengths));
                self.encode(gpu, encoder, &wide[0], t, lengths.0, lengths.1, out)
            });
        }
        let plan = self.plan(gpu, log_probs, targets, input_lengths, target_lengths, out)?;
        gpu.scoped(|| {
            self.record(gpu, encoder, log_probs, targets, out, &plan);
            Ok(())
        })
    }

    /// Computes the loss and gradient into new tensors and waits for the device; a bad label
    /// becomes [`Error::LabelOutOfRange`].
    pub fn compute(
        &self,
        gpu: &Gpu,
        log_probs: &Tensor,
        targets: &Tensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
    ) -> Result<LossOutput> {
        let out = typed_output(gpu, self.output(gpu, log_probs.shape())?, log_probs)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.encode(
            gpu,
            &mut encoder,
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            &out,
        )?;
        gpu.submit_and_wait(encoder)?;
        let classes = log_probs.shape().get(2).copied().unwrap_or(0);
        crate::classification::check_labels_of(gpu, targets, &out, classes)?;
        Ok(out)
    }

    /// The parameter block of `n` sequences (the batch, or a chunk of it whose first label sits
    /// at `label_base` in `targets`) over every frame.
    fn params(&self, plan: &Plan, n: usize, label_base: usize, per_sample: bool) -> Params {
        let &Plan { t, c, s_max, .. } = plan;
        let stride = 2 * s_max + 1;
        let lstride = s_max.max(1);
        let emo_at = n * t * stride;
        let carry_at = emo_at + n * t;
        let links_at = carry_at + n * stride;
        let rec_at = links_at + n * lstride;
        Params {
            t_max: t as u32,
            n: n as u32,
            c: c as u32,
            blank: self.blank,
            stride: stride as u32,
            lstride: lstride as u32,
            t0: 0,
            t1: t as u32,
            zero_inf: self.zero_infinity.into(),
            per_sample: per_sample.into(),
            lp_len: (t * n * c) as u32,
            emo_at: emo_at as u32,
            carry_at: carry_at as u32,
            links_at: links_at as u32,
            rec_at: rec_at as u32,
            label_base: label_base as u32,
            n_all: plan.n as u32,
            dst_at: 0,
            pad: 0,
        }
    }

    fn record(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        log_probs: &Tensor,
        targets: &Tensor,
        out: &LossOutput,
        plan: &Plan,
    ) {
        let &Plan { t, n, c, s_max, .. } = plan;
        encoder.clear_buffer(out.status.buffer(), out.status.offset(), Some(4));
        let reduced = self.reduction != Reduction::None;
        if n == 0 && !reduced {
            return;
        }
        let device = gpu.device();
        let schedule = Schedule::new(gpu, t, s_max);
        let (bgl, layout) = gpu.layout(
            "ctc",
            &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                storage(3, false),
                storage(4, false),
                storage(5, true),
                storage(6, false),
                storage(7, false),
                dynamic_uniform(8, size_of::<Params>()),
            ],
        );
        let kernels = Kernels {
            gpu,
            layout,
            wgs: schedule.wgs,
        };
        let scratch = |label, words: usize, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4 * words.max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE | usage,
                mapped_at_creation: false,
            })
        };
        let table = |seqs: &[Seq]| {
            let seqs = if seqs.is_empty() {
                vec![bytemuck::Zeroable::zeroed()]
            } else {
                seqs.to_vec()
            };
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ctc sequences"),
                contents: bytemuck::cast_slice::<Seq, u8>(&seqs),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        // wgpu rejects empty bindings: an empty tensor is bound as a placeholder buffer of its
        // own (one buffer may not be bound both read-only and read-write).
        let none = wgpu::BufferUsages::empty();
        let placeholders: Vec<wgpu::Buffer> = (0..4)
            .map(|_| scratch("ctc empty binding", 4, none))
            .collect();
        fn bind<'a>(
            tensor: &'a Tensor,
            placeholder: &'a wgpu::Buffer,
        ) -> wgpu::BindingResource<'a> {
            if tensor.is_empty() {
                placeholder.as_entire_binding()
            } else {
                tensor.binding(0, tensor.len())
            }
        }
        let group = |resources: [wgpu::BindingResource<'_>; 8], uniforms: &wgpu::Buffer| {
            let mut entries: Vec<wgpu::BindGroupEntry<'_>> = resources
                .into_iter()
                .enumerate()
                .map(|(i, r)| entry(i as u32, r))
                .collect();
            entries.push(entry(
                8,
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: uniforms,
                    offset: 0,
                    size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                }),
            ));
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("ctc"),
                layout: &bgl,
                entries: &entries,
            })
        };

        if !plan.split {
            let blocks: Vec<Params> = schedule.blocks(self.params(plan, n, 0, !reduced)).collect();
            let uniforms = uniform_buffer(device, &blocks);
            let seqs = table(&plan.seqs);
            let work = scratch("ctc scratch", work_words(t, n, s_max) as usize, none);
            // Zero-initialised: no sample is flagged until `scan` finds a NaN.
            let flags = scratch("ctc flags", n, none);
            let group = group(
                [
                    bind(log_probs, &placeholders[0]),
                    bind(targets, &placeholders[1]),
                    bind(&out.grad, &placeholders[2]),
                    bind(&out.loss, &placeholders[3]),
                    out.status.binding(0, 1),
                    seqs.as_entire_binding(),
                    work.as_entire_binding(),
                    flags.as_entire_binding(),
                ],
                &uniforms,
            );
            let mut pass = encoder.begin_compute_pass(&Default::default());
            if n > 0 {
                kernels.recursions(&mut pass, &group, 0, &schedule, n, log_probs.len());
            }
            if reduced {
                kernels.dispatch(&mut pass, "reduce", &group, 0, (1, 1));
            }
            return;
        }

        // Chunks of the batch, each copied into scratch buffers shaped as a call of its own.
        let chunk_len = |k: usize| plan.chunks[k].1 - plan.chunks[k].0;
        let chunks = plan.chunks.len();
        let nc_max = (0..chunks).map(chunk_len).max().unwrap_or(0);
        let labels_max = plan.label_ranges.iter().map(|&(a, b)| b - a).max();
        let copy_dst = wgpu::BufferUsages::COPY_DST;
        let lp_chunk = scratch("ctc log_probs chunk", t * nc_max * c, copy_dst);
        let grad_chunk = scratch("ctc grad chunk", t * nc_max * c, none);
        let labels = scratch("ctc targets chunk", labels_max.unwrap_or(0), copy_dst);
        let work = scratch(
            "ctc scratch",
            work_words(t, nc_max, s_max) as usize,
            wgpu::BufferUsages::COPY_SRC,
        );
        let flags = scratch("ctc flags", nc_max, copy_dst);
        // The records (A, nll, kind, unused) of every sequence, gathered for the reduction.
        let records = scratch("ctc records", 4 * n, copy_dst);

        // Blocks of each chunk: those of the recursions, then one per window of `out.grad`.
        let max_bytes = 4 * max_words(gpu);
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment).max(4);
        let mut blocks = Vec::new();
        let mut firsts = Vec::with_capacity(chunks);
        // (block, byte offset, bytes) of each window of `out.grad`, per chunk.
        let mut windows: Vec<Vec<(usize, u64, u64)>> = Vec::with_capacity(chunks);
        let grad_at = |frame_row: usize| out.grad.offset() + 4 * (frame_row * c) as u64;
        for (k, &(n0, n1)) in plan.chunks.iter().enumerate() {
            let base = self.params(plan, n1 - n0, plan.label_ranges[k].0, false);
            firsts.push(blocks.len());
            blocks.extend(schedule.blocks(base));
            // Frames [t0, t1) of the chunk span rows (t0·N + n0) to ((t1 − 1)·N + n1) of
            // `out.grad`, bound from an aligned offset below the first.
            let mut mine = Vec::new();
            let mut t0 = 0;
            while t0 < t {
                let start = grad_at(t0 * n + n0);
                let aligned = start / align * align;
                let room = (max_bytes + aligned).saturating_sub(grad_at(n1));
                let t1 = ((room / (4 * (n * c) as u64)) as usize + 1).clamp(t0 + 1, t);
                mine.push((blocks.len(), aligned, grad_at((t1 - 1) * n + n1) - aligned));
                blocks.push(Params {
                    t0: t0 as u32,
                    t1: t1 as u32,
                    dst_at: ((start - aligned) / 4) as u32,
                    ..base
                });
                t0 = t1;
            }
            windows.push(mine);
        }
        let last = blocks.len();
        blocks.push(Params {
            rec_at: 0,
            ..self.params(plan, n, 0, !reduced)
        });
        let uniforms = uniform_buffer(device, &blocks);

        let tables: Vec<wgpu::Buffer> = plan
            .chunks
            .iter()
            .map(|&(n0, n1)| table(&plan.seqs[n0..n1]))
            .collect();
        let all = table(&plan.seqs);
        let groups: Vec<wgpu::BindGroup> = tables
            .iter()
            .map(|seqs| {
                group(
                    [
                        lp_chunk.as_entire_binding(),
                        labels.as_entire_binding(),
                        grad_chunk.as_entire_binding(),
                        placeholders[3].as_entire_binding(),
                        out.status.binding(0, 1),
                        seqs.as_entire_binding(),
                        work.as_entire_binding(),
                        flags.as_entire_binding(),
                    ],
                    &uniforms,
                )
            })
            .collect();
        let copy_labels = |encoder: &mut wgpu::CommandEncoder, k: usize| {
            let (a, b) = plan.label_ranges[k];
            if b > a {
                let at = targets.offset() + 4 * a as u64;
                encoder.copy_buffer_to_buffer(targets.buffer(), at, &labels, 0, 4 * (b - a) as u64);
            }
        };

        // Every label of every chunk is checked before anything is written.
        for k in 0..chunks {
            copy_labels(encoder, k);
            let mut pass = encoder.begin_compute_pass(&Default::default());
            let sequences = grid(gpu, chunk_len(k));
            kernels.dispatch(&mut pass, "setup", &groups[k], firsts[k], sequences);
        }
        for (k, &(n0, n1)) in plan.chunks.iter().enumerate() {
            let nc = n1 - n0;
            copy_labels(encoder, k);
            // Frame by frame, the chunk's rows of log_probs are contiguous.
            let row = 4 * (nc * c) as u64;
            for f in 0..t {
                let at = log_probs.offset() + 4 * ((f * n + n0) * c) as u64;
                encoder.copy_buffer_to_buffer(
                    log_probs.buffer(),
                    at,
                    &lp_chunk,
                    f as u64 * row,
                    row,
                );
            }
            encoder.clear_buffer(&flags, 0, None);
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                kernels.recursions(&mut pass, &groups[k], firsts[k], &schedule, nc, t * nc * c);
            }
            let rec_at = 4 * u64::from(blocks[firsts[k]].rec_at);
            encoder.copy_buffer_to_buffer(&work, rec_at, &records, 16 * n0 as u64, 16 * nc as u64);
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for &(block, offset, size) in &windows[k] {
                let window = group(
                    [
                        grad_chunk.as_entire_binding(),
                        labels.as_entire_binding(),
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: out.grad.buffer(),
                            offset,
                            size: wgpu::BufferSize::new(size),
                        }),
                        placeholders[3].as_entire_binding(),
                        out.status.binding(0, 1),
                        tables[k].as_entire_binding(),
                        work.as_entire_binding(),
                        flags.as_entire_binding(),
                    ],
                    &uniforms,
                );
                let p = blocks[block];
                let len = (p.t1 - p.t0) as usize * nc * c;
                let workgroups = (flat_workgroups(gpu, len), 1);
                kernels.dispatch(&mut pass, "scatter", &window, block, workgroups);
            }
        }
        let group = group(
            [
                placeholders[0].as_entire_binding(),
                placeholders[1].as_entire_binding(),
                placeholders[2].as_entire_binding(),
                bind(&out.loss, &placeholders[3]),
                out.status.binding(0, 1),
                all.as_entire_binding(),
                records.as_entire_binding(),
                flags.as_entire_binding(),
            ],
            &uniforms,
        );
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if reduced {
            kernels.dispatch(&mut pass, "reduce", &group, last, (1, 1));
        } else {
            kernels.dispatch(&mut pass, "emit", &group, last, grid(gpu, n.div_ceil(WG)));
        }
    }
}

/// Words one storage binding holds, at most `u32::MAX − 1` (indices are u32, and the status
/// word keeps `u32::MAX` for "no bad label").
fn max_words(gpu: &Gpu) -> u64 {
    (gpu.limits().max_storage_buffer_binding_size / 4).min(u64::from(u32::MAX) - 1)
}

/// One uniform buffer holding `blocks`, `PARAMS_STRIDE` bytes apart.
fn uniform_buffer(device: &wgpu::Device, blocks: &[Params]) -> wgpu::Buffer {
    let mut bytes = vec![0u8; PARAMS_STRIDE * blocks.len().max(1)];
    for (i, p) in blocks.iter().enumerate() {
        let at = i * PARAMS_STRIDE;
        bytes[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(p));
    }
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("ctc params"),
        contents: &bytes,
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// The frame chunks of the recursions, each keeping every invocation under the loop budget.
struct Schedule {
    /// Invocations per workgroup of the recursions.
    wgs: usize,
    forward: Vec<(usize, usize)>,
    backward: Vec<(usize, usize)>,
}

impl Schedule {
    fn new(gpu: &Gpu, t: usize, s_max: usize) -> Self {
        let stride = 2 * s_max + 1;
        let wgs = recursion_workgroup_size(gpu);
        let per_invocation = stride.div_ceil(wgs);
        // Loop iterations of one invocation (lavapipe stops a loop after 65,535): per chunk
        // (loading and storing a row, the reductions' loops) and per frame (the states a few
        // times over; the backward also walks the chains of equal labels, at most S_max links).
        let overhead = 2 * per_invocation + 64;
        let forward_frames = ((MAX_ITERATIONS - overhead) / (2 * per_invocation + 40)).max(1);
        let backward_frames =
            ((MAX_ITERATIONS - overhead) / (4 * per_invocation + s_max + 40)).max(1);
        let chunks = |frames: usize| -> Vec<(usize, usize)> {
            (0..t.div_ceil(frames))
                .map(|i| (i * frames, ((i + 1) * frames).min(t)))
                .collect()
        };
        Self {
            wgs,
            forward: chunks(forward_frames),
            backward: chunks(backward_frames),
        }
    }

    /// Parameter blocks from `base`: the whole range, then one per forward and per backward
    /// chunk.
    fn blocks(&self, base: Params) -> impl Iterator<Item = Params> + '_ {
        std::iter::once((0, base.t_max as usize))
            .chain(self.forward.iter().copied())
            .chain(self.backward.iter().copied())
            .map(move |(t0, t1)| Params {
                t0: t0 as u32,
                t1: t1 as u32,
                ..base
            })
    }
}

/// The pipelines of `ctc.wgsl` on one layout.
struct Kernels<'a> {
    gpu: &'a Gpu,
    layout: wgpu::PipelineLayout,
    wgs: usize,
}

impl Kernels<'_> {
    fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        entry: &'static str,
        group: &wgpu::BindGroup,
        block: usize,
        (x, y): (u32, u32),
    ) {
        let pipeline = self.gpu.pipeline(
            &CTC,
            PipelineKey {
                kernel: CTC.name,
                entry,
                overrides: match entry {
                    "forward" | "backward" => vec![("WGS", self.wgs as u32)],
                    _ => Vec::new(),
                },
            },
            &self.layout,
        );
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, group, &[(block * PARAMS_STRIDE) as u32]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// `setup` to `backward` for `n > 0` sequences with `lp_len` log-probabilities, whose
    /// parameter blocks (see [`Schedule::blocks`]) start at `first`.
    fn recursions(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        first: usize,
        schedule: &Schedule,
        n: usize,
        lp_len: usize,
    ) {
        let gpu = self.gpu;
        let t = schedule.forward.last().map_or(0, |&(_, t1)| t1);
        let per_sample = grid(gpu, n);
        self.dispatch(pass, "setup", group, first, per_sample);
        if lp_len > 0 {
            let flat = (flat_workgroups(gpu, lp_len), 1);
            self.dispatch(pass, "scan", group, first, flat);
            let frames = grid(gpu, (t * n).div_ceil(WG));
            self.dispatch(pass, "offsets", group, first, frames);
            self.dispatch(pass, "fill", group, first, flat);
            for i in 0..schedule.forward.len() {
                self.dispatch(pass, "forward", group, first + 1 + i, per_sample);
            }
        }
        self.dispatch(pass, "finish", group, first, grid(gpu, n.div_ceil(WG)));
        if lp_len > 0 {
            let backward = first + 1 + schedule.forward.len();
            for i in (0..schedule.backward.len()).rev() {
                self.dispatch(pass, "backward", group, backward + i, per_sample);
            }
        }
    }
}

/// Words of the scratch: α rows `[N, T, 2·S_max + 1]`, emission offsets `[T, N]`, carried β
/// rows `[N, 2·S_max + 1]`, label links `[N, max(S_max, 1)]`, sample records `[N, 4]`.
fn work_words(t: usize, n: usize, s_max: usize) -> u64 {
    let (t, n, stride) = (t as u64, n as u64, 2 * s_max as u64 + 1);
    n * t * stride + n * t + n * stride + n * (s_max as u64).max(1) + 4 * n
}
