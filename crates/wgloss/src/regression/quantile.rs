use crate::config::plain_loss;
use crate::kernel::regression::{QUANTILE, QUANTILE_HALF, QUANTILE_VEC4};

plain_loss!(
    /// Quantile (pinball) loss.
    ///
    /// ```text
    /// loss_i = max(q (t − p), (q − 1)(t − p)),  d/dp = −q if t > p, 1 − q if t < p, 0 if t = p
    /// ```
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: quantile 0.5 (in (0, 1)), reduction mean,
    /// grad_scale 1.
    Quantile,
    QUANTILE,
    QUANTILE_VEC4,
    QUANTILE_HALF,
    /// The quantile q, in (0, 1).
    quantile: 0.5,
    "in (0, 1)",
    |v| v > 0.0 && v < 1.0
);
