// Box losses (F2): iou, giou, diou, ciou, eiou, siou of predicted boxes against target boxes,
// one invocation per pair, fused forward+backward. Composed after `elementwise.wgsl`, whose
// Params (n = 4 x boxes in the segment, elem_base, scales; p.x = eps), loss/partials bindings
// `fused` and `reduce` it shares (this file gives `fused` its `walk`). Bindings 0-2 (one box per
// step) are declared by the width file with `load_pred`, `load_targ`, `store_grad` and
// `scale_grad`: boxes_f32.wgsl (a vec4 per box) or boxes_half.wgsl (16-bit coordinates, two
// words per box).
//
// Per pair, in (x1, y1, x2, y2) (cxcywh inputs are converted, and their gradient chained back):
//   iw = min(x2, X2) - max(x1, X1), ih likewise; inter = iw ih if both > 0, else 0
//   union = w h + W H - inter, IoU = inter / (union + eps)   (torchvision)
//   cw, ch: the enclosing box's sides; rho^2: squared distance of the centres
//   iou   1 - IoU
//   giou  1 - IoU + (cw ch - union) / (cw ch + eps)
//   diou  1 - IoU + rho^2 / (cw^2 + ch^2 + eps)
//   ciou  diou + alpha v, v = 4/pi^2 (atan(W/H) - atan(w/h))^2, alpha = v / (1 - IoU + v + eps)
//         held constant in the backward; IoU and diou with eps = 1e-7 whatever eps is (as
//         torchvision, whose complete_box_iou_loss passes its eps to alpha alone)
//   eiou  diou + (w - W)^2 / (cw^2 + eps) + (h - H)^2 / (ch^2 + eps)
//   siou  1 - clamp(IoU - (distance + shape) / 2, -1, 1), mmdet siou_loss with neg_gamma false
// Values carry their gradient w.r.t. the predicted (x1, y1, x2, y2) as a vec4 (forward mode).
// A min / max whose two sides tie splits its gradient evenly (torch maximum / minimum), so
// identical boxes get a zero gradient; the intersection is a constant 0 once iw or ih <= 0.
// The f64 reference (`wgloss_ref::box_loss`) follows the same steps.

const IOU: u32 = 0u;
const GIOU: u32 = 1u;
const DIOU: u32 = 2u;
const CIOU: u32 = 3u;
const EIOU: u32 = 4u;
const SIOU: u32 = 5u;

// Which loss.
override KIND: u32 = 0u;
// Whether boxes are (cx, cy, w, h) rather than (x1, y1, x2, y2).
override CXCYWH: bool = false;

const PI: f32 = 3.14159265358979;
const FRAC_1_SQRT_2: f32 = 0.707106781186548;
const G_W: vec4<f32> = vec4<f32>(-1.0, 0.0, 1.0, 0.0);
const G_H: vec4<f32> = vec4<f32>(0.0, -1.0, 0.0, 1.0);

// A value and its gradient w.r.t. the predicted box.
struct V {
    v: f32,
    g: vec4<f32>,
}

fn cst(x: f32) -> V {
    return V(x, vec4<f32>(0.0));
}

fn coord(x: f32, k: u32) -> V {
    var g = vec4<f32>(0.0);
    g[k] = 1.0;
    return V(x, g);
}

fn add(a: V, b: V) -> V {
    return V(a.v + b.v, a.g + b.g);
}

fn sub(a: V, b: V) -> V {
    return V(a.v - b.v, a.g - b.g);
}

fn mul(a: V, b: V) -> V {
    return V(a.v * b.v, b.v * a.g + a.v * b.g);
}

fn quot(n: V, d: V) -> V {
    let q = n.v / d.v;
    return V(q, (n.g - q * d.g) / d.v);
}

fn sq(a: V) -> V {
    return V(a.v * a.v, 2.0 * a.v * a.g);
}

// `a` if `take_a`, else `b`; at a tie the value with half of each gradient.
fn pick(a: V, b: V, take_a: bool) -> V {
    if (a.v == b.v) {
        return V(a.v, 0.5 * (a.g + b.g));
    }
    if (take_a) {
        return a;
    }
    return b;
}

// max / min of the predicted coordinate x (index k) and a target coordinate y.
fn max_pt(x: f32, k: u32, y: f32) -> V {
    return pick(coord(x, k), cst(y), x >= y);
}

fn min_pt(x: f32, k: u32, y: f32) -> V {
    return pick(coord(x, k), cst(y), x <= y);
}

// |a| with derivative 0 at 0.
fn abs_v(a: V) -> V {
    return V(abs(a.v), sign(a.v) * a.g);
}

// What every loss needs, computed once per pair.
struct Geometry {
    iou: V,
    uni: V,
    cw: V,
    ch: V,
    dcx: V,
    dcy: V,
    w: f32,
    h: f32,
    wt: f32,
    ht: f32,
}

fn geometry(p: vec4<f32>, t: vec4<f32>, eps: f32) -> Geometry {
    let iw = sub(min_pt(p.z, 2u, t.z), max_pt(p.x, 0u, t.x));
    let ih = sub(min_pt(p.w, 3u, t.w), max_pt(p.y, 1u, t.y));
    var inter = cst(0.0);
    if (iw.v > 0.0 && ih.v > 0.0) {
        inter = mul(iw, ih);
    }
    let w = p.z - p.x;
    let h = p.w - p.y;
    let wt = t.z - t.x;
    let ht = t.w - t.y;
    let uni = sub(V(w * h + wt * ht, h * G_W + w * G_H), inter);
    let iou = quot(inter, V(uni.v + eps, uni.g));
    let cw = sub(max_pt(p.z, 2u, t.z), min_pt(p.x, 0u, t.x));
    let ch = sub(max_pt(p.w, 3u, t.w), min_pt(p.y, 1u, t.y));
    // Centre offsets from the differences of nearby coordinates, accurate when the centres are
    // close (SIoU's angle cost divides by them).
    let dcx = V(0.5 * ((p.x - t.x) + (p.z - t.z)), vec4<f32>(0.5, 0.0, 0.5, 0.0));
    let dcy = V(0.5 * ((p.y - t.y) + (p.w - t.w)), vec4<f32>(0.0, 0.5, 0.0, 0.5));
    return Geometry(iou, uni, cw, ch, dcx, dcy, w, h, wt, ht);
}

fn one_minus_iou(g: Geometry) -> V {
    return V(1.0 - g.iou.v, -g.iou.g);
}

fn diou(g: Geometry, eps: f32) -> V {
    let c2 = add(sq(g.cw), sq(g.ch));
    let d = quot(add(sq(g.dcx), sq(g.dcy)), V(c2.v + eps, c2.g));
    return add(one_minus_iou(g), d);
}

// atan(w / h) (torchvision's form) and its partials (h, -w) / (w^2 + h^2), scaled so that tiny
// or huge sides neither underflow nor overflow; 0 and zero partials at w = h = 0.
fn aspect_angle(w: f32, h: f32) -> vec3<f32> {
    if (w == 0.0 && h == 0.0) {
        return vec3<f32>(0.0);
    }
    let s = max(abs(w), abs(h));
    let wn = w / s;
    let hn = h / s;
    let r2 = wn * wn + hn * hn;
    let angle = select(atan(w / h), sign(w) * 0.5 * PI, h == 0.0);
    return vec3<f32>(angle, hn / (s * r2), -wn / (s * r2));
}

// The eps of CIoU's IoU and DIoU term (torchvision's default, which its CIoU keeps).
const CIOU_GEOMETRY_EPS: f32 = 1e-7;

// `g` computed with CIOU_GEOMETRY_EPS; `eps` enters alpha.
fn ciou(g: Geometry, eps: f32) -> V {
    let d = diou(g, CIOU_GEOMETRY_EPS);
    let at = aspect_angle(g.wt, g.ht).x;
    let ap = aspect_angle(g.w, g.h);
    let k = 4.0 / (PI * PI);
    let delta = at - ap.x;
    let v = V(k * delta * delta, -2.0 * k * delta * (ap.y * G_W + ap.z * G_H));
    let alpha = v.v / (1.0 - g.iou.v + v.v + eps);
    return V(d.v + alpha * v.v, d.g + alpha * v.g);
}

fn eiou(g: Geometry, eps: f32) -> V {
    let cw2 = sq(g.cw);
    let ch2 = sq(g.ch);
    let rw = quot(sq(V(g.w - g.wt, G_W)), V(cw2.v + eps, cw2.g));
    let rh = quot(sq(V(g.h - g.ht, G_H)), V(ch2.v + eps, ch2.g));
    return add(diou(g, eps), add(rw, rh));
}

fn giou(g: Geometry, eps: f32) -> V {
    let area = mul(g.cw, g.ch);
    let pen = quot(sub(area, g.uni), V(area.v + eps, area.g));
    return add(one_minus_iou(g), pen);
}

// max(c, eps) as mmdet's clamp(min=eps), passing the gradient on the boundary.
fn clamp_eps(c: V, eps: f32) -> V {
    if (c.v >= eps) {
        return c;
    }
    return cst(eps);
}

// e^{gamma rho} and its gradient.
fn exp_term(gamma: V, rho: V) -> V {
    let e = exp(gamma.v * rho.v);
    return V(e, e * rho.v * gamma.g + e * gamma.v * rho.g);
}

// |a - b| / max(a, b), 0 when the max is 0.
fn omega(a: V, b: f32) -> V {
    let m = pick(a, cst(b), a.v >= b);
    if (m.v == 0.0) {
        return cst(0.0);
    }
    return quot(abs_v(sub(a, cst(b))), m);
}

// (1 - e^{-o})^4.
fn shape_term(o: V) -> V {
    let e = exp(-o.v);
    let q = 1.0 - e;
    return V(q * q * q * q, 4.0 * q * q * q * e * o.g);
}

fn siou(g: Geometry, eps: f32) -> V {
    let cw = clamp_eps(g.cw, eps);
    let ch = clamp_eps(g.ch, eps);
    // Target minus predicted centre, plus eps.
    let s_cw = V(eps - g.dcx.v, -g.dcx.g);
    let s_ch = V(eps - g.dcy.v, -g.dcy.g);
    // Angle cost: sin alpha is the smaller of |s_cw| / sigma and |s_ch| / sigma.
    let sigma2 = s_cw.v * s_cw.v + s_ch.v * s_ch.v;
    var sin_alpha = cst(0.0);
    if (sigma2 != 0.0) {
        let sigma = sqrt(sigma2);
        let sig = V(sigma, (s_cw.v / sigma) * s_cw.g + (s_ch.v / sigma) * s_ch.g);
        sin_alpha = quot(abs_v(s_cw), sig);
        if (sin_alpha.v > FRAC_1_SQRT_2) {
            sin_alpha = quot(abs_v(s_ch), sig);
        }
    }
    // Angle cost cos(2 asin(s) - pi/2) = sin(2 asin(s)) = 2 s sqrt(1 - s^2), written without
    // trigonometry (whose GPU precision is only about 2^-11 absolute); s <= sqrt(2)/2, so the
    // root is at least sqrt(2)/2.
    let s2 = sin_alpha.v * sin_alpha.v;
    let root = sqrt(1.0 - s2);
    let angle = V(2.0 * sin_alpha.v * root, 2.0 * (1.0 - 2.0 * s2) / root * sin_alpha.g);
    // Distance cost with gamma = 2 - angle (neg_gamma false).
    let gamma = V(2.0 - angle.v, -angle.g);
    let ex = exp_term(gamma, sq(quot(s_cw, cw)));
    let ey = exp_term(gamma, sq(quot(s_ch, ch)));
    let distance = V(2.0 - ex.v - ey.v, -ex.g - ey.g);
    // Shape cost, heights with eps added.
    let shape = add(
        shape_term(omega(V(g.w, G_W), g.wt)),
        shape_term(omega(V(g.h + eps, G_H), g.ht + eps)),
    );
    let s = V(g.iou.v - 0.5 * (distance.v + shape.v), g.iou.g - 0.5 * (distance.g + shape.g));
    if (s.v >= -1.0 && s.v <= 1.0) {
        return V(1.0 - s.v, -s.g);
    }
    return cst(1.0 - clamp(s.v, -1.0, 1.0));
}

fn to_xyxy(b: vec4<f32>) -> vec4<f32> {
    if (CXCYWH) {
        return vec4<f32>(b.xy - 0.5 * b.zw, b.xy + 0.5 * b.zw);
    }
    return b;
}

fn grad_from_xyxy(g: vec4<f32>) -> vec4<f32> {
    if (CXCYWH) {
        return vec4<f32>(g.xy + g.zw, 0.5 * (g.zw - g.xy));
    }
    return g;
}

// Loss of one pair and its gradient in the input's format. A NaN coordinate gives NaN for both.
fn box_loss(pb: vec4<f32>, tb: vec4<f32>) -> V {
    let any = pb.x + pb.y + pb.z + pb.w + tb.x + tb.y + tb.z + tb.w;
    if (is_nan(any)) {
        return V(any, vec4<f32>(any));
    }
    let eps = params.p.x;
    let g = geometry(to_xyxy(pb), to_xyxy(tb), select(eps, CIOU_GEOMETRY_EPS, KIND == CIOU));
    var out: V;
    switch KIND {
        case IOU: { out = one_minus_iou(g); }
        case GIOU: { out = giou(g, eps); }
        case DIOU: { out = diou(g, eps); }
        case CIOU: { out = ciou(g, eps); }
        case EIOU: { out = eiou(g, eps); }
        case SIOU, default: { out = siou(g, eps); }
    }
    return V(out.v, grad_from_xyxy(out.g));
}

// Steps of a walk over the segment: its boxes.
fn steps() -> u32 {
    return params.n / 4u;
}

// The driver's walk for boxes: one box (four elements) per step.
fn walk(lid: u32, wid: u32, nwg: u32) -> f32 {
    let b = lane_walk(block_range(steps(), wid, nwg, WG), lid);
    var acc = 0.0;
    for (var i = b.x; i < b.y; i += LANES) {
        let v = box_loss(load_pred(i), load_targ(i));
        store_grad(i, v.g * params.grad_scale);
        if (PER_ELEMENT) {
            loss[i] = v.v;
        } else {
            acc += v.v;
        }
    }
    return acc;
}
