use crate::config::plain_loss;
use crate::kernel::regression::{SMOOTH_L1, SMOOTH_L1_HALF, SMOOTH_L1_VEC4};

plain_loss!(
    /// Smooth L1, torch `smooth_l1_loss`.
    ///
    /// ```text
    /// |r| < β: ½ r² / β    d/dp = r / β
    /// else:    |r| − ½ β   d/dp = sign r        (β = 0 is exactly L1)
    /// ```
    /// # Shapes
    /// `pred`, `target`: any shape, equal. Defaults: beta 1.0 (≥ 0), reduction mean, grad_scale 1.
    SmoothL1,
    SMOOTH_L1,
    SMOOTH_L1_VEC4,
    SMOOTH_L1_HALF,
    /// Width of the quadratic zone (≥ 0).
    beta: 1.0,
    ">= 0",
    |v| v >= 0.0
);
