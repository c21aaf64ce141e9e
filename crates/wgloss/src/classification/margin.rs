use crate::config::plain_loss;
use crate::kernel::classification::{
    EXPONENTIAL, EXPONENTIAL_HALF, EXPONENTIAL_VEC4, HINGE, HINGE_HALF, HINGE_VEC4, RAMP,
    RAMP_HALF, RAMP_VEC4, SMOOTHED_HINGE, SMOOTHED_HINGE_HALF, SMOOTHED_HINGE_VEC4, SQUARED_HINGE,
    SQUARED_HINGE_HALF, SQUARED_HINGE_VEC4,
};

plain_loss!(
    /// Hinge loss, optax `hinge_loss` with a margin.
    ///
    /// ```text
    /// loss_i = max(0, m − y_i s_i),  d/ds = −y_i where positive     (y = ±1)
    /// ```
    /// # Shapes
    /// `scores`, `targets` (±1): any shape, equal. Defaults: margin 1.0, reduction mean,
    /// grad_scale 1.
    Hinge,
    HINGE,
    HINGE_VEC4,
    HINGE_HALF,
    /// The margin m (finite).
    margin: 1.0,
    "finite",
    |_| true
);

plain_loss!(
    /// Squared hinge loss.
    ///
    /// ```text
    /// loss_i = max(0, m − y_i s_i)²,  d/ds = −2 y_i max(0, m − y_i s_i)     (y = ±1)
    /// ```
    /// # Shapes
    /// `scores`, `targets` (±1): any shape, equal. Defaults: margin 1.0, reduction mean,
    /// grad_scale 1.
    SquaredHinge,
    SQUARED_HINGE,
    SQUARED_HINGE_VEC4,
    SQUARED_HINGE_HALF,
    /// The margin m (finite).
    margin: 1.0,
    "finite",
    |_| true
);

plain_loss!(
    /// Smoothed hinge loss (Rennie & Srebro 2005), z = y·s.
    ///
    /// ```text
    /// z ≥ 1: 0      z ≤ 1 − γ: 1 − γ/2 − z      otherwise: (1 − z)² / (2γ)
    /// ```
    /// # Shapes
    /// `scores`, `targets` (±1): any shape, equal. Defaults: gamma 1.0 (> 0), reduction mean,
    /// grad_scale 1.
    SmoothedHinge,
    SMOOTHED_HINGE,
    SMOOTHED_HINGE_VEC4,
    SMOOTHED_HINGE_HALF,
    /// Width γ of the quadratic piece (> 0).
    gamma: 1.0,
    "> 0",
    |v| v > 0.0
);

plain_loss!(
    /// Ramp loss (Collobert et al. 2006), z = y·s: the hinge clipped at 1 − s_cap.
    ///
    /// ```text
    /// loss_i = min(max(0, 1 − z), 1 − s_cap)
    /// ```
    /// # Shapes
    /// `scores`, `targets` (±1): any shape, equal. Defaults: s_cap −1.0 (< 1), reduction mean,
    /// grad_scale 1.
    Ramp,
    RAMP,
    RAMP_VEC4,
    RAMP_HALF,
    /// Score beyond which the loss stops growing (< 1).
    s_cap: -1.0,
    "< 1",
    |v| v < 1.0
);

plain_loss!(
    /// Exponential loss (AdaBoost).
    ///
    /// ```text
    /// loss_i = e^{−y_i s_i},  d/ds = −y_i e^{−y_i s_i}
    /// ```
    /// Overflows to inf where e^{−y s} exceeds the f32 range, as the math does.
    /// # Shapes
    /// `scores`, `targets` (±1): any shape, equal. Defaults: reduction mean, grad_scale 1.
    Exponential,
    EXPONENTIAL,
    EXPONENTIAL_VEC4,
    EXPONENTIAL_HALF
);
