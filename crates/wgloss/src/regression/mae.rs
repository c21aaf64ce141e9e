use crate::config::plain_loss;
use crate::kernel::regression::{MAE, MAE_HALF, MAE_VEC4};

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
    MAE_VEC4,
    MAE_HALF
);

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
