use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Error, Result};
use crate::kernel::classification::{BCE_WITH_LOGITS, BCE_WITH_LOGITS_HALF, BCE_WITH_LOGITS_VEC4};
use crate::{ElementwiseLoss, Reduction};

/// Binary cross-entropy on logits, torch `binary_cross_entropy_with_logits`, in the overflow-free
/// softplus form.
///
/// ```text
/// loss_i = w_c [(1 − t) x + (1 + (pw_c − 1) t) softplus(−x)],   c = the class (last dimension)
/// d/dx   = w_c [(1 − t) − (1 + (pw_c − 1) t) σ(−x)]
/// ```
/// `pos_weight` and `weight` are per class, of the length of the last dimension (torch
/// broadcasts them the same way); a weight of another shape is not supported.
/// # Shapes
/// `logits`, `targets` (in [0, 1]): any shape, equal. Defaults: no weights, reduction mean,
/// grad_scale 1.
#[derive(Clone, Debug, PartialEq)]
pub struct BceWithLogits {
    /// Weight of the positive term per class, `[C]` (finite).
    pub pos_weight: Option<Vec<f32>>,
    /// Weight of each class's loss, `[C]` (finite).
    pub weight: Option<Vec<f32>>,
    /// Reduction over elements.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for BceWithLogits {
    fn default() -> Self {
        Self {
            pos_weight: None,
            weight: None,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

impl ElementwiseLoss for BceWithLogits {
    fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
        crate::config::check_grad_scale(self.grad_scale)?;
        let classes = shape.last().copied().unwrap_or(1).max(1);
        let mut aux = Vec::with_capacity(2 * classes);
        for (name, values) in [("pos_weight", &self.pos_weight), ("weight", &self.weight)] {
            match values {
                None => aux.extend(std::iter::repeat_n(1.0, classes)),
                Some(v) => {
                    if v.len() != classes {
                        return Err(Error::ShapeMismatch {
                            name,
                            expected: vec![classes],
                            got: vec![v.len()],
                        });
                    }
                    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                        check_param(name, f64::from(*bad), "finite", false)?;
                    }
                    aux.extend_from_slice(v);
                }
            }
        }
        let mut spec = ElementwiseSpec::new(&BCE_WITH_LOGITS, self.reduction, self.grad_scale)
            .vec4(&BCE_WITH_LOGITS_VEC4)
            .half(&BCE_WITH_LOGITS_HALF);
        spec.coords = classes as u32;
        spec.aux = aux;
        // Without weights the kernel reads none (a lookup per element costs on a CPU adapter).
        let weighted = self.pos_weight.is_some() || self.weight.is_some();
        spec.overrides = vec![("WEIGHTED", weighted.into())];
        Ok(spec)
    }

    fn reduction(&self) -> Reduction {
        self.reduction
    }
}
