use wgpu::util::DeviceExt;

use crate::elementwise::{dynamic_uniform, entry, storage};
use crate::error::{check_param, Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::SINKHORN;
use crate::narrow::{narrow_into, via_f32_grads, widen};
use crate::{DType, Gpu, Tensor, TupleOutput};

/// Uniform block of `sinkhorn.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    m: u32,
    d: u32,
    p: u32,
    k_begin: u32,
    k_end: u32,
    step: u32,
    mode: u32,
    slot_in: u32,
    slot_out: u32,
    uniform_w: u32,
    cap: u32,
    blur: f32,
    scaling: f32,
    diameter: f32,
    grad_scale: f32,
}

/// Mode bits of `sinkhorn.wgsl`.
const SELF: u32 = 1;
const INIT: u32 = 2;
const FINAL: u32 = 4;
const DEBIAS: u32 = 8;
/// Potential slots of T = N + M values: the loop's cross and self potentials (two each, read
/// one step and written the next), the final step's soft-mins and their log-sum-exps.
const CROSS: [u32; 2] = [0, 1];
const OWN: [u32; 2] = [2, 3];
const CROSS_FINAL: u32 = 4;
const OWN_FINAL: u32 = 5;
const SLOTS: usize = 8;
/// Floats of the schedule buffer before the ε list: length, diameter, loss, padding.
const HEAD: usize = 4;
/// Most points per call, N + M (the soft-mins cost N·M per pass): the in-batch losses' largest
/// batch, 65,535 · 16.
const MAX_POINTS: usize = 65_535 * 16;
/// The largest diameter an f32 bounding box yields (√ of the largest finite f32): bounds the
/// schedule when it is computed on the device.
const MAX_DIAMETER: f64 = 1.845e19;

/// Most keys one dispatch walks per point: lavapipe bounds the loop iterations of one
/// invocation (nested ones included) to 65,535; beyond 4 dimensions a key costs up to 2D + 1
/// of them (the gradient pass's two loops over D), up to 4 at most 2.
fn key_range(d: usize) -> usize {
    if d <= 4 {
        8192
    } else {
        16_384 / (2 * d + 2)
    }
}

/// Debiased Sinkhorn divergence between weighted point clouds (geomloss's
/// `SamplesLoss("sinkhorn", p, blur, scaling, debias)`, balanced), in the log domain with
/// ε-scaling; the cost matrices are recomputed in every pass and never stored (O(N + M) memory).
///
/// With `α = Σ_i a_i δ_{x_i}`, `β = Σ_j b_j δ_{y_j}`, `C(u, v) = ½‖u − v‖²` (p = 2) or
/// `√max(‖u − v‖², 1e-8)` (p = 1) and the soft-min `S(ε, C, h)_i = −ε log Σ_j exp(h_j − C_ij/ε)`:
///
/// ```text
/// ε_k:   [diameter^p, exp(arange(p ln diameter, p ln blur, p ln scaling))…, blur^p]
///        (diameter: of the bounding box of both clouds, unless given)
/// init:  f = S(ε_0, C_xy, ln b),  g = S(ε_0, C_yx, ln a),  f_aa = S(ε_0, C_xx, ln a),  g_bb = …
/// loop:  for each ε_k, all four at once:  f ← ½(f + S(ε_k, C_xy, ln b + g/ε_k)),  …
/// final: F = S(ε, C_xy, ln b + g/ε), Fa = S(ε, C_xx, ln a + f_aa/ε), G, Gb alike (ε = blur^p)
/// loss = ⟨a, F − Fa⟩ + ⟨b, G − Gb⟩            (⟨a, F⟩ + ⟨b, G⟩ without debias)
/// ∂loss/∂x_i = a_i [Σ_j π^F_ij ∇₁C(x_i, y_j) − Σ_k π^Fa_ik ∇₁C(x_i, x_k)]     (y alike)
/// ```
///
/// The gradient is geomloss's: through the final step with the potentials held fixed and the
/// cost's second argument detached, which at convergence is the envelope-theorem gradient of
/// the divergence (π the soft-min weights of each row). Zero weights are allowed: the point
/// drops out of every soft-min and gets a zero gradient (it still counts in the diameter).
/// The weights are not normalised; the balanced solver expects `Σa = Σb`. The weights and
/// points stay on the device: a negative or NaN weight, or a NaN coordinate, makes the loss NaN.
///
/// # Shapes
/// `x [N, D]`, `y [M, D]` f32 (or both F16 or both BF16 through f32 copies, the gradients in
/// their type) with N, M ≥ 1, N + M at most 1,048,560 and D at most 8,190;
/// weights `a [N]`, `b [M]` (≥ 0) or `None` for uniform `1/N`, `1/M`; the loss is a scalar and
/// the gradients have the shapes of `x` and `y`. Inputs are copied (they need `COPY_SRC`, as every
/// [`Tensor`] made by this crate has; the outputs need `COPY_DST`).
///
/// Defaults (geomloss's): p 2, blur 0.05, scaling 0.5, debias, diameter from the data,
/// grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sinkhorn {
    /// Exponent of the cost: 1 or 2.
    pub p: u32,
    /// Final blur: the last temperature is `blur^p`. Must be > 0.
    pub blur: f32,
    /// Ratio of successive blurs of the ε-scaling, in (0, 1).
    pub scaling: f32,
    /// Subtract the self terms `½OT_ε(α,α) + ½OT_ε(β,β)`.
    pub debias: bool,
    /// The diameter of the schedule's first temperature (geomloss's `diameter`); `None`: that of
    /// the bounding box of both clouds, computed on the device.
    pub diameter: Option<f32>,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for Sinkhorn {
    fn default() -> Self {
        Self {
            p: 2,
            blur: 0.05,
            scaling: 0.5,
            debias: true,
            diameter: None,
            grad_scale: 1.0,
        }
    }
}

/// Buffers of one call, shared by its two recording phases.
struct Scratch {
    pts: wgpu::Buffer,
    wts: wgpu::Buffer,
    pot: wgpu::Buffer,
    stat: wgpu::Buffer,
    acc: wgpu::Buffer,
    sched: wgpu::Buffer,
    bgl: wgpu::BindGroupLayout,
    layout: wgpu::PipelineLayout,
}

/// The validated problem: sizes and the schedule's capacity.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    m: usize,
    d: usize,
    cap: usize,
}

impl Sinkhorn {
    fn check_params(&self) -> Result<()> {
        check_param("p", self.p.into(), "1 or 2", self.p == 1 || self.p == 2)?;
        check_param("blur", self.blur.into(), "> 0", self.blur > 0.0)?;
        check_param(
            "scaling",
            self.scaling.into(),
            "in (0, 1)",
            self.scaling > 0.0 && self.scaling < 1.0,
        )?;
        if let Some(d) = self.diameter {
            check_param("diameter", d.into(), "> 0", d > 0.0)?;
        }
        check_param("grad_scale", self.grad_scale.into(), "finite", true)
    }

    /// Most temperatures of the schedule: exact for a given diameter (one more for rounding),
    /// else for the largest diameter an f32 bounding box can have.
    fn capacity(&self) -> Result<usize> {
        let diameter = self.diameter.map_or(MAX_DIAMETER, f64::from);
        let (blur, scaling) = (f64::from(self.blur), f64::from(self.scaling));
        let steps = ((diameter.ln() - blur.ln()) / -scaling.ln())
            .ceil()
            .max(0.0);
        let cap = steps as usize + 3;
        if cap > MAX_ITERATIONS {
            return Err(Error::InvalidParameter {
                name: "scaling",
                value: scaling,
                domain: "such that the schedule has at most 16,384 temperatures",
            });
        }
        Ok(cap)
    }

    fn check(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        y: &Tensor,
        weights: Option<(&Tensor, &Tensor)>,
        out: &TupleOutput,
    ) -> Result<Dims> {
        self.check_params()?;
        let cap = self.capacity()?;
        let (n, d) = match x.shape() {
            &[n, d] if d > 0 => (n, d),
            s => {
                return Err(Error::InvalidShape {
                    name: "x",
                    got: s.to_vec(),
                    why: "points [N, D] with D ≥ 1",
                })
            }
        };
        let m = match y.shape() {
            &[m, dy] if dy == d => m,
            s => {
                return Err(Error::ShapeMismatch {
                    name: "y",
                    expected: vec![s.first().copied().unwrap_or(0), d],
                    got: s.to_vec(),
                })
            }
        };
        x.check_dtype("x", DType::F32)?;
        y.check_dtype("y", DType::F32)?;
        if n == 0 {
            return Err(Error::Empty { name: "x" });
        }
        if m == 0 {
            return Err(Error::Empty { name: "y" });
        }
        if let Some((a, b)) = weights {
            for (w, name, len) in [(a, "a", n), (b, "b", m)] {
                if w.shape() != [len] {
                    return Err(Error::ShapeMismatch {
                        name,
                        expected: vec![len],
                        got: w.shape().to_vec(),
                    });
                }
                w.check_dtype(name, DType::F32)?;
                w.check_copy_source(name)?;
            }
        }
        x.check_copy_source("x")?;
        y.check_copy_source("y")?;
        let max_floats = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
        let t = n + m;
        if t > MAX_POINTS || t * d > max_floats || SLOTS * t > max_floats || d > 8190 {
            return Err(Error::InvalidShape {
                name: "x",
                got: vec![n, m, d],
                why: "N + M at most 1,048,560, D at most 8,190, the points within one storage binding",
            });
        }
        check_output(out, &[x.shape(), y.shape()])?;
        Ok(Dims { n, m, d, cap })
    }

    /// Records the loss and the gradients w.r.t. `x` and `y` into `out` (a scalar loss and two
    /// gradients). Arguments are validated before anything is recorded. Without a given
    /// diameter the schedule's length is known only on the device: every step up to the
    /// longest schedule possible is recorded, those past its end copying the potentials
    /// ([`Sinkhorn::compute`] reads the length back and records the exact loop).
    pub fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        weights: Option<(&Tensor, &Tensor)>,
        out: &TupleOutput,
    ) -> Result<()> {
        if x.dtype().is_half() {
            // 16-bit clouds through f32 copies; both gradients packed back.
            self.check_params()?;
            let values = [("x", x), ("y", y)];
            let [gx, gy] = out.grads.as_slice() else {
                return Err(Error::ShapeMismatch {
                    name: "grads",
                    expected: vec![2],
                    got: vec![out.grads.len()],
                });
            };
            let grads = [("grad_x", gx, x.shape()), ("grad_y", gy, y.shape())];
            return via_f32_grads(gpu, encoder, &values, &grads, None, |encoder, wide, g| {
                let out32 = TupleOutput {
                    loss: out.loss.clone(),
                    grads: g.to_vec(),
                };
                self.encode(gpu, encoder, &wide[0], &wide[1], weights, &out32)
            });
        }
        let dims = self.check(gpu, x, y, weights, out)?;
        gpu.scoped(|| {
            let scratch = self.setup(gpu, encoder, dims, x, y, weights)?;
            self.solve(gpu, encoder, dims, &scratch, dims.cap, out)
        })
    }

    /// Computes the loss and the gradients w.r.t. `x` and `y` into new tensors and waits for
    /// the device (twice: the schedule's length is read back before the loop is recorded).
    pub fn compute(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        y: &Tensor,
        weights: Option<(&Tensor, &Tensor)>,
    ) -> Result<TupleOutput> {
        if x.dtype().is_half() {
            // 16-bit clouds: the f32 call (which reads its schedule's length back) on copies of
            // them, its gradients packed into tensors of their type.
            self.check_params()?;
            y.check_dtype("y", x.dtype())?;
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            let (x32, y32) =
                gpu.scoped(|| Ok((widen(gpu, &mut encoder, x)?, widen(gpu, &mut encoder, y)?)))?;
            gpu.submit_and_wait(encoder)?;
            let out32 = self.compute(gpu, &x32, &y32, weights)?;
            let grads = [x, y]
                .map(|t| Tensor::zeros_typed(gpu, t.shape(), t.dtype()))
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            let pairs: Vec<_> = out32.grads.iter().zip(&grads).collect();
            gpu.scoped(|| narrow_into(gpu, &mut encoder, &pairs, None))?;
            gpu.submit_and_wait(encoder)?;
            return Ok(TupleOutput {
                loss: out32.loss,
                grads,
            });
        }
        let out = TupleOutput {
            loss: Tensor::zeros(gpu, &[])?,
            grads: vec![
                Tensor::zeros(gpu, x.shape())?,
                Tensor::zeros(gpu, y.shape())?,
            ],
        };
        let dims = self.check(gpu, x, y, weights, &out)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let scratch = gpu.scoped(|| self.setup(gpu, &mut encoder, dims, x, y, weights))?;
        gpu.submit_and_wait(encoder)?;
        let head = gpu.read_bytes(&scratch.sched, 0, 4)?;
        let len = f32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        gpu.scoped(|| {
            self.solve(
                gpu,
                &mut encoder,
                dims,
                &scratch,
                len.clamp(1, dims.cap),
                &out,
            )
        })?;
        gpu.submit_and_wait(encoder)?;
        Ok(out)
    }

    /// Allocates the call's buffers and records the copies in, the weights, the bounding box
    /// and the schedule.
    fn setup(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        dims: Dims,
        x: &Tensor,
        y: &Tensor,
        weights: Option<(&Tensor, &Tensor)>,
    ) -> Result<Scratch> {
        let device = gpu.device();
        let Dims { n, m, d, cap } = dims;
        let t = n + m;
        let buffer = |label: &'static str, floats: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4 * floats.max(1) as u64,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (bgl, layout) = gpu.layout(
            "sinkhorn",
            &[
                storage(0, true),
                storage(1, false),
                storage(2, false),
                storage(3, false),
                storage(4, false),
                storage(5, false),
                dynamic_uniform(6, std::mem::size_of::<Params>()),
            ],
        );
        let scratch = Scratch {
            pts: buffer("sinkhorn points", t * d),
            wts: buffer("sinkhorn weights", 2 * t),
            pot: buffer("sinkhorn potentials", SLOTS * t),
            stat: buffer("sinkhorn statistics", (2 * t).max(2 * d)),
            acc: buffer("sinkhorn gradient", t * d),
            sched: buffer("sinkhorn schedule", HEAD + cap),
            bgl,
            layout,
        };
        let copy_in = |encoder: &mut wgpu::CommandEncoder, from: &Tensor, to: &wgpu::Buffer, at| {
            if !from.is_empty() {
                encoder.copy_buffer_to_buffer(
                    from.buffer(),
                    from.offset(),
                    to,
                    at,
                    from.byte_len(),
                );
            }
        };
        copy_in(encoder, x, &scratch.pts, 0);
        copy_in(encoder, y, &scratch.pts, 4 * (n * d) as u64);
        if let Some((a, b)) = weights {
            copy_in(encoder, a, &scratch.wts, 0);
            copy_in(encoder, b, &scratch.wts, 4 * n as u64);
        }
        encoder.clear_buffer(&scratch.acc, 0, None);
        let base = Params {
            uniform_w: u32::from(weights.is_none()),
            ..self.base(dims)
        };
        let setup = [
            ("prep", t.div_ceil(256), base),
            ("bbox", d, base),
            ("schedule", 1, base),
        ];
        self.run(gpu, encoder, &scratch, &setup);
        Ok(scratch)
    }

    /// The parameters every dispatch shares.
    fn base(&self, dims: Dims) -> Params {
        Params {
            n: dims.n as u32,
            m: dims.m as u32,
            d: dims.d as u32,
            p: self.p,
            k_begin: 0,
            k_end: 0,
            step: 0,
            mode: 0,
            slot_in: 0,
            slot_out: 0,
            uniform_w: 0,
            cap: dims.cap as u32,
            blur: self.blur,
            scaling: self.scaling,
            diameter: self.diameter.unwrap_or(0.0),
            grad_scale: self.grad_scale,
        }
    }

    /// Records `steps` temperatures of the loop, the final step, the gradient passes, the loss
    /// and the copies out.
    fn solve(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        dims: Dims,
        scratch: &Scratch,
        steps: usize,
        out: &TupleOutput,
    ) -> Result<()> {
        let Dims { n, m, d, .. } = dims;
        let base = self.base(dims);
        let range = key_range(d);
        let ranges = n.max(m).div_ceil(range);
        // The points of x, then those of y, in workgroups of their own.
        let rows = n.div_ceil(256) + m.div_ceil(256);
        let mut list: Vec<(&'static str, usize, Params)> = Vec::new();
        // One soft-min (or gradient pass) over every key range.
        let mut walk = |entry: &'static str, p: Params| {
            for r in 0..ranges {
                let k_begin = (r * range) as u32;
                let k_end = ((r + 1) * range) as u32;
                list.push((
                    entry,
                    rows,
                    Params {
                        k_begin,
                        k_end,
                        ..p
                    },
                ));
            }
        };
        let problems: &[(u32, [u32; 2], u32)] = if self.debias {
            &[(0, CROSS, CROSS_FINAL), (SELF, OWN, OWN_FINAL)]
        } else {
            &[(0, CROSS, CROSS_FINAL)]
        };
        for &(kind, slots, _) in problems {
            let p = Params {
                mode: kind | INIT,
                slot_out: slots[0],
                ..base
            };
            walk("softmin", p);
        }
        for step in 0..steps {
            for &(kind, slots, _) in problems {
                let p = Params {
                    mode: kind,
                    step: step as u32,
                    slot_in: slots[step % 2],
                    slot_out: slots[(step + 1) % 2],
                    ..base
                };
                walk("softmin", p);
            }
        }
        // The final step, then the gradient through it (each problem's own soft-mins).
        for &(kind, slots, last) in problems {
            let p = Params {
                mode: kind | FINAL,
                slot_in: slots[steps % 2],
                slot_out: last,
                ..base
            };
            walk("softmin", p);
            walk("grad_pass", p);
        }
        let debias = if self.debias { DEBIAS } else { 0 };
        let p = Params {
            mode: debias,
            slot_in: CROSS_FINAL,
            slot_out: OWN_FINAL,
            ..base
        };
        list.push(("finish", 1, p));
        self.run(gpu, encoder, scratch, &list);
        let split = 4 * (n * d) as u64;
        let (gx, gy) = (&out.grads[0], &out.grads[1]);
        encoder.copy_buffer_to_buffer(&scratch.acc, 0, gx.buffer(), gx.offset(), split);
        encoder.copy_buffer_to_buffer(&scratch.acc, split, gy.buffer(), gy.offset(), gy.byte_len());
        encoder.copy_buffer_to_buffer(&scratch.sched, 8, out.loss.buffer(), out.loss.offset(), 4);
        Ok(())
    }

    /// Records the dispatches, each with its parameter block at a dynamic offset.
    fn run(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        scratch: &Scratch,
        list: &[(&'static str, usize, Params)],
    ) {
        let device = gpu.device();
        let align = gpu.limits().min_uniform_buffer_offset_alignment as usize;
        let size = std::mem::size_of::<Params>();
        let stride = size.div_ceil(align) * align;
        let mut bytes = vec![0u8; stride * list.len()];
        for (i, (_, _, p)) in list.iter().enumerate() {
            bytes[i * stride..i * stride + size].copy_from_slice(bytemuck::bytes_of(p));
        }
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sinkhorn params"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("sinkhorn"),
            layout: &scratch.bgl,
            entries: &[
                entry(0, scratch.pts.as_entire_binding()),
                entry(1, scratch.wts.as_entire_binding()),
                entry(2, scratch.pot.as_entire_binding()),
                entry(3, scratch.stat.as_entire_binding()),
                entry(4, scratch.acc.as_entire_binding()),
                entry(5, scratch.sched.as_entire_binding()),
                entry(
                    6,
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniforms,
                        offset: 0,
                        size: wgpu::BufferSize::new(size as u64),
                    }),
                ),
            ],
        });
        let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("sinkhorn"),
            timestamp_writes: None,
        });
        for (i, &(name, workgroups, _)) in list.iter().enumerate() {
            let pipeline = gpu.pipeline(
                &SINKHORN,
                PipelineKey {
                    kernel: SINKHORN.name,
                    entry: name,
                    overrides: Vec::new(),
                },
                &scratch.layout,
            );
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[(i * stride) as u32]);
            let x = workgroups.clamp(1, max);
            pass.dispatch_workgroups(x as u32, workgroups.div_ceil(x).max(1) as u32, 1);
        }
    }
}

/// Checks the outputs: a scalar loss and one gradient per cloud of its shape, f32, written by
/// copies (COPY_DST; their views need no storage alignment).
fn check_output(out: &TupleOutput, shapes: &[&[usize]; 2]) -> Result<()> {
    out.check_grad_shapes(shapes)?;
    for g in &out.grads {
        g.check_clearable("grad")?;
    }
    if !out.loss.shape().is_empty() {
        return Err(Error::ShapeMismatch {
            name: "loss",
            expected: Vec::new(),
            got: out.loss.shape().to_vec(),
        });
    }
    out.loss.check_dtype("loss", DType::F32)?;
    out.loss.check_clearable("loss")
}
