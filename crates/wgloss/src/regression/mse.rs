use crate::kernel::regression::{MSE, MSE_HALF, MSE_VEC4};

crate::config::plain_loss!(
    /// Mean squared error, torch `mse_loss`.
    ///
    /// ```text
    /// loss_i = (p_i − t_i)²,  d/dp = 2 (p_i − t_i)
    /// ```
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: reduction mean, grad_scale 1.
    Mse,
    MSE,
    MSE_VEC4,
    MSE_HALF
);
