//! f64 CPU reference of every wgloss loss: the forward value and the analytic
//! gradient with respect to the prediction.
//!
//! Everything here is computed in plain `f64` with the most direct formula, so
//! the conformance suite can compare the GPU kernels (forward and backward)
//! against it. Shape mismatches and invalid hyper-parameters panic.

mod boxes;
mod classification;
mod ctc;
mod generative;
mod in_batch;
mod lovasz;
mod margin_heads;
mod numerics;
mod pairs;
mod regression;
mod segmentation;
mod sinkhorn;
mod ssim;
#[cfg(test)]
mod testing;

pub use boxes::*;
pub use classification::*;
pub use ctc::*;
pub use generative::*;
pub use in_batch::*;
pub use lovasz::*;
pub use margin_heads::*;
pub use pairs::*;
pub use regression::*;
pub use segmentation::*;
pub use sinkhorn::*;
pub use ssim::*;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// How per-element losses are combined, as in torch's `reduction=` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Per-element losses, same shape as the input.
    None,
    /// Sum of the per-element losses divided by their count (0 for an empty input).
    Mean,
    /// Sum of the per-element losses.
    Sum,
}

/// Loss value and the gradient of the reduced loss w.r.t. `pred`, multiplied by `grad_scale`.
#[derive(Clone, Debug)]
pub struct LossGrad {
    /// 0-d for `Mean`/`Sum` (and for rmse/rmsle); the input's shape for `None`.
    pub loss: ArrayD<f64>,
    /// Same shape as `pred`.
    pub grad: ArrayD<f64>,
}

/// Loss value and the gradients of the reduced loss w.r.t. each of several inputs (metric
/// learning: embeddings, pairs, class weights), each multiplied by `grad_scale`.
#[derive(Clone, Debug)]
pub struct MultiGrad {
    /// 0-d for `Mean`/`Sum`; per row (`[N]`) for `None`.
    pub loss: ArrayD<f64>,
    /// One gradient per input, in the order of the function's arguments, each of its input's
    /// shape.
    pub grads: Vec<ArrayD<f64>>,
}

/// A 0-d array holding `x`.
pub(crate) fn scalar(x: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), x)
}

/// The elements of `a` in row-major order, borrowed when `a` is already laid out that way.
pub(crate) fn flat<'a>(a: &'a ArrayViewD<'_, f64>) -> std::borrow::Cow<'a, [f64]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// Separable loss: `f(p, t) = (loss, dloss/dp)` per element, then the reduction.
///
/// `None`: per-element loss, grad = `grad_scale·d`; `Sum`: Σ loss, grad =
/// `grad_scale·d`; `Mean`: Σ loss / n, grad = `grad_scale·d / n` (loss 0 when n = 0).
pub(crate) fn elementwise(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
    f: impl Fn(f64, f64) -> (f64, f64),
) -> LossGrad {
    elementwise_indexed(pred, target, reduction, grad_scale, |_, p, t| f(p, t))
}

/// [`elementwise`] whose kernel also receives the row-major flat index of the element.
pub(crate) fn elementwise_indexed(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    reduction: Reduction,
    grad_scale: f64,
    f: impl Fn(usize, f64, f64) -> (f64, f64),
) -> LossGrad {
    assert_eq!(
        pred.shape(),
        target.shape(),
        "pred and target shapes differ"
    );
    let n = pred.len();
    let scale = match reduction {
        Reduction::Mean if n > 0 => grad_scale / n as f64,
        _ => grad_scale,
    };
    let (pred_flat, target_flat) = (flat(&pred), flat(&target));
    let mut losses = Vec::with_capacity(n);
    let mut derivs = Vec::with_capacity(n);
    for (i, (&p, &t)) in pred_flat.iter().zip(target_flat.iter()).enumerate() {
        let (l, d) = f(i, p, t);
        losses.push(l);
        derivs.push(scale * d);
    }
    let grad = ArrayD::from_shape_vec(pred.raw_dim(), derivs).expect("length matches shape");
    let loss = match reduction {
        Reduction::None => {
            ArrayD::from_shape_vec(pred.raw_dim(), losses).expect("length matches shape")
        }
        Reduction::Sum => scalar(losses.iter().sum()),
        Reduction::Mean if n == 0 => scalar(0.0),
        Reduction::Mean => scalar(losses.iter().sum::<f64>() / n as f64),
    };
    LossGrad { loss, grad }
}
