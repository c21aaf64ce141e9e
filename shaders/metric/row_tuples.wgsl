// Losses over tuples of rows (F5): cosine_embedding (torch), contrastive on pairs (Hadsell et
// al. 2006) and triplet (torch triplet_margin_loss). Row i of each input [N, D] forms one tuple;
// one invocation per tuple computes its loss and writes the gradients of its rows.
//
// The host runs the rows in segments of one storage binding (each bound at its offset, rows a
// multiple of 64); `tuples` writes the per-row loss (reduction none) or one partial sum per
// workgroup, `finish` adds the partials in a fixed order. Eight storage bindings, wgpu's default
// limit: `out` takes the per-row losses, or the partials, which `finish` then reads as `x1` while
// `out` is the loss.

struct Params {
    n: u32,            // rows of this segment
    d: u32,
    total: u32,        // rows of every segment (the mean's divisor)
    wg_base: u32,      // first partial of this segment
    reduce: u32,       // 0 none, 1 mean, 2 sum
    p_kind: u32,       // triplet: 1 (L1), 2 (L2), else the general p
    swap: u32,
    pad0: u32,
    margin: f32,
    p: f32,
    eps: f32,
    weight: f32,       // grad_scale, over N under the mean
}

@group(0) @binding(0) var<storage, read> x1: array<f32>;
@group(0) @binding(1) var<storage, read> x2: array<f32>;
@group(0) @binding(2) var<storage, read> x3: array<f32>;
@group(0) @binding(3) var<storage, read> target_bits: array<u32>;
@group(0) @binding(4) var<storage, read_write> g1: array<f32>;
@group(0) @binding(5) var<storage, read_write> g2: array<f32>;
@group(0) @binding(6) var<storage, read_write> g3: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

const COSINE_EMBEDDING: u32 = 0u;
const CONTRASTIVE: u32 = 1u;
const TRIPLET: u32 = 2u;
// Generative (F6) losses per row: gaussian_kl (x1 = μ, x2 = log σ², params.margin = β) and
// gradient_penalty (x1 = the critic's gradients, params.margin = λ).
const GAUSSIAN_KL: u32 = 3u;
const GRADIENT_PENALTY: u32 = 4u;
// score_matching: x1 = the score s, x2 = the noisy x~, x3 = the clean x, the target σ (f32).
const SCORE_MATCHING: u32 = 5u;
override KIND: u32 = COSINE_EMBEDDING;

// torch's EPSILON in cosine_embedding_loss.
const COS_EPS: f32 = 1e-12;

fn y_of(i: u32) -> i32 {
    return bitcast<i32>(target_bits[i]);
}

// cosine_embedding: loss 1 - cos (y = 1) or max(0, cos - margin) (y = -1), 0 for other y.
fn cosine_embedding(i: u32) -> f32 {
    let d = params.d;
    var dot = 0.0;
    var a = 0.0;
    var b = 0.0;
    for (var c = 0u; c < d; c++) {
        let u = x1[i * d + c];
        let v = x2[i * d + c];
        dot += u * v;
        a += u * u;
        b += v * v;
    }
    a += COS_EPS;
    b += COS_EPS;
    // sqrt(a) sqrt(b): no overflow of a b.
    let denom = sqrt(a) * sqrt(b);
    let cos = dot / denom;
    let y = y_of(i);
    var l = 0.0;
    var w = 0.0;
    if (y == 1) {
        l = 1.0 - cos;
        w = -1.0;
    } else if (y == -1) {
        l = max(cos - params.margin, 0.0);
        // torch's clamp_min passes the gradient at the boundary.
        w = select(0.0, 1.0, cos - params.margin >= 0.0);
    }
    if (is_nan(cos)) {
        l = cos;
    }
    w *= params.weight;
    for (var c = 0u; c < d; c++) {
        let u = x1[i * d + c];
        let v = x2[i * d + c];
        g1[i * d + c] = w * (v / denom - u * (cos / a));
        g2[i * d + c] = w * (u / denom - v * (cos / b));
    }
    return l;
}

// contrastive: D = ‖x1 - x2‖, loss ½ [y D² + (1 - y) max(0, margin - D)²] for y in {0, 1}.
fn contrastive(i: u32) -> f32 {
    let d = params.d;
    var acc = vec2<f32>(0.0, 1.0);
    for (var c = 0u; c < d; c++) {
        acc = nrm2_add(acc, x1[i * d + c] - x2[i * d + c]);
    }
    let dist = nrm2_value(acc);
    let similar = y_of(i) == 1;
    var l: f32;
    var w: f32;
    if (similar) {
        l = 0.5 * dist * dist;
        w = 1.0;
    } else {
        let h = max(params.margin - dist, 0.0);
        l = 0.5 * h * h;
        w = select(0.0, -h / dist, dist > 0.0);
    }
    if (is_nan(dist)) {
        l = dist;
    }
    w *= params.weight;
    for (var c = 0u; c < d; c++) {
        let g = w * (x1[i * d + c] - x2[i * d + c]);
        g1[i * d + c] = g;
        g2[i * d + c] = -g;
    }
    return l;
}

// torch pairwise_distance ‖u - v + eps‖_p of rows i of two inputs (0: x1, 1: x2, 2: x3).
fn row(k: u32, i: u32, c: u32) -> f32 {
    let at = i * params.d + c;
    if (k == 0u) {
        return x1[at];
    }
    if (k == 1u) {
        return x2[at];
    }
    return x3[at];
}

fn distance(i: u32, u: u32, v: u32) -> f32 {
    if (params.p_kind == 2u) {
        var acc = vec2<f32>(0.0, 1.0);
        for (var c = 0u; c < params.d; c++) {
            acc = nrm2_add(acc, row(u, i, c) - row(v, i, c) + params.eps);
        }
        return nrm2_value(acc);
    }
    var s = 0.0;
    for (var c = 0u; c < params.d; c++) {
        let t = abs(row(u, i, c) - row(v, i, c) + params.eps);
        if (params.p_kind == 1u) {
            s += t;
        } else {
            s += pow0(t, params.p);
        }
    }
    if (params.p_kind == 1u) {
        return s;
    }
    return pow0(s, 1.0 / params.p);
}

// ∂‖t‖_p/∂t for one element t of the difference, at norm `dist` (torch's norm backward).
fn distance_grad(t: f32, dist: f32) -> f32 {
    if (params.p_kind == 1u) {
        return sign(t);
    }
    if (dist == 0.0) {
        return 0.0;
    }
    if (params.p_kind == 2u) {
        return t / dist;
    }
    return sign(t) * pow0(abs(t) / dist, params.p - 1.0);
}

// triplet: max(0, margin + d(a, p) - d(a, n)'), d(a, n)' = min(d(a, n), d(p, n)) with swap.
fn triplet(i: u32) -> f32 {
    let d_ap = distance(i, 0u, 1u);
    let d_an = distance(i, 0u, 2u);
    var c_an = 1.0;
    var c_pn = 0.0;
    var d_neg = d_an;
    var d_pn = 0.0;
    if (params.swap != 0u) {
        d_pn = distance(i, 1u, 2u);
        if (d_pn < d_an) {
            c_an = 0.0;
            c_pn = 1.0;
            d_neg = d_pn;
        } else if (d_pn == d_an) {
            // torch's min backward splits a tie evenly.
            c_an = 0.5;
            c_pn = 0.5;
        }
    }
    let z = params.margin + d_ap - d_neg;
    var l = max(z, 0.0);
    if (is_nan(z)) {
        l = z;
    }
    let w = select(0.0, params.weight, z >= 0.0);
    for (var c = 0u; c < params.d; c++) {
        let at = i * params.d + c;
        let a = x1[at];
        let p = x2[at];
        let n = x3[at];
        let g_ap = distance_grad(a - p + params.eps, d_ap);
        let g_an = distance_grad(a - n + params.eps, d_an);
        var g_pn = 0.0;
        if (c_pn != 0.0) {
            g_pn = distance_grad(p - n + params.eps, d_pn);
        }
        g1[at] = w * (g_ap - c_an * g_an);
        g2[at] = w * (-g_ap - c_pn * g_pn);
        g3[at] = w * (c_an * g_an + c_pn * g_pn);
    }
    return l;
}

// e^x - 1 - x without the cancellation of expm1(x) - x for small |x| (Taylor below 0.1).
fn expm1_minus_x(x: f32) -> f32 {
    if (abs(x) < 0.1) {
        return x * x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x / 720.0))));
    }
    return expm1(x) - x;
}

// gaussian_kl: β ½ Σ_c (μ² + e^lv - 1 - lv), d/dμ = β μ, d/dlv = β ½ (e^lv - 1).
fn gaussian_kl(i: u32) -> f32 {
    let d = params.d;
    let beta = params.margin;
    let w = params.weight * beta;
    var l = 0.0;
    for (var c = 0u; c < d; c++) {
        let mu = x1[i * d + c];
        let lv = x2[i * d + c];
        l += mu * mu + expm1_minus_x(lv);
        g1[i * d + c] = w * mu;
        g2[i * d + c] = w * 0.5 * expm1(lv);
    }
    return 0.5 * beta * l;
}

// gradient_penalty: λ (‖g‖ - 1)², d/dg = 2 λ (‖g‖ - 1) g / ‖g‖ (0 for a zero row, as torch's
// norm backward). The norm without overflow or underflow.
fn gradient_penalty(i: u32) -> f32 {
    let d = params.d;
    var acc = vec2<f32>(0.0, 1.0);
    for (var c = 0u; c < d; c++) {
        acc = nrm2_add(acc, x1[i * d + c]);
    }
    let norm = nrm2_value(acc);
    let lambda = params.margin;
    let r = norm - 1.0;
    // (λ r) r: a small λ keeps the loss finite where r² alone would overflow.
    let l = (lambda * r) * r;
    let w = select(0.0, params.weight * 2.0 * lambda * r / norm, norm > 0.0);
    for (var c = 0u; c < d; c++) {
        g1[i * d + c] = w * x1[i * d + c];
    }
    return select(l, norm, is_nan(norm));
}

// score_matching (NCSN): ½ ‖u‖² with u = σ s + (x~ - x)/σ (= σ² ‖s + (x~ - x)/σ²‖² / 2 without
// σ² over- or underflowing); d/ds = σ u, d/dx~ = u / σ, d/dx = -u / σ.
fn score_matching(i: u32) -> f32 {
    let d = params.d;
    let sigma = bitcast<f32>(target_bits[i]);
    var l = 0.0;
    for (var c = 0u; c < d; c++) {
        let at = i * d + c;
        let u = sigma * x1[at] + (x2[at] - x3[at]) / sigma;
        l += u * u;
        g1[at] = params.weight * sigma * u;
        g2[at] = params.weight * u / sigma;
        g3[at] = -params.weight * u / sigma;
    }
    return 0.5 * l;
}

@compute @workgroup_size(256)
fn tuples(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lid = lid3.x;
    let w = wid.x + wid.y * nwg.x;
    let i = w * WG + lid;
    var l = 0.0;
    if (i < params.n) {
        if (KIND == COSINE_EMBEDDING) {
            l = cosine_embedding(i);
        } else if (KIND == CONTRASTIVE) {
            l = contrastive(i);
        } else if (KIND == TRIPLET) {
            l = triplet(i);
        } else if (KIND == GAUSSIAN_KL) {
            l = gaussian_kl(i);
        } else if (KIND == SCORE_MATCHING) {
            l = score_matching(i);
        } else {
            l = gradient_penalty(i);
        }
        if (params.reduce == 0u) {
            out[i] = l;
        }
    }
    if (params.reduce != 0u) {
        let total = workgroup_sum(lid, l);
        if (lid == 0u && w * WG < params.n) {
            out[params.wg_base + w] = total;
        }
    }
}

// One workgroup: the partial sums (bound as x1) added in a fixed order; the mean divides by
// every row.
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var sum = 0.0;
    for (var k = lid; k < params.wg_base; k += WG) {
        sum += x1[k];
    }
    let total = workgroup_sum(lid, sum);
    if (lid == 0u) {
        out[0] = select(total, total / f32(params.total), params.reduce == 1u);
    }
}
