super::rmse::root_loss!(
    /// Root mean squared logarithmic error (reduction fixed to mean).
    ///
    /// ```text
    /// l_i = ln(1 + p_i) − ln(1 + t_i),  loss = sqrt(mean l²),  d/dp_i = l_i / (n · loss · (1 + p_i))
    /// ```
    /// `p ≤ −1` or `t ≤ −1` is outside the domain and yields NaN.
    /// # Shapes
    /// `pred`, `target`: any shape, equal; the loss is a scalar. Default grad_scale 1.
    Rmsle,
    crate::kernel::regression::RMSLE,
    crate::kernel::regression::RMSLE_VEC4,
    crate::kernel::regression::RMSLE_HALF
);
