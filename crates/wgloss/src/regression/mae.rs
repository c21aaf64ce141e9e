use crate::error::{check_param, Result};
use crate::kernel::regression::{MAE, MAE_VEC4};

/// Declares a regression loss without hyperparameters: a config of `reduction` and `grad_scale`.
macro_rules! plain_loss {
    ($(#[$doc:meta])* $name:ident, $kernel:expr, $vec4:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// Reduction over elements (default `Mean`).
            pub reduction: crate::Reduction,
            /// Multiplier of the gradient: the upstream gradient or loss scale (default 1).
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    reduction: crate::Reduction::Mean,
                    grad_scale: 1.0,
                }
            }
        }

        impl crate::ElementwiseLoss for $name {
            fn spec(&self, _shape: &[usize]) -> crate::Result<crate::ElementwiseSpec<'_>> {
                crate::regression::check_grad_scale(self.grad_scale)?;
                Ok(crate::ElementwiseSpec::new(&$kernel, self.reduction, self.grad_scale).vec4(&$vec4))
            }

            fn reduction(&self) -> crate::Reduction {
                self.reduction
            }
        }
    };
}
pub(crate) use plain_loss;

plain_loss!(
    /// Mean absolute error, torch `l1_loss`.
    ///
    /// ```text
    /// loss_i = |p_i − t_i|,  d/dp = sign(p_i − t_i)  (0 at p = t)
    /// ```
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: reduction mean, grad_scale 1.
    Mae,
    MAE,
    MAE_VEC4
);

/// Rejects a non-finite `grad_scale`.
pub(crate) fn check_grad_scale(grad_scale: f32) -> Result<()> {
    check_param("grad_scale", f64::from(grad_scale), "finite", true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ElementwiseLoss;

    #[test]
    fn non_finite_grad_scale_is_rejected() {
        let bad = Mae {
            grad_scale: f32::NAN,
            ..Default::default()
        };
        assert!(matches!(
            bad.spec(&[3]),
            Err(crate::Error::InvalidParameter {
                name: "grad_scale",
                ..
            })
        ));
    }
}
