//! Scalar functions the reference's losses share.

/// `ln(1 + eˣ)` without overflow; NaN for NaN.
pub(crate) fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `σ(x) = 1 / (1 + e^{−x})` without overflow; NaN for NaN.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Binary cross-entropy of logit `x` against target `t ∈ [0, 1]` with positive weight `pw`, and
/// its derivative in `x`: torch's `(1 − t)·x + (1 + (pw − 1)·t)·softplus(−x)` and
/// `(1 − t) − (1 + (pw − 1)·t)·σ(−x)`, evaluated as
/// `(1 − t)·max(x, 0) + pw·t·max(−x, 0) + (1 + (pw − 1)·t)·ln(1 + e^{−|x|})` (non-negative terms)
/// and `(1 − t)·σ(x) − pw·t·σ(−x)`, which keep their relative precision for confident predictions.
pub(crate) fn bce_logit(x: f64, t: f64, pw: f64) -> (f64, f64) {
    let loss = (1.0 - t) * x.max(0.0)
        + pw * t * (-x).max(0.0)
        + (1.0 + (pw - 1.0) * t) * (-x.abs()).exp().ln_1p();
    (loss, (1.0 - t) * sigmoid(x) - pw * t * sigmoid(-x))
}

/// `sign(x)`: ±1, 0 at 0, NaN for NaN.
pub(crate) fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else if x == 0.0 {
        0.0
    } else {
        f64::NAN
    }
}
