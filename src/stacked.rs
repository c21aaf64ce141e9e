//! Losses of several inputs in the registry's one-input form: their inputs stacked along the
//! rows as one prediction (a margin head's embeddings `[N, D]` over its class weights `[C, D]`;
//! a pair's or triplet's `[N, D]` inputs one after the other), and one gradient of that shape.
//! The suite then runs them through every check it runs on the other losses.

use ndarray::{ArrayViewD, Axis};
use wgloss::{
    Ctc, DType, Error, Gpu, HeadOutput, Loss, LossOutput, MarginHead, Perceptual, Reduction,
    Sinkhorn, Style, Tensor, TupleLoss, TupleOutput,
};
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
        let (rows, d) = stacked_shape(input, &out.grad, 1, "expected [N + C, D]")?;
        let n = target.shape().iter().product::<usize>().min(rows);
        let classes = rows - n;
        let emb = Tensor::zeros(gpu, &[n, d])?;
        let weight = Tensor::zeros(gpu, &[classes, d])?;
        let own = HeadOutput::new(gpu, n, d, classes)?;
        let split = 4 * (n * d) as u64;
        copy(encoder, (input, 0), (&emb, 0), emb.byte_len());
        copy(encoder, (input, split), (&weight, 0), weight.byte_len());
        // The head writes nothing after a bad label: its gradients then keep the caller's.
        let (grad, grad_weight) = (&own.out.grad, &own.grad_weight);
        copy(encoder, (&out.grad, 0), (grad, 0), grad.byte_len());
        copy(
            encoder,
            (&out.grad, split),
            (grad_weight, 0),
            grad_weight.byte_len(),
        );
        self.head
            .encode(gpu, encoder, &emb, &weight, target, &own)?;
        copy(encoder, (grad, 0), (&out.grad, 0), grad.byte_len());
        copy(
            encoder,
            (grad_weight, 0),
            (&out.grad, split),
            grad_weight.byte_len(),
        );
        copy(encoder, (&own.out.loss, 0), (&out.loss, 0), 4);
        copy(encoder, (&own.out.status, 0), (&out.status, 0), 4);
        Ok(())
    }

    fn check(&self, gpu: &Gpu, target: &Tensor, out: &LossOutput) -> wgloss::Result<()> {
        check_labels(gpu, target, out, out.grad.shape()[0] - target.len())
    }
}

/// The rows and width of a stacked prediction `[rows, D]` whose rows split into `parts` equal
/// parts, with a gradient of its shape; `why` describes the expected stack.
fn stacked_shape(
    input: &Tensor,
    grad: &Tensor,
    parts: usize,
    why: &'static str,
) -> wgloss::Result<(usize, usize)> {
    f32_only(input, grad)?;
    let (rows, d) = match input.shape() {
        &[rows, d] if rows % parts == 0 => (rows, d),
        s => {
            return Err(Error::InvalidShape {
                name: "pred",
                got: s.to_vec(),
                why,
            })
        }
    };
    if grad.shape() != input.shape() {
        return Err(Error::ShapeMismatch {
            name: "grad",
            expected: input.shape().to_vec(),
            got: grad.shape().to_vec(),
        });
    }
    Ok((rows, d))
}

/// The stacked forms move rows by f32 byte offsets: other element types are rejected, as the
/// losses behind them reject them.
fn f32_only(input: &Tensor, grad: &Tensor) -> wgloss::Result<()> {
    for (t, name) in [(input, "pred"), (grad, "grad")] {
        if t.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                name,
                expected: DType::F32,
                got: t.dtype(),
            });
        }
    }
    Ok(())
}

/// The bad label the kernel reported in `out`'s status word, as [`Error::LabelOutOfRange`] over
/// `classes` classes.
fn check_labels(
    gpu: &Gpu,
    target: &Tensor,
    out: &LossOutput,
    classes: usize,
) -> wgloss::Result<()> {
    let Some(position) = out.first_bad_label(gpu)? else {
        return Ok(());
    };
    let label = target.to_labels(gpu)?[position];
    Err(Error::LabelOutOfRange {
        position,
        label: label.into(),
        classes,
    })
}

/// A [`TupleLoss`] of k inputs `[N, D]` as a [`Loss`] of their stack `[parts·N, D]` and the
/// target `[N]` (not read by a loss without one); the gradient is stacked alike. Parts past the
/// loss's inputs (an optional input left out) are not read and get a zero gradient.
pub struct StackedTuple<L> {
    pub loss: L,
    pub parts: usize,
}

impl<L: TupleLoss> StackedTuple<L> {
    /// One part per input of `loss`.
    pub fn new(loss: L) -> Self {
        let parts = loss.inputs().len();
        Self { loss, parts }
    }
}

impl<L: TupleLoss> Loss for StackedTuple<L> {
    fn reduction(&self) -> Reduction {
        self.loss.reduction()
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        target_shape: &[usize],
    ) -> wgloss::Result<LossOutput> {
        let loss_shape = match self.reduction() {
            Reduction::None => target_shape.to_vec(),
            _ => Vec::new(),
        };
        LossOutput::with_loss_shape(gpu, input_shape, &loss_shape)
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> wgloss::Result<()> {
        let (k, parts) = (self.loss.inputs().len(), self.parts);
        let (rows, d) = stacked_shape(
            input,
            &out.grad,
            parts,
            "expected [k·N, D], the k inputs stacked",
        )?;
        let n = rows / parts;
        let part = 4 * (n * d) as u64;
        let own = TupleOutput {
            loss: out.loss.clone(),
            grads: (0..k)
                .map(|_| Tensor::zeros(gpu, &[n, d]))
                .collect::<wgloss::Result<_>>()?,
        };
        let mut inputs = Vec::with_capacity(k);
        for j in 0..k as u64 {
            let t = Tensor::zeros(gpu, &[n, d])?;
            copy(encoder, (input, j * part), (&t, 0), part);
            inputs.push(t);
        }
        let views: Vec<&Tensor> = inputs.iter().collect();
        self.loss.encode(gpu, encoder, &views, Some(target), &own)?;
        for (j, g) in own.grads.iter().enumerate() {
            copy(encoder, (g, 0), (&out.grad, j as u64 * part), part);
        }
        let rest = (parts - k) as u64 * part;
        if rest > 0 {
            let at = out.grad.offset() + k as u64 * part;
            encoder.clear_buffer(out.grad.buffer(), at, Some(rest));
        }
        Ok(())
    }
}

/// [`Sinkhorn`] as a [`Loss`] of the two clouds stacked, `[x; y]` `[N + M, D]` with `N = M`,
/// and their weights stacked alike, `[a; b]` `[N + M]` (read only when `weighted`; else
/// uniform). The clouds, weights and gradients are views of the caller's tensors: the loss
/// copies its inputs and writes its outputs by copies, at any 4-byte offset.
pub struct StackedClouds {
    pub loss: Sinkhorn,
    pub weighted: bool,
}

impl Loss for StackedClouds {
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
        let (rows, d) = stacked_shape(
            input,
            &out.grad,
            2,
            "expected [2N, D], the two clouds stacked",
        )?;
        if target.shape() != [rows] {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected: vec![rows],
                got: target.shape().to_vec(),
            });
        }
        let n = rows / 2;
        let view = |t: &Tensor, part: usize, shape: &[usize]| {
            let at = t.offset() + 4 * (part * shape.iter().product::<usize>()) as u64;
            Tensor::new_typed(t.buffer().clone(), at, shape, t.dtype())
        };
        let (x, y) = (view(input, 0, &[n, d])?, view(input, 1, &[n, d])?);
        let (a, b) = (view(target, 0, &[n])?, view(target, 1, &[n])?);
        let own = TupleOutput {
            loss: out.loss.clone(),
            grads: vec![view(&out.grad, 0, &[n, d])?, view(&out.grad, 1, &[n, d])?],
        };
        let weights = self.weighted.then_some((&a, &b));
        self.loss.encode(gpu, encoder, &x, &y, weights, &own)
    }
}

/// The lengths the stacked CTC form implies for `n` sequences of `frames` frames with targets
/// padded to `labels`: input lengths cycle through T, T − 1, T − 2; three targets in four are
/// full, every fourth cycles through 0, 1, …, S (empty targets included). Every target can be
/// aligned when `frames ≥ 2·labels + 3`. Returns `(input_lengths, target_lengths)`.
pub fn ctc_lengths(frames: usize, n: usize, labels: usize) -> (Vec<usize>, Vec<usize>) {
    let inputs = (0..n).map(|i| frames.saturating_sub(i % 3)).collect();
    let targets = (0..n)
        .map(|i| {
            if i % 4 == 3 {
                (i / 4) % (labels + 1)
            } else {
                labels
            }
        })
        .collect();
    (inputs, targets)
}

/// [`Ctc`] as a [`Loss`] of `log_probs [T, N, C]` and padded targets `[N, S]`, with the
/// lengths of [`ctc_lengths`].
pub struct StackedCtc {
    pub loss: Ctc,
}

impl Loss for StackedCtc {
    fn reduction(&self) -> Reduction {
        self.loss.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> wgloss::Result<LossOutput> {
        self.loss.output(gpu, input_shape)
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        input: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> wgloss::Result<()> {
        let (frames, n) = match input.shape() {
            &[t, n, _] => (t, n),
            s => {
                return Err(Error::InvalidShape {
                    name: "log_probs",
                    got: s.to_vec(),
                    why: "expected [T, N, C]",
                })
            }
        };
        let labels = match target.shape() {
            &[rows, s] if rows == n => s,
            s => {
                return Err(Error::ShapeMismatch {
                    name: "target",
                    expected: vec![n, s.get(1).copied().unwrap_or(0)],
                    got: s.to_vec(),
                })
            }
        };
        let (inputs, targets) = ctc_lengths(frames, n, labels);
        self.loss
            .encode(gpu, encoder, input, target, &inputs, &targets, out)
    }

    fn check(&self, gpu: &Gpu, target: &Tensor, out: &LossOutput) -> wgloss::Result<()> {
        check_labels(
            gpu,
            target,
            out,
            out.grad.shape().get(2).copied().unwrap_or(0),
        )
    }
}

/// A loss over several layers of feature maps ([`Perceptual`], [`Style`]).
pub trait Layered {
    fn encode_layers(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &[&Tensor],
        target: &[&Tensor],
        out: &TupleOutput,
    ) -> wgloss::Result<()>;
}

impl Layered for Perceptual<'_> {
    fn encode_layers(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &[&Tensor],
        target: &[&Tensor],
        out: &TupleOutput,
    ) -> wgloss::Result<()> {
        self.encode(gpu, encoder, pred, target, out)
    }
}

impl Layered for Style<'_> {
    fn encode_layers(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &[&Tensor],
        target: &[&Tensor],
        out: &TupleOutput,
    ) -> wgloss::Result<()> {
        self.encode(gpu, encoder, pred, target, out)
    }
}

/// A [`Layered`] loss over `layers` feature maps as a [`Loss`]: the prediction's and the
/// target's maps stacked along the first dimension (split by [`layer_rows`], so the last layer
/// may be shorter or empty), the gradient stacked alike. The maps and the gradients go through
/// buffers of the adapter's own.
pub struct StackedLayers<L> {
    pub loss: L,
    pub layers: usize,
}

impl<L: Layered> Loss for StackedLayers<L> {
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
        f32_only(input, &out.grad)?;
        let layers = self.layers;
        let Some((&rows, inner)) = input.shape().split_first() else {
            return Err(Error::InvalidShape {
                name: "pred",
                got: Vec::new(),
                why: "expected the layers stacked along the first dimension",
            });
        };
        let d: usize = inner.iter().product();
        for (t, name) in [(target, "target"), (&out.grad, "grad")] {
            if t.shape() != input.shape() {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: input.shape().to_vec(),
                    got: t.shape().to_vec(),
                });
            }
        }
        let parts = layer_rows(rows, layers);
        let row_bytes = 4 * d as u64;
        let split = |from: &Tensor, encoder: &mut wgpu::CommandEncoder| {
            parts
                .iter()
                .map(|&(r0, rs)| {
                    let shape: Vec<usize> =
                        std::iter::once(rs).chain(inner.iter().copied()).collect();
                    let t = Tensor::zeros(gpu, &shape)?;
                    copy(
                        encoder,
                        (from, r0 as u64 * row_bytes),
                        (&t, 0),
                        t.byte_len(),
                    );
                    Ok(t)
                })
                .collect::<wgloss::Result<Vec<_>>>()
        };
        let pred = split(input, encoder)?;
        let targets = split(target, encoder)?;
        let own = TupleOutput {
            loss: out.loss.clone(),
            grads: pred
                .iter()
                .map(|t| Tensor::zeros(gpu, t.shape()))
                .collect::<wgloss::Result<_>>()?,
        };
        let (p, t): (Vec<&Tensor>, Vec<&Tensor>) =
            (pred.iter().collect(), targets.iter().collect());
        self.loss.encode_layers(gpu, encoder, &p, &t, &own)?;
        for (g, &(r0, _)) in own.grads.iter().zip(&parts) {
            copy(
                encoder,
                (g, 0),
                (&out.grad, r0 as u64 * row_bytes),
                g.byte_len(),
            );
        }
        Ok(())
    }
}

/// The (first row, rows) of each of `layers` layers stacked in `rows` rows: ⌈rows / layers⌉
/// each, the last ones what remains.
pub fn layer_rows(rows: usize, layers: usize) -> Vec<(usize, usize)> {
    let per = rows.div_ceil(layers.max(1));
    (0..layers)
        .map(|l| {
            let r0 = (l * per).min(rows);
            (r0, per.min(rows - r0))
        })
        .collect()
}

/// The layers of a stacked `[rows, D]` array, split by [`layer_rows`].
pub fn unstack_layers<'a>(x: &'a ArrayViewD<'_, f64>, layers: usize) -> Vec<ArrayViewD<'a, f64>> {
    layer_rows(x.shape()[0], layers)
        .into_iter()
        .map(|(r0, rs)| x.slice_axis(Axis(0), (r0..r0 + rs).into()))
        .collect()
}

/// Records a copy of `bytes` from `from` (a view and a byte offset into it) to `to`; nothing for
/// zero bytes.
fn copy(
    encoder: &mut wgpu::CommandEncoder,
    (from, from_at): (&Tensor, u64),
    (to, to_at): (&Tensor, u64),
    bytes: u64,
) {
    if bytes > 0 {
        let (src, dst) = (from.offset() + from_at, to.offset() + to_at);
        encoder.copy_buffer_to_buffer(from.buffer(), src, to.buffer(), dst, bytes);
    }
}

/// The k inputs `[N, D]` of a stacked prediction `[k·N, D]`.
pub fn unstack<'a>(pred: &'a ArrayViewD<'_, f64>, k: usize) -> Vec<ArrayViewD<'a, f64>> {
    let n = pred.shape()[0] / k;
    (0..k)
        .map(|j| pred.slice_axis(Axis(0), (j * n..(j + 1) * n).into()))
        .collect()
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

/// A reference's loss with its gradients stacked as the prediction is.
pub fn stacked(m: MultiGrad) -> LossGrad {
    let views: Vec<_> = m.grads.iter().map(|g| g.view()).collect();
    let grad = ndarray::concatenate(Axis(0), &views).expect("gradients of one width");
    LossGrad {
        loss: m.loss,
        grad: grad.into_dyn(),
    }
}
