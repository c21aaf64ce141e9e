// Helpers shared by the metric-learning kernels (in-batch losses, margin heads).

// torch F.normalize's eps: x / max(‖x‖, eps).
const NORM_EPS: f32 = 1e-12;

// Euclidean norm accumulated without overflow or underflow (LAPACK's nrm2): (scale, ssq) with
// norm = scale * sqrt(ssq). Start from vec2(0.0, 1.0); a NaN element makes the norm NaN.
fn nrm2_add(acc: vec2<f32>, x: f32) -> vec2<f32> {
    let a = abs(x);
    if (a == 0.0) {
        return acc;
    }
    if (acc.x < a) {
        let r = acc.x / a;
        return vec2<f32>(a, 1.0 + acc.y * r * r);
    }
    let r = a / acc.x;
    return vec2<f32>(acc.x, acc.y + r * r);
}

fn nrm2_value(acc: vec2<f32>) -> f32 {
    return acc.x * sqrt(acc.y);
}

// x / max(norm, eps) (one element of F.normalize), NaN for a NaN norm. A division, as torch
// does it: a one-dimensional row normalises to exactly ±1.
fn normalized(x: f32, norm: f32) -> f32 {
    if (is_nan(norm)) {
        return norm;
    }
    return x / max(norm, NORM_EPS);
}

// The backward of x̂ = x / max(‖x‖, eps) for one element: g_c - [‖x‖ ≥ eps] (g·x̂) x̂_c, over
// max(‖x‖, eps).
fn normalize_backward(g: f32, xhat: f32, dot: f32, norm: f32) -> f32 {
    if (norm >= NORM_EPS) {
        return (g - xhat * dot) / norm;
    }
    return g / NORM_EPS;
}
