use crate::config::check_grad_scale;
use crate::elementwise;
use crate::error::{check_param, Error, Result};
use crate::kernel::regression::{MAE, MAE_VEC4, MSE, MSE_VEC4};
use crate::metric::info_nce::{combine, Mix};
use crate::narrow::via_f32_grads;
use crate::{DType, ElementwiseSpec, Gpu, LossOutput, Reduction, Tensor, TupleOutput};

/// The distance [`Perceptual`] takes between feature maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PerceptualDistance {
    /// Mean squared difference (Johnson et al. 2016's feature reconstruction loss).
    Mse,
    /// Mean absolute difference (0 derivative at 0, as torch's `l1_loss`).
    L1,
}

/// Perceptual (feature reconstruction) loss over caller-supplied feature maps φ_l of the
/// prediction and the target (a VGG's activations, say), one distance per layer, weighted:
///
/// ```text
/// loss = Σ_l w_l · mean dist(φ_l(x̂) − φ_l(x))        dist = r² or |r|
/// ```
/// The gradients are w.r.t. the prediction's feature maps, one per layer (push them back
/// through the feature network).
/// # Shapes
/// `pred[l]` and `target[l]` equal (f32, or F16 / BF16 through f32 copies, the gradients in
/// their type; layers may differ in shape); the loss is a scalar.
/// Defaults: distance mse, every layer weight 1 (`layer_weights` empty), grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perceptual<'a> {
    /// One finite weight per layer; empty: 1 for every layer.
    pub layer_weights: &'a [f32],
    /// The distance between feature maps.
    pub distance: PerceptualDistance,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for Perceptual<'_> {
    fn default() -> Self {
        Self {
            layer_weights: &[],
            distance: PerceptualDistance::Mse,
            grad_scale: 1.0,
        }
    }
}

impl Perceptual<'_> {
    /// Records the loss and the gradient of every layer into `out` (a scalar loss and one
    /// gradient per layer, of its shape). Arguments are validated before anything is recorded.
    pub fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &[&Tensor],
        target: &[&Tensor],
        out: &TupleOutput,
    ) -> Result<()> {
        let f32_call = |encoder: &mut _, p: &[&Tensor], t: &[&Tensor], out: &_| {
            self.encode(gpu, encoder, p, t, out)
        };
        if let Some(r) = half_layers(gpu, encoder, pred, target, out, f32_call) {
            // 16-bit layers through f32 copies; the gradients packed back.
            return r;
        }
        check_layers(gpu, self.grad_scale, self.layer_weights, pred, target)?;
        let layers = pred.len();
        out.check_scalar(gpu, pred)?;
        let (kernel, kernel4) = match self.distance {
            PerceptualDistance::Mse => (&MSE, &MSE_VEC4),
            PerceptualDistance::L1 => (&MAE, &MAE_VEC4),
        };
        let means = (0..layers)
            .map(|_| Tensor::zeros(gpu, &[]))
            .collect::<Result<Vec<_>>>()?;
        let status = Tensor::zeros_typed(gpu, &[1], DType::U32)?;
        gpu.scoped(|| {
            for l in 0..layers {
                let gs = layer_weight(self.layer_weights, l) * self.grad_scale;
                let spec = ElementwiseSpec::new(kernel, Reduction::Mean, gs).vec4(kernel4);
                let own = LossOutput {
                    loss: means[l].clone(),
                    grad: out.grads[l].clone(),
                    status: status.clone(),
                };
                elementwise::encode(gpu, encoder, &spec, pred[l], target[l], &own)?;
            }
            weighted_sum(
                gpu,
                encoder,
                &means,
                |l| layer_weight(self.layer_weights, l),
                &out.loss,
            )
        })
    }

    /// Computes the loss and the layers' gradients into new tensors and waits for the device.
    pub fn compute(&self, gpu: &Gpu, pred: &[&Tensor], target: &[&Tensor]) -> Result<TupleOutput> {
        compute_layers(gpu, pred, |encoder, out| {
            self.encode(gpu, encoder, pred, target, out)
        })
    }
}

/// Records `out = Σ_l weight(l) · terms[l]` over scalar tensors, one term added at a time in
/// order (the per-layer losses of [`Perceptual`] and [`Style`](crate::Style)).
pub(crate) fn weighted_sum(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    terms: &[Tensor],
    weight: impl Fn(usize) -> f32,
    out: &Tensor,
) -> Result<()> {
    let Some(first) = terms.first() else {
        return Ok(());
    };
    let (a, b) = (first.binding(0, 1), first.binding(0, 1));
    combine(
        gpu,
        encoder,
        a,
        b,
        out.binding(0, 1),
        1,
        Mix::Fixed(weight(0), 0.0),
    );
    for (l, term) in terms.iter().enumerate().skip(1) {
        let sum = Tensor::zeros(gpu, &[])?;
        let mix = Mix::Fixed(1.0, weight(l));
        combine(
            gpu,
            encoder,
            out.binding(0, 1),
            term.binding(0, 1),
            sum.binding(0, 1),
            1,
            mix,
        );
        encoder.copy_buffer_to_buffer(sum.buffer(), sum.offset(), out.buffer(), out.offset(), 4);
    }
    Ok(())
}

/// Checks what every layered loss takes: a finite grad_scale, finite layer weights (none or one
/// per layer), at least one layer and one target map per predicted one, each of its shape, f32
/// and bindable.
pub(crate) fn check_layers(
    gpu: &Gpu,
    grad_scale: f32,
    layer_weights: &[f32],
    pred: &[&Tensor],
    target: &[&Tensor],
) -> Result<()> {
    check_grad_scale(grad_scale)?;
    for &w in layer_weights {
        check_param("layer_weights", w.into(), "finite", w.is_finite())?;
    }
    let layers = pred.len();
    if layers == 0 || target.len() != layers {
        return Err(Error::InvalidShape {
            name: "target",
            got: vec![layers, target.len()],
            why: "one target feature map per predicted one, at least one layer",
        });
    }
    if !layer_weights.is_empty() && layer_weights.len() != layers {
        return Err(Error::InvalidShape {
            name: "layer_weights",
            got: vec![layer_weights.len()],
            why: "one weight per layer (or none)",
        });
    }
    for (p, t) in pred.iter().zip(target) {
        if p.shape() != t.shape() {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected: p.shape().to_vec(),
                got: t.shape().to_vec(),
            });
        }
        for (x, name) in [(p, "pred"), (t, "target")] {
            x.check_dtype(name, DType::F32)?;
            x.check_bindable(gpu, name)?;
        }
    }
    Ok(())
}

/// Outputs for `pred`'s layers (a scalar loss, one gradient per layer), `encode` recorded into
/// them, submitted and waited for.
pub(crate) fn compute_layers(
    gpu: &Gpu,
    pred: &[&Tensor],
    encode: impl FnOnce(&mut wgpu::CommandEncoder, &TupleOutput) -> Result<()>,
) -> Result<TupleOutput> {
    let out = TupleOutput {
        loss: Tensor::zeros(gpu, &[])?,
        grads: pred
            .iter()
            .map(|t| Tensor::zeros_typed(gpu, t.shape(), crate::grad_type(t)))
            .collect::<Result<_>>()?,
    };
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encode(&mut encoder, &out)?;
    gpu.submit_and_wait(encoder)?;
    Ok(out)
}

/// For 16-bit layers, `encode_f32` over f32 copies of `pred` and `target`, each layer's gradient
/// packed back ([`via_f32_grads`]); `None` for f32 ones.
pub(crate) fn half_layers(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pred: &[&Tensor],
    target: &[&Tensor],
    out: &TupleOutput,
    encode_f32: impl FnOnce(
        &mut wgpu::CommandEncoder,
        &[&Tensor],
        &[&Tensor],
        &TupleOutput,
    ) -> Result<()>,
) -> Option<Result<()>> {
    pred.first().filter(|t| t.dtype().is_half())?;
    let values: Vec<(&'static str, &Tensor)> = (pred.iter().map(|&t| ("pred", t)))
        .chain(target.iter().map(|&t| ("target", t)))
        .collect();
    let grads: Vec<_> = (out.grads.iter().zip(pred))
        .map(|(g, p)| ("grad", g, p.shape()))
        .collect();
    Some(via_f32_grads(
        gpu,
        encoder,
        &values,
        &grads,
        None,
        |encoder, wide, g| {
            let (p, t) = wide.split_at(pred.len().min(wide.len()));
            let (p, t): (Vec<&Tensor>, Vec<&Tensor>) = (p.iter().collect(), t.iter().collect());
            let out32 = TupleOutput {
                loss: out.loss.clone(),
                grads: g.to_vec(),
            };
            encode_f32(encoder, &p, &t, &out32)
        },
    ))
}

/// Layer `l`'s weight: the given one, or 1 when no weights are given.
pub(crate) fn layer_weight(weights: &[f32], l: usize) -> f32 {
    weights.get(l).copied().unwrap_or(1.0)
}
