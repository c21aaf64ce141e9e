use crate::kernel::regression::{LOG_COSH, LOG_COSH_VEC4};

crate::config::plain_loss!(
    /// Log-cosh, optax `log_cosh`, in the overflow-free form.
    ///
    /// ```text
    /// loss_i = log cosh r = |r| + softplus(−2|r|) − ln 2,  d/dp = tanh r
    /// ```
    /// Finite for any finite residual (1e4 gives 1e4 − ln 2).
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: reduction mean, grad_scale 1.
    LogCosh,
    LOG_COSH,
    LOG_COSH_VEC4
);
