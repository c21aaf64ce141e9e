//! F2, bounding boxes: IoU-family losses of predicted boxes `[N, 4]` against target boxes.
//!
//! Every pair is computed in `(x1, y1, x2, y2)` coordinates: `(cx, cy, w, h)` inputs are first
//! turned into `x1 = cx − w/2, y1 = cy − h/2, x2 = cx + w/2, y2 = cy + h/2`, and the gradient is
//! chained back (`∂/∂cx = ∂/∂x1 + ∂/∂x2`, `∂/∂w = (∂/∂x2 − ∂/∂x1)/2`, likewise in y).
//!
//! Shared quantities, for a prediction `(x1, y1, x2, y2)` and a target `(x̂1, ŷ1, x̂2, ŷ2)`:
//!
//! ```text
//! iw = min(x2, x̂2) − max(x1, x̂1),  ih = min(y2, ŷ2) − max(y1, ŷ1)
//! inter = iw·ih if iw > 0 and ih > 0, else 0          (torchvision `_loss_inter_union`)
//! union = w·h + ŵ·ĥ − inter,  IoU = inter / (union + eps)
//! cw = max(x2, x̂2) − min(x1, x̂1),  ch = max(y2, ŷ2) − min(y1, ŷ1)   (enclosing box)
//! ρ² = (cx − ĉx)² + (cy − ĉy)²   (squared distance of the centres)
//! ```
//!
//! Gradient conventions at the kinks: a `min`/`max` of a predicted and a target coordinate that
//! tie splits the gradient evenly between them, as torch's `maximum`/`minimum` do (so identical
//! boxes, a minimum of every IoU loss, get a zero gradient from the overlap terms); the
//! intersection is the constant 0 (zero gradient) as soon as `iw ≤ 0` or `ih ≤ 0`, boxes that
//! only touch included; `|x|` has derivative 0 at 0; a clamp passes the gradient on its
//! boundary, as torch's `clamp` does.
//!
//! With `eps > 0` every loss and gradient is finite for degenerate boxes (zero width and/or
//! height, identical, touching or disjoint boxes); the few quotients whose denominator has no
//! eps in the anchors and can be 0 for such boxes (`atan(w/h)` at `w = h = 0`, SIoU's shape
//! ratio at `w = ŵ = 0` and its angle at coincident offsets) are given the value 0 and a zero
//! gradient there. `eps = 0` reproduces the anchors' `0/0 = NaN` on degenerate boxes. A NaN
//! coordinate makes that pair's loss and gradient NaN.

use std::f64::consts::{FRAC_1_SQRT_2, FRAC_PI_2, PI};

use ndarray::{ArrayD, ArrayViewD, Ix2, IxDyn};

use crate::{scalar, LossGrad, Reduction};

/// Box coordinate format of `[N, 4]` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoxFormat {
    /// `(x1, y1, x2, y2)`, corners.
    Xyxy,
    /// `(cx, cy, w, h)`, centre and size.
    Cxcywh,
}

/// Which box loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoxKind {
    /// `1 − IoU`.
    Iou,
    /// Generalised IoU (torchvision `generalized_box_iou_loss`).
    Giou,
    /// Distance IoU (torchvision `distance_box_iou_loss`).
    Diou,
    /// Complete IoU (torchvision `complete_box_iou_loss`).
    Ciou,
    /// Efficient IoU (Zhang et al. 2021).
    Eiou,
    /// SCYLLA IoU (mmdet `siou_loss`, `neg_gamma = False`).
    Siou,
}

/// Partial derivatives w.r.t. the prediction's `(x1, y1, x2, y2)`.
type Grad4 = [f64; 4];

/// A value and its gradient w.r.t. the prediction.
type Val = (f64, Grad4);

const ZERO: Grad4 = [0.0; 4];
const X1: usize = 0;
const Y1: usize = 1;
const X2: usize = 2;
const Y2: usize = 3;

/// Gradient of the prediction's width `x2 − x1` and height `y2 − y1`.
const G_W: Grad4 = [-1.0, 0.0, 1.0, 0.0];
const G_H: Grad4 = [0.0, -1.0, 0.0, 1.0];

/// `a·ga + b·gb`.
fn comb(a: f64, ga: Grad4, b: f64, gb: Grad4) -> Grad4 {
    std::array::from_fn(|i| a * ga[i] + b * gb[i])
}

/// `n / d` and its gradient, `(∇n − q·∇d) / d`.
fn quot((n, gn): Val, (d, gd): Val) -> Val {
    let q = n / d;
    (q, comb(1.0 / d, gn, -q / d, gd))
}

/// `a − b`.
fn sub((a, ga): Val, (b, gb): Val) -> Val {
    (a - b, comb(1.0, ga, -1.0, gb))
}

/// `x²`.
fn square((x, g): Val) -> Val {
    (x * x, comb(2.0 * x, g, 0.0, ZERO))
}

/// Sign with 0 at 0 (the derivative of `|x|` used throughout).
fn sgn(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The prediction's coordinate `a` (index `k`) as a value with gradient `e_k`.
fn coord(a: f64, k: usize) -> Val {
    let mut g = ZERO;
    g[k] = 1.0;
    (a, g)
}

/// `max(a, b)` of the prediction's coordinate `a` (index `k`) and a target coordinate `b`;
/// a tie takes half of each.
fn max_pt(a: f64, k: usize, b: f64) -> Val {
    pick(coord(a, k), (b, ZERO), a.total_cmp(&b).is_ge())
}

/// `min(a, b)`, as [`max_pt`].
fn min_pt(a: f64, k: usize, b: f64) -> Val {
    pick(coord(a, k), (b, ZERO), a.total_cmp(&b).is_le())
}

/// `a` if `take_a` and the values differ, `b` if not, and at a tie `a`'s value with half of
/// each gradient.
fn pick(a: Val, b: Val, take_a: bool) -> Val {
    if a.0 == b.0 {
        (a.0, comb(0.5, a.1, 0.5, b.1))
    } else if take_a {
        a
    } else {
        b
    }
}

/// `atan(w / h)` as torchvision writes it (equal to `atan2(w, h)` for `h ≥ 0`), with its
/// partials `(h, −w) / (w² + h²)`; `w = h = 0` gives 0 and zero partials instead of NaN.
fn aspect_angle(w: f64, h: f64) -> (f64, f64, f64) {
    if w == 0.0 && h == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    // Scale before squaring so tiny or huge sides neither underflow nor overflow.
    let s = w.abs().max(h.abs());
    let (wn, hn) = (w / s, h / s);
    let r2 = wn * wn + hn * hn;
    ((w / h).atan(), hn / (s * r2), -wn / (s * r2))
}

/// What every kind needs, computed once per pair.
struct Geometry {
    /// `inter / (union + eps)`.
    iou: Val,
    /// `w·h + ŵ·ĥ − inter` (no eps).
    union: Val,
    /// Enclosing box width and height.
    cw: Val,
    ch: Val,
    /// Predicted minus target centre, in x and in y.
    dcx: Val,
    dcy: Val,
    /// Predicted width and height, target width and height.
    w: f64,
    h: f64,
    wt: f64,
    ht: f64,
}

impl Geometry {
    fn new(p: [f64; 4], t: [f64; 4], eps: f64) -> Self {
        let [x1, y1, x2, y2] = p;
        let [tx1, ty1, tx2, ty2] = t;
        let iw = sub(min_pt(x2, X2, tx2), max_pt(x1, X1, tx1));
        let ih = sub(min_pt(y2, Y2, ty2), max_pt(y1, Y1, ty1));
        let inter = if iw.0 > 0.0 && ih.0 > 0.0 {
            (iw.0 * ih.0, comb(ih.0, iw.1, iw.0, ih.1))
        } else {
            (0.0, ZERO)
        };
        let (w, h, wt, ht) = (x2 - x1, y2 - y1, tx2 - tx1, ty2 - ty1);
        let area = (w * h, comb(h, G_W, w, G_H));
        let union = sub((area.0 + wt * ht, area.1), inter);
        let iou = quot(inter, (union.0 + eps, union.1));
        let cw = sub(max_pt(x2, X2, tx2), min_pt(x1, X1, tx1));
        let ch = sub(max_pt(y2, Y2, ty2), min_pt(y1, Y1, ty1));
        let dcx = ((x2 + x1) / 2.0 - (tx1 + tx2) / 2.0, [0.5, 0.0, 0.5, 0.0]);
        let dcy = ((y2 + y1) / 2.0 - (ty1 + ty2) / 2.0, [0.0, 0.5, 0.0, 0.5]);
        Geometry {
            iou,
            union,
            cw,
            ch,
            dcx,
            dcy,
            w,
            h,
            wt,
            ht,
        }
    }

    /// DIoU loss `1 − IoU + ρ² / (cw² + ch² + eps)`.
    fn diou(&self, eps: f64) -> Val {
        let (cw2, ch2) = (square(self.cw), square(self.ch));
        let c2 = (cw2.0 + ch2.0 + eps, comb(1.0, cw2.1, 1.0, ch2.1));
        let (dx2, dy2) = (square(self.dcx), square(self.dcy));
        let rho2 = (dx2.0 + dy2.0, comb(1.0, dx2.1, 1.0, dy2.1));
        let d = quot(rho2, c2);
        (1.0 - self.iou.0 + d.0, comb(-1.0, self.iou.1, 1.0, d.1))
    }

    /// CIoU's `v = 4/π²·(atan(ŵ/ĥ) − atan(w/h))²`.
    fn ciou_v(&self) -> Val {
        let (at, _, _) = aspect_angle(self.wt, self.ht);
        let (ap, dw, dh) = aspect_angle(self.w, self.h);
        let k = 4.0 / (PI * PI);
        let delta = at - ap;
        // ∂v/∂(w, h) = −(8/π²)·δ·∂atan(w/h)/∂(w, h).
        let gd = comb(dw, G_W, dh, G_H);
        (k * delta * delta, comb(-2.0 * k * delta, gd, 0.0, ZERO))
    }

    /// CIoU's `α = v / (1 − IoU + v + eps)` (IoU from a geometry of [`CIOU_GEOMETRY_EPS`]).
    fn ciou_alpha(&self, eps: f64) -> f64 {
        let v = self.ciou_v().0;
        v / (1.0 - self.iou.0 + v + eps)
    }
}

/// The eps of CIoU's IoU and DIoU term whatever its `eps` (torchvision's default: its
/// `complete_box_iou_loss` passes `eps` to α alone).
const CIOU_GEOMETRY_EPS: f64 = 1e-7;

/// One pair's loss and its gradient w.r.t. the prediction, both in `xyxy`. For CIoU,
/// `frozen_alpha` replaces the computed α (the finite-difference check holds it fixed).
fn pair_loss(kind: BoxKind, p: [f64; 4], t: [f64; 4], eps: f64, frozen_alpha: Option<f64>) -> Val {
    if p.iter().chain(t.iter()).any(|x| x.is_nan()) {
        return (f64::NAN, [f64::NAN; 4]);
    }
    let geometry_eps = if kind == BoxKind::Ciou {
        CIOU_GEOMETRY_EPS
    } else {
        eps
    };
    let g = Geometry::new(p, t, geometry_eps);
    match kind {
        BoxKind::Iou => (1.0 - g.iou.0, comb(-1.0, g.iou.1, 0.0, ZERO)),
        BoxKind::Giou => {
            let area_c = (g.cw.0 * g.ch.0, comb(g.ch.0, g.cw.1, g.cw.0, g.ch.1));
            let pen = quot(sub(area_c, g.union), (area_c.0 + eps, area_c.1));
            (1.0 - g.iou.0 + pen.0, comb(-1.0, g.iou.1, 1.0, pen.1))
        }
        BoxKind::Diou => g.diou(eps),
        BoxKind::Ciou => {
            let d = g.diou(CIOU_GEOMETRY_EPS);
            let v = g.ciou_v();
            let alpha = frozen_alpha.unwrap_or_else(|| g.ciou_alpha(eps));
            (d.0 + alpha * v.0, comb(1.0, d.1, alpha, v.1))
        }
        BoxKind::Eiou => {
            let d = g.diou(eps);
            let (cw2, ch2) = (square(g.cw), square(g.ch));
            let rw = quot(square((g.w - g.wt, G_W)), (cw2.0 + eps, cw2.1));
            let rh = quot(square((g.h - g.ht, G_H)), (ch2.0 + eps, ch2.1));
            let terms = comb(1.0, rw.1, 1.0, rh.1);
            (d.0 + rw.0 + rh.0, comb(1.0, d.1, 1.0, terms))
        }
        BoxKind::Siou => siou_pair(&g, eps),
    }
}

/// SIoU as mmdet's `siou_loss` with `neg_gamma = False`, eps where mmdet puts it.
fn siou_pair(g: &Geometry, eps: f64) -> Val {
    let siou = siou_unclamped(g, eps);
    if (-1.0..=1.0).contains(&siou.0) {
        (1.0 - siou.0, comb(-1.0, siou.1, 0.0, ZERO))
    } else {
        (1.0 - siou.0.clamp(-1.0, 1.0), ZERO)
    }
}

/// The SIoU value `IoU − (Δ + Ω)/2` of one pair in `format`, before mmdet's clamp to
/// [−1, 1] (where its gradient drops to 0).
pub fn siou_unclamped_value(p: [f64; 4], t: [f64; 4], format: BoxFormat, eps: f64) -> f64 {
    let g = Geometry::new(to_xyxy(format, p), to_xyxy(format, t), eps);
    siou_unclamped(&g, eps).0
}

fn siou_unclamped(g: &Geometry, eps: f64) -> Val {
    // Enclosing size clamped below at eps ("clamp(min=eps) to avoid NaN").
    let clamp_eps = |c: Val| if c.0 >= eps { c } else { (eps, ZERO) };
    let (cw, ch) = (clamp_eps(g.cw), clamp_eps(g.ch));
    // Target minus predicted centre, plus eps.
    let s_cw = (eps - g.dcx.0, comb(-1.0, g.dcx.1, 0.0, ZERO));
    let s_ch = (eps - g.dcy.0, comb(-1.0, g.dcy.1, 0.0, ZERO));
    // Angle cost Λ = cos(2·asin(sin α) − π/2), sin α the smaller of |s_cw|/σ, |s_ch|/σ.
    let sigma2 = s_cw.0 * s_cw.0 + s_ch.0 * s_ch.0;
    let sin_alpha = if sigma2 == 0.0 {
        (0.0, ZERO)
    } else {
        let sigma = sigma2.sqrt();
        let g_sigma = comb(s_cw.0 / sigma, s_cw.1, s_ch.0 / sigma, s_ch.1);
        let ratio = |(s, gs): Val| quot((s.abs(), comb(sgn(s), gs, 0.0, ZERO)), (sigma, g_sigma));
        let sin1 = ratio(s_cw);
        // mmdet's threshold `pow(2, 0.5) / 2`; a tie keeps |s_cw|/σ.
        if sin1.0 > FRAC_1_SQRT_2 {
            ratio(s_ch)
        } else {
            sin1
        }
    };
    let phase = 2.0 * sin_alpha.0.asin() - FRAC_PI_2;
    let d_angle = -phase.sin() * 2.0 / (1.0 - sin_alpha.0 * sin_alpha.0).sqrt();
    let angle = (phase.cos(), comb(d_angle, sin_alpha.1, 0.0, ZERO));
    // Distance cost Δ = 2 − e^{γρx} − e^{γρy}, γ = 2 − Λ (mmdet's `neg_gamma = False` sign).
    let gamma = (2.0 - angle.0, comb(-1.0, angle.1, 0.0, ZERO));
    let exp_term = |rho: Val| {
        let e = (gamma.0 * rho.0).exp();
        (e, comb(e * rho.0, gamma.1, e * gamma.0, rho.1))
    };
    let ex = exp_term(square(quot(s_cw, cw)));
    let ey = exp_term(square(quot(s_ch, ch)));
    let distance = (2.0 - ex.0 - ey.0, comb(-1.0, ex.1, -1.0, ey.1));
    // Shape cost Ω = Σ (1 − e^{−ω})⁴, ω = |a − â| / max(a, â), heights with eps added.
    let omega = |(a, ga): Val, b: f64| {
        let m = pick((a, ga), (b, ZERO), a >= b);
        if m.0 == 0.0 {
            (0.0, ZERO)
        } else {
            quot(((a - b).abs(), comb(sgn(a - b), ga, 0.0, ZERO)), m)
        }
    };
    let shape_term = |(o, go): Val| {
        let e = (-o).exp();
        let q = 1.0 - e;
        (q.powi(4), comb(4.0 * q.powi(3) * e, go, 0.0, ZERO))
    };
    let sw = shape_term(omega((g.w, G_W), g.wt));
    let sh = shape_term(omega((g.h + eps, G_H), g.ht + eps));
    let shape = (sw.0 + sh.0, comb(1.0, sw.1, 1.0, sh.1));
    // SIoU = IoU − (Δ + Ω)/2, clamped to [−1, 1] by the caller; loss = 1 − SIoU.
    let penalty = comb(0.5, distance.1, 0.5, shape.1);
    (
        g.iou.0 - 0.5 * (distance.0 + shape.0),
        comb(1.0, g.iou.1, -1.0, penalty),
    )
}

/// `b` in `xyxy`.
fn to_xyxy(format: BoxFormat, b: [f64; 4]) -> [f64; 4] {
    match format {
        BoxFormat::Xyxy => b,
        BoxFormat::Cxcywh => {
            let [cx, cy, w, h] = b;
            [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
        }
    }
}

/// A gradient w.r.t. `xyxy` chained to the coordinates of `format`.
fn grad_from_xyxy(format: BoxFormat, g: Grad4) -> Grad4 {
    match format {
        BoxFormat::Xyxy => g,
        BoxFormat::Cxcywh => [
            g[X1] + g[X2],
            g[Y1] + g[Y2],
            0.5 * (g[X2] - g[X1]),
            0.5 * (g[Y2] - g[Y1]),
        ],
    }
}

/// [`pair_loss`] on boxes given in `format`, gradient in `format`.
fn pair_loss_in(
    kind: BoxKind,
    format: BoxFormat,
    p: [f64; 4],
    t: [f64; 4],
    eps: f64,
    frozen_alpha: Option<f64>,
) -> Val {
    let (loss, g) = pair_loss(
        kind,
        to_xyxy(format, p),
        to_xyxy(format, t),
        eps,
        frozen_alpha,
    );
    (loss, grad_from_xyxy(format, g))
}

/// Box regression losses, per pair of boxes (see the module docs for IoU, `cw`, `ch`, `ρ²`):
///
/// ```text
/// iou   1 − IoU
/// giou  1 − IoU + (C − union) / (C + eps),  C = cw·ch
/// diou  1 − IoU + ρ² / (cw² + ch² + eps)
/// ciou  diou + α·v,  v = 4/π²·(atan(ŵ/ĥ) − atan(w/h))²,  α = v / (1 − IoU + v + eps),
///       α held constant in the backward (torch.no_grad)
/// eiou  diou + (w − ŵ)² / (cw² + eps) + (h − ĥ)² / (ch² + eps)
/// siou  1 − clamp(IoU − (Δ + Ω)/2, −1, 1)
///       Δ = 2 − e^{γρx} − e^{γρy},  γ = 2 − Λ,  ρx = (sx / max(cw, eps))², ρy likewise,
///       sx = ĉx − cx + eps,  sy = ĉy − cy + eps,  σ = √(sx² + sy²),
///       Λ = cos(2·asin(s) − π/2),  s = |sy|/σ if |sx|/σ > √2/2 else |sx|/σ,
///       Ω = (1 − e^{−ωw})⁴ + (1 − e^{−ωh})⁴,  ωw = |w − ŵ| / max(w, ŵ),
///       ωh likewise with eps added to both heights
/// ```
///
/// Anchors: torchvision `generalized_box_iou_loss`, `distance_box_iou_loss`,
/// `complete_box_iou_loss` (eps 1e-7 in the union and enclosing-box denominators, exactly
/// there), and mmdet `siou_loss` with `neg_gamma = False`, whose eps placement this follows
/// verbatim. Note that with `neg_gamma = False` mmdet's Δ is ≤ 0 (`e^{+γρ} ≥ 1`), so a larger
/// centre distance lowers the loss until the clamp makes it 0 with a zero gradient; the paper
/// (and `neg_gamma = True`) has `e^{−γρ}`. No library ships Efficient-IoU (mmdet's `eiou_loss`
/// is the unrelated Extended-IoU, a smooth-L1 of `1 − IoU`); its eps follows the usual YOLO
/// form `cw² + eps`, `ch² + eps`, the same additive eps torchvision puts on `c²`.
///
/// `pred`, `target`: `[N, 4]`. Returns the loss (per box `[N]` under `None`, else 0-d; mean over
/// boxes, 0 for N = 0) and the gradient w.r.t. `pred` (`[N, 4]`, in the input's format, i.e. for
/// cxcywh the gradient w.r.t. (cx, cy, w, h)), times grad_scale (divided by N under mean).
pub fn box_loss(
    kind: BoxKind,
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss_with(kind, pred, target, format, eps, None, reduction, grad_scale)
}

/// CIoU's α of each pair, `v / (1 − IoU + v + eps)`.
pub fn ciou_alphas(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
) -> Vec<f64> {
    let rows = |a: &ArrayViewD<'_, f64>| -> Vec<[f64; 4]> {
        a.as_standard_layout()
            .as_slice()
            .expect("standard layout")
            .chunks_exact(4)
            .map(|c| to_xyxy(format, [c[0], c[1], c[2], c[3]]))
            .collect()
    };
    rows(&pred)
        .into_iter()
        .zip(rows(&target))
        .map(|(p, t)| Geometry::new(p, t, CIOU_GEOMETRY_EPS).ciou_alpha(eps))
        .collect()
}

/// CIoU with α given per pair (as [`ciou_alphas`] returns it) rather than computed: the loss as
/// the backward sees it, for finite differences.
#[allow(clippy::too_many_arguments)]
pub fn ciou_with_alpha(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    alpha: &[f64],
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss_with(
        BoxKind::Ciou,
        pred,
        target,
        format,
        eps,
        Some(alpha),
        reduction,
        grad_scale,
    )
}

#[allow(clippy::too_many_arguments)]
fn box_loss_with(
    kind: BoxKind,
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    alpha: Option<&[f64]>,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    assert_eq!(
        pred.shape(),
        target.shape(),
        "pred and target shapes differ"
    );
    assert!(
        pred.ndim() == 2 && pred.shape()[1] == 4,
        "boxes must be [N, 4], got {:?}",
        pred.shape()
    );
    assert!(eps >= 0.0, "eps must be non-negative, got {eps}");
    let pred = pred.into_dimensionality::<Ix2>().expect("checked 2-d");
    let target = target.into_dimensionality::<Ix2>().expect("checked 2-d");
    let n = pred.nrows();
    let scale = match reduction {
        Reduction::Mean if n > 0 => grad_scale / n as f64,
        _ => grad_scale,
    };
    let mut losses = Vec::with_capacity(n);
    let mut grad = Vec::with_capacity(4 * n);
    for (i, (p, t)) in pred.rows().into_iter().zip(target.rows()).enumerate() {
        let (p, t) = ([p[0], p[1], p[2], p[3]], [t[0], t[1], t[2], t[3]]);
        let (loss, g) = pair_loss_in(kind, format, p, t, eps, alpha.map(|a| a[i]));
        losses.push(loss);
        grad.extend(g.iter().map(|d| scale * d));
    }
    let grad = ArrayD::from_shape_vec(IxDyn(&[n, 4]), grad).expect("length matches shape");
    let loss = match reduction {
        Reduction::None => ArrayD::from_shape_vec(IxDyn(&[n]), losses).expect("length matches"),
        Reduction::Sum => scalar(losses.iter().sum()),
        Reduction::Mean if n == 0 => scalar(0.0),
        Reduction::Mean => scalar(losses.iter().sum::<f64>() / n as f64),
    };
    LossGrad { loss, grad }
}

/// `1 − IoU` (torchvision `box_iou`, IoU = inter / (union + eps)); see [`box_loss`].
pub fn iou(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss(
        BoxKind::Iou,
        pred,
        target,
        format,
        eps,
        reduction,
        grad_scale,
    )
}

/// `1 − IoU + (C − union) / (C + eps)` (torchvision `generalized_box_iou_loss`); see [`box_loss`].
pub fn giou(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss(
        BoxKind::Giou,
        pred,
        target,
        format,
        eps,
        reduction,
        grad_scale,
    )
}

/// `1 − IoU + ρ² / (c² + eps)` (torchvision `distance_box_iou_loss`); see [`box_loss`].
pub fn diou(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss(
        BoxKind::Diou,
        pred,
        target,
        format,
        eps,
        reduction,
        grad_scale,
    )
}

/// `diou + α·v`, α constant in the backward (torchvision `complete_box_iou_loss`); see
/// [`box_loss`].
pub fn ciou(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss(
        BoxKind::Ciou,
        pred,
        target,
        format,
        eps,
        reduction,
        grad_scale,
    )
}

/// `diou + (w − ŵ)² / (cw² + eps) + (h − ĥ)² / (ch² + eps)` (Efficient IoU); see [`box_loss`].
pub fn eiou(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss(
        BoxKind::Eiou,
        pred,
        target,
        format,
        eps,
        reduction,
        grad_scale,
    )
}

/// `1 − clamp(IoU − (Δ + Ω)/2, −1, 1)` (mmdet `siou_loss`, `neg_gamma = False`); see
/// [`box_loss`].
pub fn siou(
    pred: ArrayViewD<'_, f64>,
    target: ArrayViewD<'_, f64>,
    format: BoxFormat,
    eps: f64,
    reduction: Reduction,
    grad_scale: f64,
) -> LossGrad {
    box_loss(
        BoxKind::Siou,
        pred,
        target,
        format,
        eps,
        reduction,
        grad_scale,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identical boxes are a minimum of every overlap loss: with ties split evenly, as torch's
    /// `maximum`/`minimum` do, the gradient there is zero (up to eps's own contribution).
    #[test]
    fn identical_boxes_have_a_zero_gradient() {
        let b = ndarray::arr2(&[[1.0, 2.0, 4.0, 3.5]]).into_dyn();
        for kind in [
            BoxKind::Iou,
            BoxKind::Giou,
            BoxKind::Diou,
            BoxKind::Ciou,
            BoxKind::Eiou,
        ] {
            let out = box_loss(
                kind,
                b.view(),
                b.view(),
                BoxFormat::Xyxy,
                1e-7,
                Reduction::Sum,
                1.0,
            );
            assert!(out.loss[[]].abs() < 1e-6, "{kind:?}: {}", out.loss[[]]);
            assert!(
                out.grad.iter().all(|g| g.abs() < 1e-6),
                "{kind:?}: {:?}",
                out.grad
            );
        }
    }
    use ndarray::Array2;

    const EPS: f64 = 1e-7;
    const KINDS: [BoxKind; 6] = [
        BoxKind::Iou,
        BoxKind::Giou,
        BoxKind::Diou,
        BoxKind::Ciou,
        BoxKind::Eiou,
        BoxKind::Siou,
    ];
    const FORMATS: [BoxFormat; 2] = [BoxFormat::Xyxy, BoxFormat::Cxcywh];

    /// Marsaglia's xorshift64, enough for reproducible test boxes.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            lo + (hi - lo) * (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A target box and a prediction that overlaps it (`mode` 0), is disjoint from it (1) or
    /// is nested inside or around it (2), in `xyxy`.
    fn random_case(rng: &mut Rng, mode: usize) -> ([f64; 4], [f64; 4]) {
        let (tx, ty) = (rng.uniform(-5.0, 5.0), rng.uniform(-5.0, 5.0));
        let (tw, th) = (rng.uniform(0.5, 5.0), rng.uniform(0.5, 5.0));
        let t = [tx, ty, tx + tw, ty + th];
        let p = match mode {
            0 => {
                let (cx, cy) = (tx + tw / 2.0, ty + th / 2.0);
                let (cx, cy) = (
                    cx + rng.uniform(-0.4, 0.4) * tw,
                    cy + rng.uniform(-0.4, 0.4) * th,
                );
                let (w, h) = (tw * rng.uniform(0.5, 1.5), th * rng.uniform(0.5, 1.5));
                [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
            }
            1 => {
                let (w, h) = (rng.uniform(0.3, 5.0), rng.uniform(0.3, 5.0));
                let gap = rng.uniform(0.2, 3.0);
                let side = rng.uniform(0.0, 4.0) as usize;
                let (x, y) = match side {
                    0 => (tx + tw + gap, ty + rng.uniform(-3.0, 3.0)),
                    1 => (tx - w - gap, ty + rng.uniform(-3.0, 3.0)),
                    2 => (tx + rng.uniform(-3.0, 3.0), ty + th + gap),
                    _ => (tx + rng.uniform(-3.0, 3.0), ty - h - gap),
                };
                [x, y, x + w, y + h]
            }
            _ => {
                if rng.uniform(0.0, 1.0) < 0.5 {
                    let f = |r: &mut Rng| r.uniform(0.05, 0.3);
                    [
                        tx + f(rng) * tw,
                        ty + f(rng) * th,
                        tx + tw - f(rng) * tw,
                        ty + th - f(rng) * th,
                    ]
                } else {
                    let f = |r: &mut Rng| r.uniform(0.1, 2.0);
                    [tx - f(rng), ty - f(rng), tx + tw + f(rng), ty + th + f(rng)]
                }
            }
        };
        (p, t)
    }

    fn from_xyxy(format: BoxFormat, b: [f64; 4]) -> [f64; 4] {
        match format {
            BoxFormat::Xyxy => b,
            BoxFormat::Cxcywh => [
                (b[0] + b[2]) / 2.0,
                (b[1] + b[3]) / 2.0,
                b[2] - b[0],
                b[3] - b[1],
            ],
        }
    }

    /// Which side of every kink (min/max tie, intersection clamp, SIoU's abs, switch and
    /// clamps) the pair is on; a coordinate whose ±1e-4 moves change it is not FD-checked.
    fn kink_sides(kind: BoxKind, p: [f64; 4], t: [f64; 4]) -> Vec<bool> {
        let mut k = vec![
            p[0] - t[0],
            p[1] - t[1],
            p[2] - t[2],
            p[3] - t[3],
            p[2].min(t[2]) - p[0].max(t[0]),
            p[3].min(t[3]) - p[1].max(t[1]),
        ];
        if kind == BoxKind::Siou {
            let g = Geometry::new(p, t, EPS);
            let (sx, sy) = (EPS - g.dcx.0, EPS - g.dcy.0);
            k.extend([
                g.w - g.wt,
                g.h - g.ht,
                sx,
                sy,
                sx.abs() / sx.hypot(sy) - FRAC_1_SQRT_2,
                g.cw.0 - EPS,
                g.ch.0 - EPS,
                pair_loss(kind, p, t, EPS, None).0,
            ]);
        }
        k.iter().map(|&x| x > 0.0).collect()
    }

    fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
    }

    #[test]
    fn box_grads_match_finite_differences() {
        let h = 1e-6;
        for kind in KINDS {
            for format in FORMATS {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
                let (mut checked, mut total, mut worst) = (0, 0, 0.0f64);
                for case in 0..30 {
                    let (p, t) = random_case(&mut rng, case % 3);
                    let (p, t) = (from_xyxy(format, p), from_xyxy(format, t));
                    let (p_xy, t_xy) = (to_xyxy(format, p), to_xyxy(format, t));
                    let alpha = Geometry::new(p_xy, t_xy, EPS).ciou_alpha(EPS);
                    let (_, grad) = pair_loss_in(kind, format, p, t, EPS, None);
                    let sides = kink_sides(kind, p_xy, t_xy);
                    for k in 0..4 {
                        total += 1;
                        let moved = |d: f64| {
                            let mut q = p;
                            q[k] += d;
                            q
                        };
                        let near_kink = [-1e-4, 1e-4]
                            .iter()
                            .any(|&d| kink_sides(kind, to_xyxy(format, moved(d)), t_xy) != sides);
                        if near_kink {
                            continue;
                        }
                        let f =
                            |d: f64| pair_loss_in(kind, format, moved(d), t, EPS, Some(alpha)).0;
                        let fd = (f(h) - f(-h)) / (2.0 * h);
                        assert!(
                            close(grad[k], fd, 1e-5, 1e-8),
                            "{kind:?} {format:?} case {case} coord {k}: analytic {} vs FD {fd} \
                             (pred {p:?}, target {t:?})",
                            grad[k]
                        );
                        worst = worst.max((grad[k] - fd).abs());
                        checked += 1;
                    }
                }
                assert!(
                    checked * 10 >= total * 8,
                    "{kind:?} {format:?}: only {checked} of {total} coordinates away from kinks"
                );
                assert!(worst.is_finite());
            }
        }
    }

    #[test]
    fn box_loss_rows_match_the_pair_function_and_formats_agree() {
        let mut rng = Rng(42);
        let cases: Vec<_> = (0..12).map(|i| random_case(&mut rng, i % 3)).collect();
        for kind in KINDS {
            for format in FORMATS {
                let rows = |side: usize| {
                    let flat = cases
                        .iter()
                        .flat_map(|c| from_xyxy(format, if side == 0 { c.0 } else { c.1 }))
                        .collect();
                    Array2::from_shape_vec((cases.len(), 4), flat)
                        .unwrap()
                        .into_dyn()
                };
                let (p, t) = (rows(0), rows(1));
                let out = box_loss(kind, p.view(), t.view(), format, EPS, Reduction::None, 2.0);
                assert_eq!(out.loss.shape(), &[cases.len()]);
                assert_eq!(out.grad.shape(), &[cases.len(), 4]);
                for (i, (pc, tc)) in cases.iter().enumerate() {
                    let (pi, ti) = (from_xyxy(format, *pc), from_xyxy(format, *tc));
                    let (l, g) = pair_loss_in(kind, format, pi, ti, EPS, None);
                    assert_eq!(out.loss[[i]], l);
                    for (k, gk) in g.iter().enumerate() {
                        assert_eq!(out.grad[[i, k]], 2.0 * gk);
                    }
                    // The same boxes in xyxy give the same loss.
                    let (lx, _) = pair_loss(kind, *pc, *tc, EPS, None);
                    assert!(close(l, lx, 1e-12, 1e-12), "{kind:?} {format:?} row {i}");
                }
            }
        }
    }

    fn one(kind: BoxKind, p: [f64; 4], t: [f64; 4]) -> f64 {
        pair_loss(kind, p, t, EPS, None).0
    }

    #[test]
    fn box_losses_at_hand_computed_points() {
        // Identical boxes: IoU = 12 / (12 + eps), no distance, shape or aspect penalty.
        let b = [1.0, 2.0, 4.0, 6.0];
        for kind in KINDS {
            let l = one(kind, b, b);
            assert!((0.0..1e-7).contains(&l), "{kind:?} identical: {l}");
        }
        // Disjoint unit boxes side by side one apart: IoU 0, union 2, enclosing box 3 x 1, so
        // giou = 1 + (3 − 2)/(3 + eps) ≈ 4/3, and moving the right edge of the prediction
        // right shrinks the gap: ∂/∂x2 = −∂union/∂x2 / (3 + eps) = −1/(3 + eps).
        let (p, t) = ([0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0]);
        let (l, g) = pair_loss(BoxKind::Giou, p, t, EPS, None);
        assert!((l - (1.0 + 1.0 / (3.0 + EPS))).abs() < 1e-15);
        assert!((g[X2] + 1.0 / (3.0 + EPS)).abs() < 1e-15);
        assert_eq!(one(BoxKind::Iou, p, t), 1.0);
        // DIoU of (0,0,2,2) against (1,1,3,3): inter = 1, union = 4 + 4 − 1 = 7, IoU = 1/7;
        // enclosing box (0,0,3,3), c² = 9 + 9 = 18; centres (1,1) and (2,2), ρ² = 2;
        // loss = 1 − 1/7 + 2/18 = 61/63 ≈ 0.968254.
        let (p, t) = ([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]);
        let diou = 1.0 - 1.0 / (7.0 + EPS) + 2.0 / (18.0 + EPS);
        assert!((one(BoxKind::Diou, p, t) - diou).abs() < 1e-15);
        assert!((diou - 61.0 / 63.0).abs() < 1e-7);
        // Both are squares of equal size: v = 0 and no width/height penalty.
        assert!((one(BoxKind::Ciou, p, t) - diou).abs() < 1e-15);
        assert!((one(BoxKind::Eiou, p, t) - diou).abs() < 1e-15);
        // EIoU of (0,0,2,1) against (0,0,1,1): IoU = 1/2, enclosing 2 x 1, ρ² = 0.5² = 0.25,
        // c² = 5, (w − ŵ)²/cw² = 1/4, heights equal: 1 − 0.5 + 0.05 + 0.25 = 0.8.
        let (p, t) = ([0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]);
        assert!((one(BoxKind::Eiou, p, t) - 0.8).abs() < 1e-7);
        // CIoU there: v = 4/π²·(atan 1 − atan 2)², α = v/(1 − 1/2 + v).
        let v = 4.0 / (PI * PI) * (1f64.atan() - 2f64.atan()).powi(2);
        let ciou = 1.0 - 0.5 + 0.05 + v * v / (0.5 + v);
        assert!((one(BoxKind::Ciou, p, t) - ciou).abs() < 1e-7);
        // SIoU there: centres differ by 0.5 in x only, so sin α ≈ 1 > √2/2 picks |sy|/σ ≈ 0,
        // Λ ≈ 0, γ ≈ 2, ρx = (0.5/2)², ρy ≈ 0: Δ ≈ 2 − e^{2/16} − 1; ωw = 1/2, ωh = 0.
        let siou = 1.0 - 0.5 + 0.5 * (1.0 - 0.125f64.exp() + (1.0 - (-0.5f64).exp()).powi(4));
        assert!((one(BoxKind::Siou, p, t) - siou).abs() < 1e-6);
    }

    #[test]
    fn siou_with_mmdet_sign_clamps_far_boxes_to_zero() {
        // mmdet's neg_gamma = False makes Δ ≤ 0: far apart boxes reach the clamp at SIoU = 1.
        let (p, t) = ([0.0, 0.0, 1.0, 1.0], [20.0, 0.0, 21.0, 1.0]);
        let (l, g) = pair_loss(BoxKind::Siou, p, t, EPS, None);
        assert_eq!(l, 0.0);
        assert_eq!(g, ZERO);
    }

    #[test]
    fn degenerate_boxes_give_finite_loss_and_grad() {
        let cases: [([f64; 4], [f64; 4]); 14] = [
            ([1.0, 0.5, 1.0, 1.5], [0.0, 0.0, 2.0, 2.0]), // zero-width prediction inside
            ([0.5, 1.0, 1.5, 1.0], [0.0, 0.0, 2.0, 2.0]), // zero-height prediction
            ([0.0, 0.0, 2.0, 2.0], [1.0, 0.5, 1.0, 1.5]), // zero-width target
            ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]), // point prediction
            ([1.0, 0.0, 1.0, 2.0], [1.0, 0.0, 1.0, 2.0]), // identical zero-width boxes
            ([1.0, 0.0, 1.0, 2.0], [1.0, 3.0, 1.0, 5.0]), // zero-width boxes on one line
            ([0.0, 1.0, 2.0, 1.0], [3.0, 1.0, 5.0, 1.0]), // zero-height boxes on one line
            ([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]), // identical points
            ([1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 3.0, 2.0]), // distinct points
            ([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]), // identical
            ([0.0, 0.0, 1.0, 1.0], [5.0, 7.0, 6.0, 9.0]), // disjoint
            ([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]), // touching at an edge
            ([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]), // touching at a corner
            ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]), // point at the target's corner
        ];
        for kind in KINDS {
            for format in FORMATS {
                for (i, (p, t)) in cases.iter().enumerate() {
                    let (p, t) = (from_xyxy(format, *p), from_xyxy(format, *t));
                    let (l, g) = pair_loss_in(kind, format, p, t, EPS, None);
                    assert!(
                        l.is_finite() && g.iter().all(|x| x.is_finite()),
                        "{kind:?} {format:?} case {i}: loss {l}, grad {g:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn nan_coordinates_propagate() {
        for kind in KINDS {
            let (l, g) = pair_loss(kind, [0.0, f64::NAN, 1.0, 1.0], [0.0; 4], EPS, None);
            assert!(l.is_nan() && g.iter().all(|x| x.is_nan()), "{kind:?}");
            let (l, _) = pair_loss(kind, [0.0, 0.0, 1.0, 1.0], [f64::NAN; 4], EPS, None);
            assert!(l.is_nan(), "{kind:?}");
        }
    }

    #[test]
    fn box_reductions() {
        let mut rng = Rng(7);
        let flat: Vec<f64> = (0..5)
            .flat_map(|i| {
                let (p, t) = random_case(&mut rng, i % 3);
                p.into_iter().chain(t)
            })
            .collect();
        let both = Array2::from_shape_vec((5, 8), flat).unwrap();
        let p = both.slice(ndarray::s![.., 0..4]).to_owned().into_dyn();
        let t = both.slice(ndarray::s![.., 4..8]).to_owned().into_dyn();
        for kind in KINDS {
            let run = |r| box_loss(kind, p.view(), t.view(), BoxFormat::Xyxy, EPS, r, 3.0);
            let (none, sum, mean) = (
                run(Reduction::None),
                run(Reduction::Sum),
                run(Reduction::Mean),
            );
            assert_eq!(none.loss.shape(), &[5]);
            assert_eq!(sum.loss.ndim(), 0);
            let total: f64 = none.loss.iter().sum();
            assert!((sum.loss[[]] - total).abs() < 1e-12);
            assert!((mean.loss[[]] - total / 5.0).abs() < 1e-12);
            for ((a, b), c) in none.grad.iter().zip(sum.grad.iter()).zip(mean.grad.iter()) {
                assert_eq!(a, b);
                assert!((c - a / 5.0).abs() < 1e-15);
            }
            let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 4]));
            let e = box_loss(
                kind,
                empty.view(),
                empty.view(),
                BoxFormat::Cxcywh,
                EPS,
                Reduction::Mean,
                1.0,
            );
            assert_eq!(e.loss[[]], 0.0);
            assert_eq!(e.grad.shape(), &[0, 4]);
            let none = box_loss(
                kind,
                empty.view(),
                empty.view(),
                BoxFormat::Xyxy,
                EPS,
                Reduction::None,
                1.0,
            );
            assert_eq!(none.loss.shape(), &[0]);
        }
        // The named wrappers are box_loss of their kind.
        let w = siou(
            p.view(),
            t.view(),
            BoxFormat::Xyxy,
            EPS,
            Reduction::Sum,
            1.0,
        );
        let b = box_loss(
            BoxKind::Siou,
            p.view(),
            t.view(),
            BoxFormat::Xyxy,
            EPS,
            Reduction::Sum,
            1.0,
        );
        assert_eq!(w.loss, b.loss);
        assert_eq!(w.grad, b.grad);
    }
}
