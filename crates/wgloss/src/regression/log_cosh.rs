use crate::kernel::regression::{LOG_COSH, LOG_COSH_HALF, LOG_COSH_VEC4};

crate::config::plain_loss!(
    /// Log-cosh, optax `log_cosh`, in the overflow-free form.
    ///
    /// ```text
    /// loss_i = log cosh r = |r| + softplus(−2|r|) − ln 2,  d/dp = tanh r
    /// ```
    /// Finite for any finite residual (1e4 gives 1e4 − ln 2), and to a few ulps relative for
    /// tiny ones too (below |r| = ½ the kernel evaluates polynomials in r², so ln cosh 1e-4 is
    /// 5e-9, not the rounding of |r| + softplus(−2|r|) − ln 2, which can even be negative).
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: reduction mean, grad_scale 1.
    LogCosh,
    LOG_COSH,
    LOG_COSH_VEC4,
    LOG_COSH_HALF
);
