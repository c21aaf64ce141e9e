use crate::config::check_grad_scale;
use crate::error::{check_param, Error, Result};
use crate::metric::info_nce::{combine, Mix};
use crate::metric::row_tuples::half_tuple;
use crate::{DType, Gpu, Loss, LossOutput, Mae, Reduction, Tensor, TupleLoss, TupleOutput};

/// CycleGAN's cycle-consistency loss (Zhu et al. 2017): the L1 distance of each domain's
/// round trip to its input.
///
/// ```text
/// loss = λ (mean |F(G(x)) − x| + mean |G(F(y)) − y|)
/// ```
/// A [`TupleLoss`] of `[reconstructed_x, x, reconstructed_y, y]` with a gradient for each (those
/// of `x` and `y` are the negatives of their reconstructions'; sign 0 at 0, as torch's
/// `l1_loss`).
/// # Shapes
/// `reconstructed_x` and `x` equal, `reconstructed_y` and `y` equal (the two domains may differ
/// in shape); the loss is a scalar. Defaults: lambda 1 (CycleGAN uses 10), grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CycleConsistency {
    /// λ, finite.
    pub lambda: f32,
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for CycleConsistency {
    fn default() -> Self {
        Self {
            lambda: 1.0,
            grad_scale: 1.0,
        }
    }
}

impl TupleLoss for CycleConsistency {
    fn inputs(&self) -> &'static [&'static str] {
        &["reconstructed_x", "x", "reconstructed_y", "y"]
    }

    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Tensor],
        _target: Option<&Tensor>,
        out: &TupleOutput,
    ) -> Result<()> {
        let lambda = self.lambda;
        check_param("lambda", lambda.into(), "finite", lambda.is_finite())?;
        check_grad_scale(self.grad_scale)?;
        let names = self.inputs();
        if let Some(r) = half_tuple(self, gpu, encoder, inputs, out) {
            // 16-bit inputs through f32 copies; the gradients packed back.
            return r;
        }
        let &[rec_x, x, rec_y, y] = inputs else {
            return Err(Error::InvalidShape {
                name: names[0],
                got: vec![inputs.len()],
                why: "expected four inputs: reconstructed_x, x, reconstructed_y, y",
            });
        };
        for (pair, (rec, orig)) in [(rec_x, x), (rec_y, y)].into_iter().enumerate() {
            if orig.shape() != rec.shape() {
                return Err(Error::ShapeMismatch {
                    name: names[2 * pair + 1],
                    expected: rec.shape().to_vec(),
                    got: orig.shape().to_vec(),
                });
            }
        }
        for (t, &name) in inputs.iter().zip(names) {
            t.check_dtype(name, DType::F32)?;
            t.check_bindable(gpu, name)?;
        }
        out.check_scalar(gpu, inputs)?;
        let l1 = Mae {
            reduction: Reduction::Mean,
            grad_scale: lambda * self.grad_scale,
        };
        let halves = [Tensor::zeros(gpu, &[])?, Tensor::zeros(gpu, &[])?];
        let status = Tensor::zeros_typed(gpu, &[1], DType::U32)?;
        let max_floats = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
        // Segments of whole 256-byte units, so that each binding offset is aligned.
        let segment = (max_floats / 64 * 64).max(64);
        gpu.scoped(|| {
            for (pair, (rec, orig)) in [(rec_x, x), (rec_y, y)].into_iter().enumerate() {
                let grad = &out.grads[2 * pair];
                let half = LossOutput {
                    loss: halves[pair].clone(),
                    grad: grad.clone(),
                    status: status.clone(),
                };
                l1.encode(gpu, encoder, rec, orig, &half)?;
                // d/dx = −d/dx̂.
                let n = grad.len();
                for start in (0..n).step_by(segment) {
                    let len = segment.min(n - start);
                    combine(
                        gpu,
                        encoder,
                        grad.binding(start, len),
                        grad.binding(start, len),
                        out.grads[2 * pair + 1].binding(start, len),
                        len,
                        Mix::Fixed(-1.0, 0.0),
                    );
                }
            }
            let [a, b] = &halves;
            combine(
                gpu,
                encoder,
                a.binding(0, 1),
                b.binding(0, 1),
                out.loss.binding(0, 1),
                1,
                Mix::Fixed(lambda, lambda),
            );
            Ok(())
        })
    }
}
