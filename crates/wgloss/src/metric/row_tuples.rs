//! Losses over tuples of rows (`shaders/metric/row_tuples.wgsl`): cosine_embedding,
//! contrastive on pairs, triplet. Row i of each input forms one tuple; inputs larger than one
//! storage binding run in segments of rows.

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::PipelineKey;
use crate::kernel::ROW_TUPLES;
use crate::narrow::via_f32_grads;
use crate::{DType, Gpu, Reduction, Tensor};

/// Segments start at multiples of this many rows: 256-byte aligned offsets for any D.
const SEGMENT_ALIGN: usize = 64;

/// Uniform block of `row_tuples.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    total: u32,
    wg_base: u32,
    reduce: u32,
    p_kind: u32,
    swap: u32,
    pad0: u32,
    margin: f32,
    p: f32,
    eps: f32,
    weight: f32,
}

/// Outputs of a loss over several inputs: the loss and one gradient per input.
#[derive(Debug)]
pub struct TupleOutput {
    /// `[]` under mean and sum, `[N]` under none.
    pub loss: Tensor,
    /// The gradient w.r.t. each input, times `grad_scale`, in the order of the inputs.
    pub grads: Vec<Tensor>,
}

impl TupleOutput {
    /// Allocates outputs for `inputs` inputs of `shape` `[N, D]`.
    pub fn new(gpu: &Gpu, inputs: usize, shape: &[usize], reduction: Reduction) -> Result<Self> {
        let loss_shape = match reduction {
            Reduction::None => shape[..1.min(shape.len())].to_vec(),
            Reduction::Mean | Reduction::Sum => Vec::new(),
        };
        Ok(Self {
            loss: Tensor::zeros(gpu, &loss_shape)?,
            grads: (0..inputs)
                .map(|_| Tensor::zeros(gpu, shape))
                .collect::<Result<_>>()?,
        })
    }
}

impl TupleOutput {
    /// Checks one f32, bindable gradient per input, each of its input's shape.
    pub(crate) fn check_grads(&self, gpu: &Gpu, shapes: &[&[usize]]) -> Result<()> {
        self.check_grad_shapes(shapes)?;
        for g in &self.grads {
            g.check_bindable(gpu, "grad")?;
        }
        Ok(())
    }

    /// Checks one f32 gradient per input, each of its input's shape.
    pub(crate) fn check_grad_shapes(&self, shapes: &[&[usize]]) -> Result<()> {
        if self.grads.len() != shapes.len() {
            return Err(Error::InvalidShape {
                name: "grad",
                got: vec![self.grads.len()],
                why: "one gradient per input",
            });
        }
        for (g, &want) in self.grads.iter().zip(shapes) {
            if g.shape() != want {
                return Err(Error::ShapeMismatch {
                    name: "grad",
                    expected: want.to_vec(),
                    got: g.shape().to_vec(),
                });
            }
            g.check_dtype("grad", DType::F32)?;
        }
        Ok(())
    }

    /// Checks the loss tensor (of a shape its caller checked): f32, bindable, clearable.
    pub(crate) fn check_loss(&self, gpu: &Gpu) -> Result<()> {
        self.loss.check_dtype("loss", DType::F32)?;
        self.loss.check_bindable(gpu, "loss")?;
        self.loss.check_clearable("loss")
    }

    /// Checks one gradient per input of `inputs`' shapes and a scalar loss.
    pub(crate) fn check_scalar(&self, gpu: &Gpu, inputs: &[&Tensor]) -> Result<()> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        self.check_grads(gpu, &shapes)?;
        if !self.loss.shape().is_empty() {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: Vec::new(),
                got: self.loss.shape().to_vec(),
            });
        }
        self.check_loss(gpu)
    }
}

/// A loss of several inputs `[N, D]` whose row i forms one tuple (a pair, a triplet), and
/// optionally one target per row; the two ways to run it.
pub trait TupleLoss {
    /// The inputs' names, in order (their count is the loss's arity).
    fn inputs(&self) -> &'static [&'static str];

    /// The reduction the outputs must be allocated for.
    fn reduction(&self) -> Reduction;

    /// Records the fused forward+backward into `encoder`, writing `out`. Arguments are validated
    /// before anything is recorded.
    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()>;

    /// Computes loss and gradients into new tensors and waits for the device.
    fn compute(
        &self,
        gpu: &Gpu,
        inputs: &[&Tensor],
        target: Option<&Tensor>,
    ) -> Result<TupleOutput> {
        let shape = inputs.first().map(|t| t.shape()).unwrap_or(&[]);
        let mut out = TupleOutput::new(gpu, 0, shape, self.reduction())?;
        // One gradient per input, of its shape (info_nce's negatives have their own length)
        // and, for a 16-bit input, of its type.
        for j in 0..self.inputs().len() {
            let input = inputs.get(j);
            let shape = input.map_or(shape, |t| t.shape());
            let dtype = input.map_or(DType::F32, |t| crate::grad_type(t));
            out.grads.push(Tensor::zeros_typed(gpu, shape, dtype)?);
        }
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.encode(gpu, &mut encoder, inputs, target, &out)?;
        gpu.submit_and_wait(encoder)?;
        Ok(out)
    }
}

/// A tuple loss over 16-bit `inputs` (named `names`): `encode_f32` over their f32 copies, each
/// gradient of `out` (its input's shape and type) packed back from an f32 one
/// ([`via_f32_grads`]).
pub(crate) fn via_f32_tuple(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    names: &[&'static str],
    inputs: &[&Tensor],
    out: &TupleOutput,
    encode_f32: impl FnOnce(&mut wgpu::CommandEncoder, &[&Tensor], &TupleOutput) -> Result<()>,
) -> Result<()> {
    let values: Vec<_> = names.iter().copied().zip(inputs.iter().copied()).collect();
    let grads: Vec<_> = values
        .iter()
        .zip(&out.grads)
        .map(|(&(name, t), g)| (name, g, t.shape()))
        .collect();
    via_f32_grads(
        gpu,
        encoder,
        &values,
        &grads,
        None,
        |encoder, wide, grads| {
            let wide: Vec<&Tensor> = wide.iter().collect();
            let out32 = TupleOutput {
                loss: out.loss.clone(),
                grads: grads.to_vec(),
            };
            encode_f32(encoder, &wide, &out32)
        },
    )
}

/// For 16-bit inputs, `loss`'s call (it takes no target) over their f32 copies
/// ([`via_f32_tuple`]); `None` for f32 inputs.
pub(crate) fn half_tuple<L: TupleLoss>(
    loss: &L,
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    inputs: &[&Tensor],
    out: &TupleOutput,
) -> Option<Result<()>> {
    inputs.first().filter(|t| t.dtype().is_half())?;
    Some(via_f32_tuple(
        gpu,
        encoder,
        loss.inputs(),
        inputs,
        out,
        |encoder, wide, out| loss.encode(gpu, encoder, wide, None, out),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CosineEmbedding = 0,
    Contrastive = 1,
    Triplet = 2,
    /// F6: the VAE's Gaussian KL per row of (μ, log σ²).
    GaussianKl = 3,
    /// F6: WGAN-GP's penalty per row of critic gradients.
    GradientPenalty = 4,
    /// F6: denoising score matching per row of (score, noisy, clean), σ per row.
    ScoreMatching = 5,
}

/// One call of the tuple kernel.
pub(crate) struct Tuples {
    pub(crate) kind: Kind,
    pub(crate) names: &'static [&'static str],
    /// The per-row target's type (labels i32, or per-row values f32), if the loss takes one.
    pub(crate) needs_target: Option<DType>,
    /// The margin, or the loss's own scalar (β of gaussian_kl, λ of gradient_penalty).
    pub(crate) margin: f32,
    pub(crate) p: f32,
    pub(crate) eps: f32,
    pub(crate) swap: bool,
    pub(crate) reduction: Reduction,
    pub(crate) grad_scale: f32,
}

/// Implements [`TupleLoss`] for a generative row loss of the tuple kernel: its input names,
/// kernel kind and either its scalar parameter (checked finite; no target) or `values` (f32
/// values per row as the target), with the config's `reduction` and `grad_scale`.
macro_rules! row_loss {
    // A loss with f32 values per row as its target and no scalar parameter.
    ($name:ident, [$($input:literal),+], $kind:expr, values) => {
        $crate::metric::row_tuples::row_loss!(
            @impl $name,
            [$($input),+],
            $kind,
            Some($crate::DType::F32),
            |_s| 0.0
        );
    };
    ($name:ident, [$($input:literal),+], $kind:expr, $param:ident) => {
        $crate::metric::row_tuples::row_loss!(@impl $name, [$($input),+], $kind, None, |s| {
            let value = s.$param;
            $crate::error::check_param(
                stringify!($param),
                value.into(),
                "finite",
                value.is_finite(),
            )?;
            value
        });
    };
    (@impl $name:ident, [$($input:literal),+], $kind:expr, $target:expr, |$s:ident| $value:expr) => {
        impl $crate::TupleLoss for $name {
            fn inputs(&self) -> &'static [&'static str] {
                &[$($input),+]
            }

            fn reduction(&self) -> $crate::Reduction {
                self.reduction
            }

            fn encode(
                &self,
                gpu: &$crate::Gpu,
                encoder: &mut wgpu::CommandEncoder,
                inputs: &[&$crate::Tensor],
                target: Option<&$crate::Tensor>,
                out: &$crate::TupleOutput,
            ) -> $crate::Result<()> {
                let $s = self;
                let value: f32 = $value;
                let mut call = $crate::metric::row_tuples::Tuples::rows(
                    $kind,
                    self.inputs(),
                    value,
                    self.reduction,
                    self.grad_scale,
                );
                call.needs_target = $target;
                call.encode(gpu, encoder, inputs, target, out)
            }
        }
    };
}
pub(crate) use row_loss;

impl Tuples {
    /// A call of `kind` over `names` without a target, with its scalar `value`.
    pub(crate) fn rows(
        kind: Kind,
        names: &'static [&'static str],
        value: f32,
        reduction: Reduction,
        grad_scale: f32,
    ) -> Self {
        Self {
            kind,
            names,
            needs_target: None,
            margin: value,
            p: 2.0,
            eps: 0.0,
            swap: false,
            reduction,
            grad_scale,
        }
    }
}

impl Tuples {
    pub(crate) fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()> {
        crate::config::check_grad_scale(self.grad_scale)?;
        check_param(
            "margin",
            self.margin.into(),
            "finite",
            self.margin.is_finite(),
        )?;
        let k = self.names.len();
        let Some(first) = inputs.first() else {
            return Err(Error::Empty {
                name: self.names[0],
            });
        };
        let shape = first.shape();
        if shape.len() != 2 || shape[1] == 0 || inputs.len() != k {
            return Err(Error::InvalidShape {
                name: self.names[0],
                got: shape.to_vec(),
                why: "expected one [N, D] tensor per input, D ≥ 1",
            });
        }
        let (n, d) = (shape[0], shape[1]);
        if first.dtype().is_half() {
            // 16-bit inputs through f32 copies; the gradients packed back.
            return via_f32_tuple(
                gpu,
                encoder,
                self.names,
                inputs,
                out,
                |encoder, wide, out| self.encode(gpu, encoder, wide, target, out),
            );
        }
        for (t, &name) in inputs.iter().zip(self.names) {
            if t.shape() != shape {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: shape.to_vec(),
                    got: t.shape().to_vec(),
                });
            }
            t.check_dtype(name, DType::F32)?;
            t.check_bindable(gpu, name)?;
        }
        let target = match (self.needs_target, target) {
            (Some(dtype), Some(t)) => {
                if t.shape() != [n] {
                    return Err(Error::ShapeMismatch {
                        name: "target",
                        expected: vec![n],
                        got: t.shape().to_vec(),
                    });
                }
                t.check_dtype("target", dtype)?;
                t.check_bindable(gpu, "target")?;
                Some(t)
            }
            (Some(_), None) => return Err(Error::Empty { name: "target" }),
            (None, _) => None,
        };
        out.check_grads(gpu, &vec![shape; k])?;
        let loss_shape: &[usize] = match self.reduction {
            Reduction::None => &[n],
            _ => &[],
        };
        if out.loss.shape() != loss_shape {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: loss_shape.to_vec(),
                got: out.loss.shape().to_vec(),
            });
        }
        out.check_loss(gpu)?;
        let max_floats = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
        let per_segment = (max_floats / d / SEGMENT_ALIGN * SEGMENT_ALIGN).min(1 << 30);
        if per_segment == 0 {
            return Err(Error::InvalidShape {
                name: self.names[0],
                got: shape.to_vec(),
                why: "64 rows must fit one storage binding",
            });
        }
        let max_workgroups = gpu.max_workgroups();
        gpu.scoped(|| {
            if self.reduction != Reduction::None {
                encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            }
            if n == 0 {
                return Ok(());
            }
            let device = gpu.device();
            let segments: Vec<(usize, usize)> = (0..n)
                .step_by(per_segment)
                .map(|r0| (r0, per_segment.min(n - r0)))
                .collect();
            let partial_count: usize = segments.iter().map(|&(_, rs)| rs.div_ceil(256)).sum();
            let buffer = |label, floats: usize| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 4 * floats.max(4) as u64,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            let partials = buffer("tuple partials", partial_count);
            let spare = buffer("tuple spare gradient", 4);
            let (bgl, layout) = gpu.layout(
                "row_tuples",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, true),
                    storage(3, true),
                    storage(4, false),
                    storage(5, false),
                    storage(6, false),
                    storage(7, false),
                    uniform(8),
                ],
            );
            let p_kind = if self.p == 1.0 {
                1
            } else if self.p == 2.0 {
                2
            } else {
                0
            };
            let base = Params {
                n: 0,
                d: d as u32,
                total: n as u32,
                wg_base: 0,
                reduce: match self.reduction {
                    Reduction::None => 0,
                    Reduction::Mean => 1,
                    Reduction::Sum => 2,
                },
                p_kind,
                swap: self.swap.into(),
                pad0: 0,
                margin: self.margin,
                p: self.p,
                eps: self.eps,
                weight: match self.reduction {
                    Reduction::Mean => self.grad_scale / n as f32,
                    _ => self.grad_scale,
                },
            };
            // The tuples pass of rows r0 .. r0 + rs, or (`finish`) the pass that adds the partials,
            // read through binding 0, into the loss.
            let bind = |params: Params, r0: usize, rs: usize, finish: bool| {
                let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("tuple params"),
                    contents: bytemuck::bytes_of(&params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let rows = |j: usize| match finish {
                    true if j == 0 => partials.as_entire_binding(),
                    _ => inputs.get(j).unwrap_or(first).binding(r0 * d, rs * d),
                };
                let grad = |j: usize| match out.grads.get(j) {
                    Some(g) => g.binding(r0 * d, rs * d),
                    None => spare.as_entire_binding(),
                };
                let labels = match target {
                    Some(t) => t.binding(r0, rs),
                    None => first.binding(r0 * d, rs * d),
                };
                let out_rows = match (self.reduction, finish) {
                    (Reduction::None, _) => out.loss.binding(r0, rs),
                    (_, false) => partials.as_entire_binding(),
                    (_, true) => out.loss.binding(0, 1),
                };
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("row_tuples"),
                    layout: &bgl,
                    entries: &[
                        entry(0, rows(0)),
                        entry(1, rows(1)),
                        entry(2, rows(2)),
                        entry(3, labels),
                        entry(4, grad(0)),
                        entry(5, grad(1)),
                        entry(6, grad(2)),
                        entry(7, out_rows),
                        entry(8, uniforms.as_entire_binding()),
                    ],
                })
            };
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    &ROW_TUPLES,
                    PipelineKey {
                        kernel: ROW_TUPLES.name,
                        entry,
                        overrides: vec![("KIND", self.kind as u32)],
                    },
                    &layout,
                )
            };
            let mut wg_base = 0;
            let mut groups = Vec::new();
            for &(r0, rs) in &segments {
                let params = Params {
                    n: rs as u32,
                    wg_base: wg_base as u32,
                    ..base
                };
                let workgroups = rs.div_ceil(256);
                groups.push((bind(params, r0, rs, false), workgroups));
                wg_base += workgroups;
            }
            let finish = (self.reduction != Reduction::None).then(|| {
                let params = Params {
                    wg_base: partial_count as u32,
                    ..base
                };
                bind(params, 0, per_segment.min(n), true)
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("row_tuples"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline("tuples"));
            for (group, workgroups) in &groups {
                let x = (*workgroups).min(max_workgroups);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x as u32, workgroups.div_ceil(x) as u32, 1);
            }
            if let Some(group) = &finish {
                pass.set_pipeline(&pipeline("finish"));
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(1, 1, 1);
            }
            Ok(())
        })
    }
}

/// Declares a loss of a pair of rows and a label per row, of `margin`, `reduction` and
/// `grad_scale`.
macro_rules! pair_loss {
    ($(#[$doc:meta])* $name:ident, $kind:expr, margin: $margin:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// Margin, finite.
            pub margin: f32,
            /// Reduction over rows.
            pub reduction: Reduction,
            /// Multiplier of the gradients.
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    margin: $margin,
                    reduction: Reduction::Mean,
                    grad_scale: 1.0,
                }
            }
        }

        impl TupleLoss for $name {
            fn inputs(&self) -> &'static [&'static str] {
                &["x1", "x2"]
            }

            fn reduction(&self) -> Reduction {
                self.reduction
            }

            fn encode(
                &self,
                gpu: &Gpu,
                encoder: &mut wgpu::CommandEncoder,
                inputs: &[&Tensor],
                target: Option<&Tensor>,
                out: &TupleOutput,
            ) -> Result<()> {
                let call = Tuples {
                    kind: $kind,
                    names: self.inputs(),
                    needs_target: Some(DType::I32),
                    margin: self.margin,
                    p: 2.0,
                    eps: 0.0,
                    swap: false,
                    reduction: self.reduction,
                    grad_scale: self.grad_scale,
                };
                call.encode(gpu, encoder, inputs, target, out)
            }
        }
    };
}

pair_loss!(
    /// torch `cosine_embedding_loss`: per row, `1 − cos(x1, x2)` where the target is 1 and
    /// `max(0, cos − margin)` where it is −1 (0 for any other target), with
    /// `cos = x1·x2 / √((‖x1‖² + 1e-12)(‖x2‖² + 1e-12))`, so zero rows are finite.
    /// # Shapes
    /// inputs `[x1, x2]`, each `[N, D]` (f32, or all F16 or all BF16 through f32 copies); target `[N]` (i32, ±1); the loss `[]`, or `[N]`
    /// under reduction none. Defaults: margin 0, reduction mean, grad_scale 1.
    CosineEmbedding,
    Kind::CosineEmbedding,
    margin: 0.0
);

pair_loss!(
    /// Contrastive loss on pairs (Hadsell, Chopra & LeCun 2006): with `D = ‖x1 − x2‖₂`, per row
    /// `½ D²` for a similar pair (target 1) and `½ max(0, margin − D)²` for a dissimilar one
    /// (target 0); a dissimilar pair at `D = 0` gets the subgradient 0.
    /// # Shapes
    /// inputs `[x1, x2]`, each `[N, D]` (f32, or all F16 or all BF16 through f32 copies); target `[N]` (i32, 0 or 1); the loss `[]`, or
    /// `[N]` under reduction none. Defaults: margin 1, reduction mean, grad_scale 1.
    Contrastive,
    Kind::Contrastive,
    margin: 1.0
);

/// torch `triplet_margin_loss`: per row `max(0, margin + d(a, p) − d(a, n))` with
/// `d(u, v) = ‖u − v + eps‖_p`; with `swap`, `d(a, n)` is replaced by `min(d(a, n), d(p, n))`
/// (a tie shares the gradient evenly, as torch's `min`). The hinge passes its gradient at 0.
/// # Shapes
/// inputs `[anchor, positive, negative]`, each `[N, D]` (f32, or all F16 or all BF16 through f32 copies); no target; the loss `[]`, or
/// `[N]` under reduction none. Defaults: margin 1, p 2, eps 1e-6, swap false, reduction mean,
/// grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Triplet {
    /// Margin, finite.
    pub margin: f32,
    /// The norm's p, finite and ≥ 1.
    pub p: f32,
    /// Added to each difference (torch `pairwise_distance`), finite.
    pub eps: f32,
    /// Use the distance from the positive to the negative where it is smaller.
    pub swap: bool,
    /// Reduction over rows.
    pub reduction: Reduction,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for Triplet {
    fn default() -> Self {
        Self {
            margin: 1.0,
            p: 2.0,
            eps: 1e-6,
            swap: false,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl TupleLoss for Triplet {
    fn inputs(&self) -> &'static [&'static str] {
        &["anchor", "positive", "negative"]
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()> {
        check_param(
            "p",
            self.p.into(),
            "finite and ≥ 1",
            self.p >= 1.0 && self.p.is_finite(),
        )?;
        check_param("eps", self.eps.into(), "finite", self.eps.is_finite())?;
        let call = Tuples {
            kind: Kind::Triplet,
            names: self.inputs(),
            needs_target: None,
            margin: self.margin,
            p: self.p,
            eps: self.eps,
            swap: self.swap,
            reduction: self.reduction,
            grad_scale: self.grad_scale,
        };
        call.encode(gpu, encoder, inputs, target, out)
    }
}
