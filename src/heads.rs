//! Margin heads in the registry's one-input form: the embeddings `[N, D]` stacked over the class
//! weights `[C, D]` as one prediction `[N + C, D]`, and one gradient of that shape. The suite
//! then runs the heads through every check it runs on the other losses.

use ndarray::{ArrayViewD, Axis};
use wgloss::{Error, Gpu, HeadOutput, Loss, LossOutput, MarginHead, Reduction, Tensor};
use wgloss_ref::{LossGrad, MultiGrad};

/// A [`MarginHead`] as a [`Loss`] of the stacked prediction `[N + C, D]` and labels `[N]`,
/// where C is the number of classes of the weights; the gradient is stacked alike. The
/// embeddings, the weights and the gradients the caller's outputs hold are copied through
/// buffers of the head's own; a rejected call records nothing but copies into those.
pub struct Stacked<H> {
    pub head: H,
}

impl<H: MarginHead> Loss for Stacked<H> {
    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> wgloss::Result<()> {
        let (rows, d) = match input.shape() {
            &[rows, d] => (rows, d),
            s => {
                return Err(Error::InvalidShape {
                    name: "pred",
                    got: s.to_vec(),
                    why: "expected [N + C, D]",
                })
            }
        };
        let n = target.shape().iter().product::<usize>().min(rows);
        let classes = rows - n;
        if out.grad.shape() != input.shape() {
            return Err(Error::ShapeMismatch {
                name: "grad",
                expected: input.shape().to_vec(),
                got: out.grad.shape().to_vec(),
            });
        }
        let emb = Tensor::zeros(gpu, &[n, d])?;
        let weight = Tensor::zeros(gpu, &[classes, d])?;
        let own = HeadOutput::new(gpu, n, d, classes)?;
        let split = 4 * (n * d) as u64;
        let copy =
            |encoder: &mut wgpu::CommandEncoder, from: &Tensor, at: u64, to: &Tensor, to_at| {
                if to.byte_len() > 0 {
                    encoder.copy_buffer_to_buffer(
                        from.buffer(),
                        from.offset() + at,
                        to.buffer(),
                        to.offset() + to_at,
                        to.byte_len(),
                    );
                }
            };
        copy(encoder, input, 0, &emb, 0);
        copy(encoder, input, split, &weight, 0);
        // The head writes nothing after a bad label: its gradients then keep the caller's.
        copy(encoder, &out.grad, 0, &own.out.grad, 0);
        copy(encoder, &out.grad, split, &own.grad_weight, 0);
        self.head
            .encode(gpu, encoder, &emb, &weight, target, &own)?;
        let back = |encoder: &mut wgpu::CommandEncoder, from: &Tensor, to: &Tensor, at: u64| {
            if from.byte_len() > 0 {
                encoder.copy_buffer_to_buffer(
                    from.buffer(),
                    from.offset(),
                    to.buffer(),
                    to.offset() + at,
                    from.byte_len(),
                );
            }
        };
        back(encoder, &own.out.grad, &out.grad, 0);
        back(encoder, &own.grad_weight, &out.grad, split);
        back(encoder, &own.out.loss, &out.loss, 0);
        back(encoder, &own.out.status, &out.status, 0);
        Ok(())
    }

    fn check(&self, gpu: &Gpu, target: &Tensor, out: &LossOutput) -> wgloss::Result<()> {
        let Some(position) = out.first_bad_label(gpu)? else {
            return Ok(());
        };
        let label = target.to_labels(gpu)?[position];
        Err(Error::LabelOutOfRange {
            position,
            label: label.into(),
            classes: out.grad.shape()[0] - target.len(),
        })
    }
}

/// The embeddings and class weights of a stacked prediction, given the labels `[N]`.
pub fn split<'a>(
    pred: &'a ArrayViewD<'_, f64>,
    labels: &ArrayViewD<'_, f64>,
) -> (ArrayViewD<'a, f64>, ArrayViewD<'a, f64>) {
    let n = labels.len();
    let (emb, weight) = pred.view().split_at(Axis(0), n);
    (emb, weight)
}

/// A reference head's loss with its two gradients stacked as the prediction is.
pub fn stacked(m: MultiGrad) -> LossGrad {
    let views: Vec<_> = m.grads.iter().map(|g| g.view()).collect();
    let grad = ndarray::concatenate(Axis(0), &views).expect("gradients of one width");
    LossGrad {
        loss: m.loss,
        grad: grad.into_dyn(),
    }
}
