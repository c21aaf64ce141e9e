use crate::config::check_grad_scale;
use crate::elementwise;
use crate::error::{check_param, Error, Result};
use crate::kernel::generative::{GAN, GAN_VEC4};
use crate::metric::info_nce::{combine, Mix};
use crate::metric::row_tuples::half_tuple;
use crate::{DType, ElementwiseSpec, Gpu, LossOutput, Reduction, Tensor, TupleLoss, TupleOutput};

/// The GAN objective ([`GanGenerator`], [`GanDiscriminator`]): the terms per critic logit `x`.
///
/// ```text
///                 generator            discriminator, real     discriminator, fake
/// Minimax         log(1 − σ(x))        −log σ(x)               −log(1 − σ(x))
/// NonSaturating   −log σ(x)            −log σ(x)               −log(1 − σ(x))
/// LeastSquares    ½ (x − c)²           ½ (x − b)²              ½ (x − a)²
/// Wasserstein     −x                   −x                      x
/// Hinge           −x                   relu(1 − x)             relu(1 + x)
/// ```
/// (Goodfellow et al. 2014; LSGAN, Mao et al. 2017; WGAN, Arjovsky et al. 2017; the hinge loss
/// of Lim & Ye 2017 / Miyato et al. 2018.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GanKind {
    Minimax = 0,
    NonSaturating = 1,
    LeastSquares = 2,
    Wasserstein = 3,
    Hinge = 4,
}

/// The generator's GAN loss on the critic's logits for generated samples, per [`GanKind`].
/// # Shapes
/// `fake`: any shape; the loss has its shape under reduction none, else it is a scalar.
/// Defaults: kind non-saturating, c 1 (least squares), reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GanGenerator {
    /// The objective.
    pub kind: GanKind,
    /// Least squares' target for fake logits, finite.
    pub c: f32,
    /// Reduction over the logits.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for GanGenerator {
    fn default() -> Self {
        Self {
            kind: GanKind::NonSaturating,
            c: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// The discriminator's (critic's) GAN loss, per [`GanKind`]: the real logits' terms and the
/// fake logits' terms, reduced each (under mean, the mean over the real logits plus the mean
/// over the fake ones, each 0 when empty).
/// # Shapes
/// `real`, `fake`: any shapes (their sizes may differ); under reduction none the loss is 1-D,
/// the real logits' terms then the fake ones', else a scalar. Defaults: kind minimax, a 0 and
/// b 1 (least squares' targets for fake and real logits), reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GanDiscriminator {
    /// The objective.
    pub kind: GanKind,
    /// Least squares' target for fake logits, finite.
    pub a: f32,
    /// Least squares' target for real logits, finite.
    pub b: f32,
    /// Reduction over each set of logits.
    pub reduction: Reduction,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for GanDiscriminator {
    fn default() -> Self {
        Self {
            kind: GanKind::Minimax,
            a: 0.0,
            b: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// The element-wise spec of one set of terms: `role` 0 generator, 1 real, 2 fake.
fn terms(
    kind: GanKind,
    role: u8,
    value: f32,
    reduction: Reduction,
    gs: f32,
) -> ElementwiseSpec<'static> {
    ElementwiseSpec::new(&GAN, reduction, gs)
        .params([f32::from(kind as u8), f32::from(role), value, 0.0])
        .vec4(&GAN_VEC4)
}

/// Checks one f32, bindable input per name and one gradient of each input's shape.
fn check_inputs(
    gpu: &Gpu,
    names: &[&'static str],
    inputs: &[&Tensor],
    out: &TupleOutput,
) -> Result<()> {
    if inputs.len() != names.len() {
        return Err(Error::InvalidShape {
            name: names[0],
            got: vec![inputs.len()],
            why: "one tensor per input",
        });
    }
    for (t, &name) in inputs.iter().zip(names) {
        t.check_dtype(name, DType::F32)?;
        t.check_bindable(gpu, name)?;
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    out.check_grads(gpu, &shapes)
}

/// Checks the loss tensor: `len` elements under reduction none, else a scalar.
fn check_loss(gpu: &Gpu, out: &TupleOutput, reduction: Reduction, len: usize) -> Result<()> {
    let expected = match reduction {
        Reduction::None => vec![len],
        _ => Vec::new(),
    };
    let ok = match reduction {
        Reduction::None => out.loss.len() == len,
        _ => out.loss.shape().is_empty(),
    };
    if !ok {
        return Err(Error::ShapeMismatch {
            name: "loss",
            expected,
            got: out.loss.shape().to_vec(),
        });
    }
    out.check_loss(gpu)
}

/// Outputs for `inputs` whose loss holds `len` terms under reduction none.
fn outputs(gpu: &Gpu, inputs: &[&Tensor], reduction: Reduction, len: usize) -> Result<TupleOutput> {
    let loss_shape = match reduction {
        Reduction::None => vec![len],
        _ => Vec::new(),
    };
    Ok(TupleOutput {
        loss: Tensor::zeros(gpu, &loss_shape)?,
        grads: inputs
            .iter()
            .map(|t| Tensor::zeros_typed(gpu, t.shape(), crate::grad_type(t)))
            .collect::<Result<_>>()?,
    })
}

fn run_and_wait(
    gpu: &Gpu,
    loss: &impl TupleLoss,
    inputs: &[&Tensor],
    out: TupleOutput,
) -> Result<TupleOutput> {
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    loss.encode(gpu, &mut encoder, inputs, None, &out)?;
    gpu.submit_and_wait(encoder)?;
    Ok(out)
}

impl TupleLoss for GanGenerator {
    fn inputs(&self) -> &'static [&'static str] {
        &["fake"]
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        _target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()> {
        check_param("c", self.c.into(), "finite", self.c.is_finite())?;
        check_grad_scale(self.grad_scale)?;
        if let Some(r) = half_tuple(self, gpu, encoder, inputs, out) {
            // 16-bit inputs through f32 copies; the gradients packed back.
            return r;
        }
        check_inputs(gpu, self.inputs(), inputs, out)?;
        let fake = inputs[0];
        check_loss(gpu, out, self.reduction, fake.len())?;
        let spec = terms(self.kind, 0, self.c, self.reduction, self.grad_scale);
        let own = LossOutput {
            loss: out.loss.clone(),
            grad: out.grads[0].clone(),
            status: Tensor::zeros_typed(gpu, &[1], DType::U32)?,
        };
        gpu.scoped(|| elementwise::encode(gpu, encoder, &spec, fake, fake, &own))
    }

    fn compute(
        &self,
        gpu: &Gpu,
        inputs: &[&Tensor],
        _target: Option<&Tensor>,
    ) -> Result<TupleOutput> {
        let len = inputs.first().map_or(0, |t| t.len());
        run_and_wait(
            gpu,
            self,
            inputs,
            outputs(gpu, inputs, self.reduction, len)?,
        )
    }
}

impl TupleLoss for GanDiscriminator {
    fn inputs(&self) -> &'static [&'static str] {
        &["real", "fake"]
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        _target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()> {
        check_param("a", self.a.into(), "finite", self.a.is_finite())?;
        check_param("b", self.b.into(), "finite", self.b.is_finite())?;
        check_grad_scale(self.grad_scale)?;
        if let Some(r) = half_tuple(self, gpu, encoder, inputs, out) {
            // 16-bit inputs through f32 copies; the gradients packed back.
            return r;
        }
        check_inputs(gpu, self.inputs(), inputs, out)?;
        let (real, fake) = (inputs[0], inputs[1]);
        check_loss(gpu, out, self.reduction, real.len() + fake.len())?;
        let per_term = |t: &Tensor| match self.reduction {
            Reduction::None => vec![t.len()],
            _ => Vec::new(),
        };
        let halves = [
            Tensor::zeros(gpu, &per_term(real))?,
            Tensor::zeros(gpu, &per_term(fake))?,
        ];
        let status = Tensor::zeros_typed(gpu, &[1], DType::U32)?;
        gpu.scoped(|| {
            let sets = [(real, 1, self.b), (fake, 2, self.a)];
            for (j, (logits, role, value)) in sets.into_iter().enumerate() {
                let spec = terms(self.kind, role, value, self.reduction, self.grad_scale);
                let own = LossOutput {
                    loss: halves[j].clone(),
                    grad: out.grads[j].clone(),
                    status: status.clone(),
                };
                elementwise::encode(gpu, encoder, &spec, logits, logits, &own)?;
            }
            let [r, f] = &halves;
            if self.reduction == Reduction::None {
                // The real terms, then the fake ones.
                let at = out.loss.offset();
                let (rb, fb) = (r.byte_len(), f.byte_len());
                if rb > 0 {
                    encoder.copy_buffer_to_buffer(
                        r.buffer(),
                        r.offset(),
                        out.loss.buffer(),
                        at,
                        rb,
                    );
                }
                if fb > 0 {
                    let to = at + rb;
                    encoder.copy_buffer_to_buffer(
                        f.buffer(),
                        f.offset(),
                        out.loss.buffer(),
                        to,
                        fb,
                    );
                }
            } else {
                let (a, b) = (r.binding(0, 1), f.binding(0, 1));
                combine(
                    gpu,
                    encoder,
                    a,
                    b,
                    out.loss.binding(0, 1),
                    1,
                    Mix::Fixed(1.0, 1.0),
                );
            }
            Ok(())
        })
    }

    fn compute(
        &self,
        gpu: &Gpu,
        inputs: &[&Tensor],
        _target: Option<&Tensor>,
    ) -> Result<TupleOutput> {
        let len = inputs.iter().map(|t| t.len()).sum();
        run_and_wait(
            gpu,
            self,
            inputs,
            outputs(gpu, inputs, self.reduction, len)?,
        )
    }
}
