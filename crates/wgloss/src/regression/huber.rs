use crate::config::plain_loss;
use crate::kernel::regression::{HUBER, HUBER_HALF, HUBER_VEC4};

plain_loss!(
    /// Huber loss, torch `huber_loss`.
    ///
    /// ```text
    /// |r| ≤ δ: ½ r²            d/dp = r
    /// else:    δ (|r| − ½ δ)   d/dp = δ sign r
    /// ```
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: delta 1.0 (> 0), reduction mean, grad_scale 1.
    Huber,
    HUBER,
    HUBER_VEC4,
    HUBER_HALF,
    /// Threshold between the quadratic and linear pieces (> 0).
    delta: 1.0,
    "> 0",
    |v| v > 0.0
);
