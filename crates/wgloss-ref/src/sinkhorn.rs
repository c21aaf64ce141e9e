//! Optimal transport: geomloss's (debiased) Sinkhorn divergence between two weighted point
//! clouds, `SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, debias=debias)` with the
//! `"tensorized"` backend (the one geomloss picks for `N·M ≤ 5000²`).
//!
//! Followed from geomloss's `sinkhorn_divergence.py` (`max_diameter`, `epsilon_schedule`,
//! `scaling_parameters`, `sinkhorn_loop`, `sinkhorn_cost`) and `sinkhorn_samples.py`
//! (`softmin_tensorized`, `sinkhorn_tensorized`), balanced case (`reach = None`, damping 1):
//!
//! * cost `C(u, v) = ½‖u − v‖²` for `p = 2` and `√max(‖u − v‖², 1e-8)` for `p = 1` (geomloss's
//!   tensorized `distances` clamps the squared distance at `1e-8` before the square root, so
//!   `C(u, u) = 1e-4`, and the gradient is 0 wherever the clamp is active);
//! * the soft-min `softmin(ε, C, h)_i = −ε·log Σ_j exp(h_j − C_ij/ε)`;
//! * the ε-scaling schedule [`sinkhorn_epsilon_schedule`] from the bounding-box diameter
//!   [`sinkhorn_max_diameter`];
//! * the symmetric Sinkhorn loop ([`sinkhorn_potentials`]) and one last "extrapolation" step
//!   whose potentials are detached, through which the gradient is taken ([`sinkhorn`]).
//!
//! Everything is dense, `O(N·M + N² + M²)` memory.

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Ix1, Ix2};

use crate::{scalar, MultiGrad};

/// geomloss's clamp on the squared distance of the `p = 1` cost: `C = √max(‖u − v‖², 1e-8)`.
pub const SINKHORN_P1_MIN_SQDIST: f64 = 1e-8;

/// The hyper-parameters of geomloss's `SamplesLoss("sinkhorn", ...)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    /// Exponent of the cost `‖x − y‖^p / p`: 1 or 2.
    pub p: u32,
    /// Target blur scale: the final temperature is `ε = blur^p`. Must be > 0.
    pub blur: f64,
    /// Ratio between successive blur scales of the ε-scaling annealing, in (0, 1).
    pub scaling: f64,
    /// Debiased divergence `OT_ε(α,β) − ½OT_ε(α,α) − ½OT_ε(β,β)` (true) or raw `OT_ε(α,β)`.
    pub debias: bool,
}

impl Default for SinkhornConfig {
    /// geomloss's defaults: `p = 2, blur = 0.05, scaling = 0.5, debias = True`.
    fn default() -> Self {
        Self {
            p: 2,
            blur: 0.05,
            scaling: 0.5,
            debias: true,
        }
    }
}

/// The dual potentials at the end of the ε-scaling loop, before the final extrapolation
/// step (the values geomloss detaches in that step), and the schedule that produced them.
#[derive(Clone, Debug)]
pub struct SinkhornPotentials {
    /// `f_ba [N]`: potential on the `x_i` of the `α ↔ β` problem.
    pub f_ba: ArrayD<f64>,
    /// `g_ab [M]`: potential on the `y_j` of the `α ↔ β` problem.
    pub g_ab: ArrayD<f64>,
    /// `f_aa [N]` of the `α ↔ α` problem; `None` unless `debias`.
    pub f_aa: Option<ArrayD<f64>>,
    /// `g_bb [M]` of the `β ↔ β` problem; `None` unless `debias`.
    pub g_bb: Option<ArrayD<f64>>,
    /// The temperatures of the loop, [`sinkhorn_epsilon_schedule`]; the last one is
    /// `blur^p`, the temperature of the final extrapolation.
    pub eps_list: Vec<f64>,
}

/// geomloss's `max_diameter`: the Euclidean norm of the diagonal of the bounding box of both
/// clouds together, `‖max_k(x ∪ y) − min_k(x ∪ y)‖₂` (coordinate-wise min/max over every
/// point, zero-weight points included). `x [N, D]`, `y [M, D]`.
pub fn sinkhorn_max_diameter(x: ArrayViewD<'_, f64>, y: ArrayViewD<'_, f64>) -> f64 {
    let (x, y) = (points(x, "x"), points(y, "y"));
    assert_eq!(x.ncols(), y.ncols(), "x and y must have the same D");
    max_diameter(&x, &y)
}

/// geomloss's `epsilon_schedule`: the list of temperatures of the ε-scaling loop,
///
/// ```text
/// [diameter^p] + [exp(e) for e in np.arange(p·ln diameter, p·ln blur, p·ln scaling)] + [blur^p]
/// ```
///
/// with numpy's float `arange`: `n = ⌈(stop − start)/step⌉` values (none when that is ≤ 0,
/// e.g. `diameter ≤ blur`), `e_0 = start`, `e_1 = start + step`, `e_k = start + k·δ` with
/// `δ = e_1 − e_0` (numpy's `fill`). A zero diameter (every point at the same place, where geomloss itself fails on
/// `log 0`) gives `[blur^p]`: the costs are then constant and the loop needs no annealing.
///
/// Panics unless `p ∈ {1, 2}`, `blur > 0`, `0 < scaling < 1` and `diameter ≥ 0` (all finite).
pub fn sinkhorn_epsilon_schedule(p: u32, diameter: f64, blur: f64, scaling: f64) -> Vec<f64> {
    check_params(p, blur, scaling);
    assert!(
        diameter.is_finite() && diameter >= 0.0,
        "diameter must be finite and ≥ 0, got {diameter}"
    );
    let pf = p as f64;
    let blur_p = blur.powi(p as i32);
    if diameter == 0.0 {
        return vec![blur_p];
    }
    let (start, stop, step) = (pf * diameter.ln(), pf * blur.ln(), pf * scaling.ln());
    let len = ((stop - start) / step).ceil();
    let len = if len > 0.0 { len as usize } else { 0 };
    let delta = (start + step) - start;
    let mut eps_list = Vec::with_capacity(len + 2);
    eps_list.push(diameter.powi(p as i32));
    for k in 0..len {
        let e = match k {
            0 => start,
            1 => start + step,
            _ => start + k as f64 * delta,
        };
        eps_list.push(e.exp());
    }
    eps_list.push(blur_p);
    eps_list
}

/// The dual potentials of geomloss's `sinkhorn_loop` (tensorized, single scale, balanced)
/// before its final extrapolation step. With `ε_k` = [`sinkhorn_epsilon_schedule`]`(p,
/// diameter(x, y), blur, scaling)`, `ln α` / `ln β` the log-weights (−∞ for zero weights) and
/// `S(ε, C, h)_i = −ε·log Σ_j exp(h_j − C_ij/ε)`:
///
/// ```text
/// init at ε_0:  f_ba = S(ε_0, C_xy, ln β),  g_ab = S(ε_0, C_yx, ln α),
///               f_aa = S(ε_0, C_xx, ln α),  g_bb = S(ε_0, C_yy, ln β)
/// for ε in ε_0, ε_1, …, ε_last (= blur^p), simultaneously:
///     f_ba ← ½(f_ba + S(ε, C_xy, ln β + g_ab/ε)),  g_ab ← ½(g_ab + S(ε, C_yx, ln α + f_ba/ε))
///     f_aa ← ½(f_aa + S(ε, C_xx, ln α + f_aa/ε)),  g_bb ← ½(g_bb + S(ε, C_yy, ln β + g_bb/ε))
/// ```
///
/// (`f_aa`, `g_bb` only when `debias`). Arguments and panics as in [`sinkhorn`].
pub fn sinkhorn_potentials(
    x: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    a: Option<ArrayViewD<'_, f64>>,
    b: Option<ArrayViewD<'_, f64>>,
    config: &SinkhornConfig,
) -> SinkhornPotentials {
    let pr = Problem::new(x, y, a, b, config);
    pr.solve()
}

/// geomloss's Sinkhorn divergence between `α = Σ_i a_i δ_{x_i}` and `β = Σ_j b_j δ_{y_j}`,
/// `x [N, D]`, `y [M, D]`, weights `a [N]`, `b [M]` (default uniform `1/N`, `1/M`; they are
/// not normalised), and its gradient w.r.t. `x` and `y`.
///
/// With the loop potentials of [`sinkhorn_potentials`] (`f, g, f_aa, g_bb`, held fixed) and
/// `ε = blur^p`, the final extrapolation step is
///
/// ```text
/// F_i  = S(ε, C(x_i, y_·),  ln β + g/ε)      G_j  = S(ε, C(y_j, x_·),  ln α + f/ε)
/// Fa_i = S(ε, C(x_i, x_·),  ln α + f_aa/ε)   Gb_j = S(ε, C(y_j, y_·),  ln β + g_bb/ε)
/// loss = ⟨a, F − Fa⟩ + ⟨b, G − Gb⟩     (debias;   ⟨a, F⟩ + ⟨b, G⟩ without)
/// ```
///
/// The gradient is what torch's autograd gives through that step alone, as geomloss builds
/// it: the potentials are detached, and so is the second argument of every cost matrix
/// (`C_xy = cost(x, y.detach())`, `C_xx = cost(x, x.detach())`, …). With `π_ij` the soft-min
/// weights `softmax_j(h_j − C_ij/ε)` of each row:
///
/// ```text
/// ∂loss/∂x_i = a_i·[Σ_j π^F_ij ∇₁C(x_i, y_j) − Σ_k π^Fa_ik ∇₁C(x_i, x_k)]
/// ∂loss/∂y_j = b_j·[Σ_i π^G_ji ∇₁C(y_j, x_i) − Σ_l π^Gb_jl ∇₁C(y_j, y_l)]
/// ```
///
/// `∇₁C(u, v) = u − v` (p = 2), `(u − v)/‖u − v‖` (p = 1; 0 when `‖u − v‖² < 1e-8`, torch's
/// `clamp_min` backward). At convergence this is the envelope-theorem gradient of
/// `OT_ε(α,β) − ½OT_ε(α,α) − ½OT_ε(β,β)`: `x_i` enters `OT_ε(α,α)` through both arguments of
/// `C(x_i, x_k)`, which the factor ½ cancels, so the first argument alone gives it exactly
/// (counting both would double the `C_xx` term; the tests check the converged loss's finite
/// differences against this to ~1e-9). A zero-weight point therefore gets a zero
/// gradient, and drops out of every log-sum-exp (weight −∞ in log space; geomloss uses
/// `-1e5` instead of −∞, the same value in f64 unless some `C/ε` spread exceeds ~1e5). It
/// still counts in the diameter, hence in the schedule.
///
/// The solver is geomloss's balanced one: it expects equal total masses `Σa = Σb` (the
/// defaults, or normalised weights). With unequal masses the loop has no fixed point, the
/// potentials drift, and the value is whatever the schedule ends on (as in geomloss); the
/// gradient is then not the derivative of that value.
///
/// Returns the 0-d loss and `grad_scale ·` `[∂loss/∂x, ∂loss/∂y]`. Panics unless `x`, `y` are
/// 2-d with the same `D` and finite, the weights are finite, ≥ 0 with a positive sum and of
/// the right length, `p ∈ {1, 2}`, `blur > 0`, `0 < scaling < 1`.
pub fn sinkhorn(
    x: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    a: Option<ArrayViewD<'_, f64>>,
    b: Option<ArrayViewD<'_, f64>>,
    config: &SinkhornConfig,
    grad_scale: f64,
) -> MultiGrad {
    let pr = Problem::new(x, y, a, b, config);
    let pots = pr.solve();
    let (loss, gx, gy) = pr.extrapolate(&pr.x, &pr.y, &pots);
    MultiGrad {
        loss: scalar(loss),
        grads: vec![(gx * grad_scale).into_dyn(), (gy * grad_scale).into_dyn()],
    }
}

/// The final extrapolation step of [`sinkhorn`] at `(x0, y0)` as a function of live points `x`,
/// `y` (the first argument of every cost), with the loop's potentials and the costs' second
/// arguments held at `(x0, y0)`: the function whose derivative [`sinkhorn`]'s gradient is. At
/// `x = x0, y = y0` it returns exactly what [`sinkhorn`] returns. Arguments and panics as
/// there; `x`, `y` of the shapes of `x0`, `y0`.
#[allow(clippy::too_many_arguments)]
pub fn sinkhorn_final_step(
    x0: ArrayViewD<'_, f64>,
    y0: ArrayViewD<'_, f64>,
    a: Option<ArrayViewD<'_, f64>>,
    b: Option<ArrayViewD<'_, f64>>,
    config: &SinkhornConfig,
    x: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    grad_scale: f64,
) -> MultiGrad {
    let pr = Problem::new(x0, y0, a, b, config);
    let pots = pr.solve();
    let (xq, yq) = (points(x, "x"), points(y, "y"));
    assert_eq!(xq.shape(), pr.x.shape(), "x must have the shape of x0");
    assert_eq!(yq.shape(), pr.y.shape(), "y must have the shape of y0");
    let (loss, gx, gy) = pr.extrapolate(&xq, &yq, &pots);
    MultiGrad {
        loss: scalar(loss),
        grads: vec![(gx * grad_scale).into_dyn(), (gy * grad_scale).into_dyn()],
    }
}

fn check_params(p: u32, blur: f64, scaling: f64) {
    assert!(p == 1 || p == 2, "p must be 1 or 2, got {p}");
    assert!(
        blur.is_finite() && blur > 0.0,
        "blur must be finite and > 0, got {blur}"
    );
    assert!(
        scaling > 0.0 && scaling < 1.0,
        "scaling must be in (0, 1), got {scaling}"
    );
}

fn points(x: ArrayViewD<'_, f64>, name: &str) -> Array2<f64> {
    assert_eq!(x.ndim(), 2, "{name} must be [rows, D], got {:?}", x.shape());
    let x = x
        .into_dimensionality::<Ix2>()
        .expect("2-d checked")
        .to_owned();
    assert!(x.iter().all(|v| v.is_finite()), "{name} must be finite");
    x
}

fn weights(w: Option<ArrayViewD<'_, f64>>, n: usize, name: &str) -> Array1<f64> {
    let w = match w {
        None => Array1::from_elem(n, 1.0 / n as f64),
        Some(w) => {
            assert_eq!(w.shape(), &[n], "{name} must be [{n}], got {:?}", w.shape());
            w.into_dimensionality::<Ix1>()
                .expect("1-d checked")
                .to_owned()
        }
    };
    assert!(
        w.iter().all(|v| v.is_finite() && *v >= 0.0),
        "{name} must be finite and ≥ 0"
    );
    assert!(w.sum() > 0.0, "{name} must have a positive sum");
    w
}

fn max_diameter(x: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let d = x.ncols();
    let mut sq = 0.0;
    for k in 0..d {
        let col = x.column(k).into_iter().chain(y.column(k));
        let (lo, hi) = col.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        sq += (hi - lo) * (hi - lo);
    }
    sq.sqrt()
}

fn sqdist(u: ArrayView1<'_, f64>, v: ArrayView1<'_, f64>) -> f64 {
    u.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// `C` from the squared distance.
fn cost(p: u32, d2: f64) -> f64 {
    if p == 2 {
        d2 / 2.0
    } else {
        d2.max(SINKHORN_P1_MIN_SQDIST).sqrt()
    }
}

/// `∇₁C(u, v) = factor · (u − v)`.
fn cost_grad_factor(p: u32, d2: f64) -> f64 {
    if p == 2 {
        1.0
    } else if d2 >= SINKHORN_P1_MIN_SQDIST {
        1.0 / d2.sqrt()
    } else {
        0.0
    }
}

fn cost_matrix(u: &Array2<f64>, v: &Array2<f64>, p: u32) -> Array2<f64> {
    Array2::from_shape_fn((u.nrows(), v.nrows()), |(i, j)| {
        cost(p, sqdist(u.row(i), v.row(j)))
    })
}

/// `log Σ exp(v)`, −∞ when every value is −∞.
fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}

/// `S(ε, C, h)_i = −ε·logsumexp_j(h_j − C_ij/ε)`.
fn softmin(eps: f64, c: ArrayView2<'_, f64>, h: &Array1<f64>) -> Array1<f64> {
    let mut row = vec![0.0; c.ncols()];
    Array1::from_iter(c.rows().into_iter().map(|ci| {
        for ((r, &cij), &hj) in row.iter_mut().zip(ci).zip(h) {
            *r = hj - cij / eps;
        }
        -eps * logsumexp(&row)
    }))
}

/// `ln w + f/ε`.
fn shifted(log_w: &Array1<f64>, f: &Array1<f64>, eps: f64) -> Array1<f64> {
    log_w + &(f / eps)
}

fn average(f: &Array1<f64>, ft: &Array1<f64>) -> Array1<f64> {
    0.5 * (f + ft)
}

/// One soft-min of the final step with live query points `u` against fixed points `v`:
/// `S_i = S(ε, C(u_i, v_·), h)_i` and `∂(Σ_i w_i S_i)/∂u_i = w_i Σ_j π_ij ∇₁C(u_i, v_j)`.
fn softmin_with_grad(
    eps: f64,
    p: u32,
    u: &Array2<f64>,
    v: &Array2<f64>,
    h: &Array1<f64>,
    w: &Array1<f64>,
) -> (Array1<f64>, Array2<f64>) {
    let (n, m) = (u.nrows(), v.nrows());
    let mut s = Array1::zeros(n);
    let mut grad = Array2::zeros(u.raw_dim());
    let mut vals = vec![0.0; m];
    let mut d2s = vec![0.0; m];
    for i in 0..n {
        for j in 0..m {
            d2s[j] = sqdist(u.row(i), v.row(j));
            vals[j] = h[j] - cost(p, d2s[j]) / eps;
        }
        let lse = logsumexp(&vals);
        s[i] = -eps * lse;
        if w[i] == 0.0 {
            continue;
        }
        let mut gi = grad.row_mut(i);
        for j in 0..m {
            let pij = (vals[j] - lse).exp();
            let factor = w[i] * pij * cost_grad_factor(p, d2s[j]);
            if factor != 0.0 {
                gi.scaled_add(factor, &(&u.row(i) - &v.row(j)));
            }
        }
    }
    (s, grad)
}

struct Problem {
    x: Array2<f64>,
    y: Array2<f64>,
    a: Array1<f64>,
    b: Array1<f64>,
    a_log: Array1<f64>,
    b_log: Array1<f64>,
    p: u32,
    blur: f64,
    scaling: f64,
    debias: bool,
}

impl Problem {
    fn new(
        x: ArrayViewD<'_, f64>,
        y: ArrayViewD<'_, f64>,
        a: Option<ArrayViewD<'_, f64>>,
        b: Option<ArrayViewD<'_, f64>>,
        config: &SinkhornConfig,
    ) -> Self {
        check_params(config.p, config.blur, config.scaling);
        let (x, y) = (points(x, "x"), points(y, "y"));
        assert_eq!(
            x.ncols(),
            y.ncols(),
            "x and y must have the same D, got {:?} and {:?}",
            x.shape(),
            y.shape()
        );
        let a = weights(a, x.nrows(), "a");
        let b = weights(b, y.nrows(), "b");
        let log = |w: &Array1<f64>| w.mapv(|v| if v > 0.0 { v.ln() } else { f64::NEG_INFINITY });
        Self {
            a_log: log(&a),
            b_log: log(&b),
            x,
            y,
            a,
            b,
            p: config.p,
            blur: config.blur,
            scaling: config.scaling,
            debias: config.debias,
        }
    }

    fn solve(&self) -> SinkhornPotentials {
        let diameter = max_diameter(&self.x, &self.y);
        self.solve_with(sinkhorn_epsilon_schedule(
            self.p,
            diameter,
            self.blur,
            self.scaling,
        ))
    }

    /// The loop of [`sinkhorn_potentials`] over a given schedule.
    fn solve_with(&self, eps_list: Vec<f64>) -> SinkhornPotentials {
        let p = self.p;
        let c_xy = cost_matrix(&self.x, &self.y, p);
        let c_yx = c_xy.t();
        let sym = self.debias.then(|| {
            (
                cost_matrix(&self.x, &self.x, p),
                cost_matrix(&self.y, &self.y, p),
            )
        });

        let eps0 = eps_list[0];
        let mut g_ab = softmin(eps0, c_yx, &self.a_log);
        let mut f_ba = softmin(eps0, c_xy.view(), &self.b_log);
        let mut self_pots = sym.as_ref().map(|(c_xx, c_yy)| {
            (
                softmin(eps0, c_xx.view(), &self.a_log),
                softmin(eps0, c_yy.view(), &self.b_log),
            )
        });
        for &eps in &eps_list {
            let ft_ba = softmin(eps, c_xy.view(), &shifted(&self.b_log, &g_ab, eps));
            let gt_ab = softmin(eps, c_yx, &shifted(&self.a_log, &f_ba, eps));
            if let (Some((c_xx, c_yy)), Some((f_aa, g_bb))) = (&sym, &mut self_pots) {
                let ft_aa = softmin(eps, c_xx.view(), &shifted(&self.a_log, f_aa, eps));
                let gt_bb = softmin(eps, c_yy.view(), &shifted(&self.b_log, g_bb, eps));
                *f_aa = average(f_aa, &ft_aa);
                *g_bb = average(g_bb, &gt_bb);
            }
            f_ba = average(&f_ba, &ft_ba);
            g_ab = average(&g_ab, &gt_ab);
        }
        let (f_aa, g_bb) = match self_pots {
            Some((f, g)) => (Some(f.into_dyn()), Some(g.into_dyn())),
            None => (None, None),
        };
        SinkhornPotentials {
            f_ba: f_ba.into_dyn(),
            g_ab: g_ab.into_dyn(),
            f_aa,
            g_bb,
            eps_list,
        }
    }

    /// The final extrapolation step with live points `xq`, `yq` (the first argument of every
    /// cost) against this problem's points (the detached second argument) and the fixed
    /// potentials `pots`: `(loss, ∂loss/∂xq, ∂loss/∂yq)`, not scaled.
    fn extrapolate(
        &self,
        xq: &Array2<f64>,
        yq: &Array2<f64>,
        pots: &SinkhornPotentials,
    ) -> (f64, Array2<f64>, Array2<f64>) {
        let p = self.p;
        let eps = *pots.eps_list.last().expect("schedule is never empty");
        let vec1 = |f: &ArrayD<f64>| {
            f.view()
                .into_dimensionality::<Ix1>()
                .expect("potentials are 1-d")
                .to_owned()
        };
        let (f_ba, g_ab) = (vec1(&pots.f_ba), vec1(&pots.g_ab));
        let (f, gx) = softmin_with_grad(
            eps,
            p,
            xq,
            &self.y,
            &shifted(&self.b_log, &g_ab, eps),
            &self.a,
        );
        let (g, gy) = softmin_with_grad(
            eps,
            p,
            yq,
            &self.x,
            &shifted(&self.a_log, &f_ba, eps),
            &self.b,
        );
        if !self.debias {
            return (self.a.dot(&f) + self.b.dot(&g), gx, gy);
        }
        let f_aa = vec1(pots.f_aa.as_ref().expect("debias potentials"));
        let g_bb = vec1(pots.g_bb.as_ref().expect("debias potentials"));
        let (fa, gxa) = softmin_with_grad(
            eps,
            p,
            xq,
            &self.x,
            &shifted(&self.a_log, &f_aa, eps),
            &self.a,
        );
        let (gb, gyb) = softmin_with_grad(
            eps,
            p,
            yq,
            &self.y,
            &shifted(&self.b_log, &g_bb, eps),
            &self.b,
        );
        let loss = self.a.dot(&(&f - &fa)) + self.b.dot(&(&g - &gb));
        (loss, gx - gxa, gy - gyb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{all_finite, check_fd, close, loss_of, Rng, GS};
    use ndarray::{arr1, arr2, Axis};

    fn cfg(p: u32, blur: f64, scaling: f64, debias: bool) -> SinkhornConfig {
        SinkhornConfig {
            p,
            blur,
            scaling,
            debias,
        }
    }

    /// Random positive weights summing to 1 (balanced OT needs equal masses).
    fn positive_weights(rng: &mut Rng, n: usize) -> ArrayD<f64> {
        let w = ArrayD::from_shape_fn(ndarray::IxDyn(&[n]), |_| rng.uniform(0.2, 1.0));
        let total = w.sum();
        w / total
    }

    fn run(
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        a: Option<&ArrayD<f64>>,
        b: Option<&ArrayD<f64>>,
        c: &SinkhornConfig,
    ) -> MultiGrad {
        sinkhorn(
            x.view(),
            y.view(),
            a.map(|a| a.view()),
            b.map(|b| b.view()),
            c,
            GS,
        )
    }

    #[test]
    fn schedule_matches_numpy_arange() {
        // 2·ln 2 down to 2·ln 0.05 by 2·ln 0.5: ⌈5.32⌉ = 6 values, e^{2 ln 2 − 2k ln 2} = 4/4^k.
        let e = sinkhorn_epsilon_schedule(2, 2.0, 0.05, 0.5);
        let want = [4.0, 4.0, 1.0, 0.25, 0.0625, 0.015625, 0.00390625, 0.0025];
        assert_eq!(e.len(), want.len(), "{e:?}");
        for (g, w) in e.iter().zip(want) {
            assert!(close(*g, w, 1e-14, 0.0), "{e:?}");
        }
        // p = 1, diameter below blur: no annealing values.
        assert_eq!(
            sinkhorn_epsilon_schedule(1, 0.01, 0.05, 0.5),
            vec![0.01, 0.05]
        );
        // diameter 3, blur 0.05, scaling 0.5, p = 1: ⌈ln 60 / ln 2⌉ = 6 values.
        let e = sinkhorn_epsilon_schedule(1, 3.0, 0.05, 0.5);
        assert_eq!(e.len(), 8);
        assert!(close(e[1], 3.0, 1e-15, 0.0) && close(e[6], 3.0 / 32.0, 1e-14, 0.0));
        assert_eq!(sinkhorn_epsilon_schedule(2, 0.0, 0.5, 0.5), vec![0.25]);
    }

    #[test]
    fn diameter_is_bounding_box_diagonal() {
        let x = arr2(&[[0.0, 1.0], [2.0, -1.0]]).into_dyn();
        let y = arr2(&[[1.0, 3.0]]).into_dyn();
        // box [0, 2] × [−1, 3]: √(4 + 16).
        assert!(close(
            sinkhorn_max_diameter(x.view(), y.view()),
            20f64.sqrt(),
            1e-15,
            0.0
        ));
    }

    /// The gradient is exactly the derivative of the final extrapolation step with the
    /// potentials and the cost's second arguments held fixed.
    #[test]
    fn gradient_is_derivative_of_final_step() {
        let mut rng = Rng(11);
        for (n, m, d, p, debias, weighted) in [
            (4, 3, 2, 2, true, false),
            (3, 5, 1, 2, true, true),
            (4, 4, 3, 1, true, true),
            (5, 3, 2, 1, false, false),
            (3, 4, 3, 2, false, true),
            (1, 1, 2, 2, true, false),
        ] {
            let x = rng.matrix(n, d);
            let y = rng.matrix(m, d);
            let a = weighted.then(|| positive_weights(&mut rng, n));
            let b = weighted.then(|| positive_weights(&mut rng, m));
            let c = cfg(p, 0.3, 0.5, debias);
            let pr = Problem::new(
                x.view(),
                y.view(),
                a.as_ref().map(|a| a.view()),
                b.as_ref().map(|b| b.view()),
                &c,
            );
            let pots = pr.solve();
            let full = run(&x, &y, a.as_ref(), b.as_ref(), &c);
            let label = format!("n{n} m{m} d{d} p{p} debias {debias}");
            check_fd(&label, &[x.clone(), y.clone()], |inp| {
                let xq = inp[0]
                    .view()
                    .into_dimensionality::<Ix2>()
                    .unwrap()
                    .to_owned();
                let yq = inp[1]
                    .view()
                    .into_dimensionality::<Ix2>()
                    .unwrap()
                    .to_owned();
                let (loss, gx, gy) = pr.extrapolate(&xq, &yq, &pots);
                MultiGrad {
                    loss: scalar(loss),
                    grads: vec![(gx * GS).into_dyn(), (gy * GS).into_dyn()],
                }
            });
            // The public function is that step at the unperturbed points.
            let (loss, gx, gy) = pr.extrapolate(&pr.x, &pr.y, &pots);
            assert_eq!(loss_of(&full), loss, "{label}");
            assert_eq!(full.grads[0], (gx * GS).into_dyn(), "{label}");
            assert_eq!(full.grads[1], (gy * GS).into_dyn(), "{label}");
        }
    }

    /// `(loss, ∂loss/∂x, ∂loss/∂y)` (× GS) of [`sinkhorn`] with `extra` more loop iterations
    /// at the final ε appended to geomloss's schedule.
    fn run_longer(
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        a: Option<&ArrayD<f64>>,
        c: &SinkhornConfig,
        extra: usize,
    ) -> MultiGrad {
        let pr = Problem::new(x.view(), y.view(), a.map(|a| a.view()), None, c);
        let mut eps = sinkhorn_epsilon_schedule(c.p, max_diameter(&pr.x, &pr.y), c.blur, c.scaling);
        let last = *eps.last().unwrap();
        eps.extend(std::iter::repeat_n(last, extra));
        let pots = pr.solve_with(eps);
        let (loss, gx, gy) = pr.extrapolate(&pr.x, &pr.y, &pots);
        MultiGrad {
            loss: scalar(loss),
            grads: vec![(gx * GS).into_dyn(), (gy * GS).into_dyn()],
        }
    }

    /// FD of the whole loss (loop included) against the analytic gradient, `|fd − g| ≤ tol ·
    /// max|g|`, `h = 1e-5`.
    fn check_full_fd(
        label: &str,
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        tol: f64,
        f: impl Fn(&ArrayD<f64>, &ArrayD<f64>) -> MultiGrad,
    ) {
        let out = f(x, y);
        assert!(all_finite(&out), "{label}");
        let largest = out
            .grads
            .iter()
            .flat_map(|g| g.iter())
            .fold(0.0f64, |acc, v| acc.max(v.abs()));
        for (which, g) in out.grads.iter().enumerate() {
            for (i, &gi) in g.iter().enumerate() {
                let h = 1e-5;
                let at = |delta: f64| {
                    let mut pts = [x.clone(), y.clone()];
                    pts[which].as_slice_mut().unwrap()[i] += delta;
                    loss_of(&f(&pts[0], &pts[1]))
                };
                let fd = GS * (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (fd - gi).abs() <= tol * largest,
                    "{label}: input {which} element {i}: fd {fd} vs {gi}"
                );
            }
        }
    }

    /// Envelope theorem: once the loop has converged, the gradient through the final step alone
    /// (second cost arguments detached) is the derivative of the whole loss. Run to convergence
    /// by 150 extra iterations at the final ε, it matches within 1e-6·max|g| (~1e-9
    /// typically); counting the second argument of `C(x_i, x_k)` as well would be off by the
    /// whole `C_xx` term.
    #[test]
    fn gradient_is_derivative_of_converged_loss() {
        let mut rng = Rng(5);
        for (n, m, d, p, debias, blur) in [
            (5, 4, 2, 2, true, 0.5),
            (4, 5, 3, 1, true, 0.3),
            (4, 3, 1, 2, false, 0.5),
            (3, 4, 2, 1, false, 0.5),
            (4, 4, 2, 2, true, 1.0),
        ] {
            let x = rng.matrix(n, d);
            let y = rng.matrix(m, d);
            let a = positive_weights(&mut rng, n);
            let c = cfg(p, blur, 0.5, debias);
            let label = format!("p{p} debias {debias} blur {blur}");
            check_full_fd(&label, &x, &y, 1e-6, |x, y| {
                run_longer(x, y, Some(&a), &c, 150)
            });
        }
    }

    /// geomloss's own schedule is not run to convergence; with slow annealing (scaling 0.99)
    /// and a blur comparable to the data the FD of the whole loss is still close.
    #[test]
    fn gradient_roughly_matches_full_loss_with_geomloss_schedule() {
        let mut rng = Rng(6);
        for (p, debias) in [(2, true), (1, true), (2, false)] {
            let x = rng.matrix(4, 2);
            let y = rng.matrix(3, 2);
            let c = cfg(p, 1.0, 0.99, debias);
            check_full_fd(&format!("p{p} debias {debias}"), &x, &y, 1e-2, |x, y| {
                run(x, y, None, None, &c)
            });
        }
    }

    #[test]
    fn same_cloud_gives_zero() {
        let mut rng = Rng(3);
        for p in [1, 2] {
            let x = rng.matrix(6, 2);
            let a = positive_weights(&mut rng, 6);
            for a in [None, Some(&a)] {
                let out = run(
                    &x,
                    &x,
                    a,
                    a,
                    &SinkhornConfig {
                        p,
                        ..Default::default()
                    },
                );
                assert!(loss_of(&out).abs() < 1e-12, "p{p}: {}", loss_of(&out));
                assert!(all_finite(&out));
                // d/dx of S(α, β) at β = α is 0 for x, and for y.
                for g in &out.grads {
                    assert!(g.iter().all(|v| v.abs() < 1e-9), "p{p}: {g}");
                }
            }
        }
    }

    #[test]
    fn symmetric_in_its_arguments() {
        let mut rng = Rng(8);
        for p in [1, 2] {
            for debias in [true, false] {
                let x = rng.matrix(5, 3);
                let y = rng.matrix(4, 3);
                let a = positive_weights(&mut rng, 5);
                let b = positive_weights(&mut rng, 4);
                let c = cfg(p, 0.05, 0.5, debias);
                let xy = run(&x, &y, Some(&a), Some(&b), &c);
                let yx = run(&y, &x, Some(&b), Some(&a), &c);
                assert!(close(loss_of(&xy), loss_of(&yx), 1e-12, 1e-14));
                for (g1, g2) in xy.grads.iter().zip(yx.grads.iter().rev()) {
                    for (u, v) in g1.iter().zip(g2) {
                        assert!(close(*u, *v, 1e-10, 1e-14));
                    }
                }
            }
        }
    }

    /// For the quadratic cost, translating a measure by `t` splits off separable terms:
    /// `OT_ε(α, α_t) = OT_ε(α, α) + ½‖t‖²` (equal masses), so the debiased divergence is
    /// exactly `½‖t‖²` at convergence, for any ε, with gradient `∓a_i t` on the points.
    #[test]
    fn translation_gives_half_squared_shift() {
        let mut rng = Rng(21);
        let x = rng.matrix(6, 2);
        let a = positive_weights(&mut rng, 6);
        let t = arr1(&[0.3, -0.2]);
        let y = (&x + &t.view().insert_axis(Axis(0))).into_dyn();
        let out = run(&x, &y, Some(&a), Some(&a), &cfg(2, 0.5, 0.9, true));
        let want = 0.5 * t.dot(&t);
        assert!(
            close(loss_of(&out), want, 1e-4, 0.0),
            "{} vs {want}",
            loss_of(&out)
        );
        for i in 0..6 {
            for k in 0..2 {
                let gx = out.grads[0][[i, k]];
                let gy = out.grads[1][[i, k]];
                assert!(close(gx, -GS * a[i] * t[k], 1e-3, 1e-6), "{gx}");
                assert!(close(gy, GS * a[i] * t[k], 1e-3, 1e-6), "{gy}");
            }
        }
    }

    #[test]
    fn zero_weight_points_change_nothing() {
        let mut rng = Rng(13);
        for p in [1, 2] {
            for debias in [true, false] {
                let x = rng.matrix(4, 2);
                let y = rng.matrix(5, 2);
                let a = positive_weights(&mut rng, 4);
                let b = positive_weights(&mut rng, 5);
                // Insert a zero-weight point inside the bounding box at index 2 of each cloud.
                let mut xz = x.clone().into_dimensionality::<Ix2>().unwrap();
                let mid = xz.mean_axis(Axis(0)).unwrap();
                let mut rows: Vec<_> = xz.rows().into_iter().map(|r| r.to_owned()).collect();
                rows.insert(2, mid.clone());
                xz = ndarray::stack(Axis(0), &rows.iter().map(|r| r.view()).collect::<Vec<_>>())
                    .unwrap();
                let mut az = a.iter().copied().collect::<Vec<_>>();
                az.insert(2, 0.0);
                let yz = ndarray::concatenate(
                    Axis(0),
                    &[
                        y.view().into_dimensionality::<Ix2>().unwrap(),
                        mid.view().insert_axis(Axis(0)),
                    ],
                )
                .unwrap();
                let mut bz = b.iter().copied().collect::<Vec<_>>();
                bz.push(0.0);
                let c = cfg(p, 0.1, 0.5, debias);
                let base = run(&x, &y, Some(&a), Some(&b), &c);
                let (xz, yz) = (xz.into_dyn(), yz.into_dyn());
                let (az, bz) = (arr1(&az).into_dyn(), arr1(&bz).into_dyn());
                let with = run(&xz, &yz, Some(&az), Some(&bz), &c);
                assert!(all_finite(&with));
                assert!(close(loss_of(&with), loss_of(&base), 1e-13, 1e-15));
                let (gx, gy) = (&with.grads[0], &with.grads[1]);
                assert!(gx.index_axis(Axis(0), 2).iter().all(|&v| v == 0.0));
                assert!(gy.index_axis(Axis(0), 5).iter().all(|&v| v == 0.0));
                for i in 0..4 {
                    let iz = if i < 2 { i } else { i + 1 };
                    for k in 0..2 {
                        assert!(close(gx[[iz, k]], base.grads[0][[i, k]], 1e-12, 1e-15));
                    }
                }
                for j in 0..5 {
                    for k in 0..2 {
                        assert!(close(gy[[j, k]], base.grads[1][[j, k]], 1e-12, 1e-15));
                    }
                }
            }
        }
    }

    /// Two Diracs: the only plan is `π = 1`, so `OT_ε(δ_x, δ_y) = C(x, y)` and the debiased
    /// divergence is `C(x, y) − ½C(x, x) − ½C(y, y)`: `½‖x − y‖²` for p = 2 and `‖x − y‖ −
    /// 1e-4` for p = 1 (the clamped `C(x, x)`).
    #[test]
    fn single_points() {
        let x = arr2(&[[0.5, -1.0, 2.0]]).into_dyn();
        let y = arr2(&[[1.5, 1.0, 0.0]]).into_dyn();
        let diff = [-1.0, -2.0, 2.0];
        let dist = 3.0;
        for p in [1, 2] {
            for debias in [true, false] {
                let out = run(&x, &y, None, None, &cfg(p, 0.05, 0.5, debias));
                let mut want = if p == 2 { 0.5 * dist * dist } else { dist };
                if debias && p == 1 {
                    want -= 1e-4;
                }
                assert!(
                    close(loss_of(&out), want, 1e-13, 1e-15),
                    "p{p} {}",
                    loss_of(&out)
                );
                let factor = if p == 2 { 1.0 } else { 1.0 / dist };
                for (k, dk) in diff.iter().enumerate() {
                    assert!(close(out.grads[0][[0, k]], GS * factor * dk, 1e-12, 1e-15));
                    assert!(close(out.grads[1][[0, k]], -GS * factor * dk, 1e-12, 1e-15));
                }
            }
        }
    }

    #[test]
    fn one_dimension_and_geomloss_defaults() {
        let mut rng = Rng(31);
        for d in [1, 3] {
            let x = rng.matrix(7, d);
            let y = rng.matrix(6, d);
            for p in [1, 2] {
                let out = run(
                    &x,
                    &y,
                    None,
                    None,
                    &SinkhornConfig {
                        p,
                        ..Default::default()
                    },
                );
                assert!(all_finite(&out));
                assert!(loss_of(&out) > 0.0);
                // The divergence is positive and grows with the distance between the clouds.
                let far = y.mapv(|v| v + 3.0);
                let out_far = run(
                    &x,
                    &far,
                    None,
                    None,
                    &SinkhornConfig {
                        p,
                        ..Default::default()
                    },
                );
                assert!(loss_of(&out_far) > loss_of(&out));
            }
        }
    }

    #[test]
    fn grad_scale_multiplies_gradients() {
        let mut rng = Rng(2);
        let x = rng.matrix(3, 2);
        let y = rng.matrix(4, 2);
        let c = SinkhornConfig::default();
        let one = sinkhorn(x.view(), y.view(), None, None, &c, 1.0);
        let two = sinkhorn(x.view(), y.view(), None, None, &c, -2.0);
        assert_eq!(loss_of(&one), loss_of(&two));
        for (g1, g2) in one.grads.iter().zip(&two.grads) {
            assert_eq!(&(g1 * -2.0), g2);
        }
    }

    #[test]
    fn potentials_have_the_right_shapes() {
        let mut rng = Rng(4);
        let x = rng.matrix(3, 2);
        let y = rng.matrix(5, 2);
        let pots = sinkhorn_potentials(x.view(), y.view(), None, None, &SinkhornConfig::default());
        assert_eq!(pots.f_ba.shape(), &[3]);
        assert_eq!(pots.g_ab.shape(), &[5]);
        assert_eq!(pots.f_aa.as_ref().unwrap().shape(), &[3]);
        assert_eq!(pots.g_bb.as_ref().unwrap().shape(), &[5]);
        assert_eq!(*pots.eps_list.last().unwrap(), 0.05f64.powi(2));
        let raw = sinkhorn_potentials(
            x.view(),
            y.view(),
            None,
            None,
            &SinkhornConfig {
                debias: false,
                ..Default::default()
            },
        );
        assert!(raw.f_aa.is_none() && raw.g_bb.is_none());
        assert_eq!(raw.f_ba, pots.f_ba);
    }

    /// The public final step at the loop's own points is `sinkhorn` itself, and moving the
    /// live points changes it (the loop stays frozen).
    #[test]
    fn final_step_at_its_points_is_sinkhorn() {
        let mut rng = Rng(12);
        let (x, y) = (rng.matrix(4, 2), rng.matrix(3, 2));
        let c = cfg(1, 0.3, 0.5, true);
        let full = run(&x, &y, None, None, &c);
        let step = sinkhorn_final_step(x.view(), y.view(), None, None, &c, x.view(), y.view(), GS);
        assert_eq!(loss_of(&full), loss_of(&step));
        assert_eq!(full.grads, step.grads);
        let moved = &x + 0.1;
        let other = sinkhorn_final_step(
            x.view(),
            y.view(),
            None,
            None,
            &c,
            moved.view(),
            y.view(),
            GS,
        );
        assert_ne!(loss_of(&full), loss_of(&other));
    }

    #[test]
    #[should_panic(expected = "p must be 1 or 2")]
    fn rejects_p3() {
        let x = arr2(&[[0.0]]).into_dyn();
        let _ = sinkhorn(x.view(), x.view(), None, None, &cfg(3, 0.1, 0.5, true), 1.0);
    }

    #[test]
    #[should_panic(expected = "positive sum")]
    fn rejects_all_zero_weights() {
        let x = arr2(&[[0.0], [1.0]]).into_dyn();
        let a = arr1(&[0.0, 0.0]).into_dyn();
        let _ = sinkhorn(
            x.view(),
            x.view(),
            Some(a.view()),
            None,
            &SinkhornConfig::default(),
            1.0,
        );
    }

    #[test]
    #[should_panic(expected = "same D")]
    fn rejects_dimension_mismatch() {
        let x = arr2(&[[0.0, 1.0]]).into_dyn();
        let y = arr2(&[[0.0]]).into_dyn();
        let _ = sinkhorn(
            x.view(),
            y.view(),
            None,
            None,
            &SinkhornConfig::default(),
            1.0,
        );
    }
}
