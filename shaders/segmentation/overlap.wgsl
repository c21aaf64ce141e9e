// Overlap losses of segmentation (F4): dice, jaccard, tversky (smp DiceLoss, JaccardLoss,
// TverskyLoss), sensitivity_specificity (Brosch et al. 2015) and combo (alpha CE + (1 - alpha)
// dice), on logits [N, C, S] (S = product of the spatial dims).
//
// Probabilities p are softmax over C (MODE multiclass, targets i32 labels [N, S]) or sigmoid per
// element (binary, C = 1, and multilabel; targets f32 masks [N, C, S]); t is the one-hot label
// or the mask. Pixels whose target is ignore_index have p = t = 0 (no statistics, no gradient).
// Statistics are summed per group: a class (over batch and space), or with per_image an
// (image, class) pair (over space); G groups in all. Per group: I = sum p t, Sp = sum p,
// St = sum t, Sa = sum (t - p)^2 t, Sb = sum (t - p)^2 (1 - t), Sn = sum (1 - t) (over
// non-ignored elements). With s the smoothing, k = 1 where a clamp max(., eps) is inactive:
//   dice     score (2I + s) / max(Sp + St + s, eps)
//   jaccard  score (I + s) / max(Sp + St - I + s, eps)
//   tversky  score (I + s) / max(I + a (Sp - I) + b (St - I) + s, eps)
//   loss_g = (1 - score) if St > 0 else 0;  loss = mean_g loss_g (tversky: to the power gamma)
//   sensitivity_specificity  loss_g = w Sa / (St + eps) + (1 - w) Sb / (Sn + eps), mean over G
//   combo    alpha CE + (1 - alpha) dice; CE as torch (class weights, weighted mean over the
//            non-ignored pixels)
// d loss / d p of an element of group g is A_g t + B_g (dice, jaccard, tversky) or
// 2 (p - t) (A_g t + B_g (1 - t)) (sensitivity_specificity); `finish` leaves A_g, B_g in `work`.
// The gradient w.r.t. the logits then follows the softmax (p_j (g_j - sum_c p_c g_c)) or the
// sigmoid (g p (1 - p)).
//
// Bindings 0 (logits) and 2 (gradient) are declared by the width file (overlap_f32.wgsl or
// overlap_half.wgsl), with `logit` and the gradient pass's two walks (`sigmoid_grads`,
// `softmax_grads`).
//
// Passes: `pixel_pass` (multiclass: labels checked into the status word as cross-entropy does,
// log-sum-exp per pixel into `work`, combo's CE partial sums), `stats_pass` (per group and
// block, partial statistics), `stats_reduce` (one workgroup per group), `finish` (one
// workgroup: losses, the loss value, coefficients), `grad_pass`. Nothing is written when a bad
// label was recorded.
//
// A segment's views are bound from the storage offset alignment at or before their first element
// (`Tensor::binding_led`), so that a segment may start at any sample: `lead` and `target_lead`
// count the elements bound before it (with 16-bit logits an even lead).

struct Params {
    samples: u32,       // samples in this segment
    classes: u32,       // C
    inner: u32,         // S
    sample_base: u32,   // global index of the segment's first sample
    groups: u32,        // G over all samples
    wx: u32,            // stats workgroups per group in this segment
    slots: u32,         // stats partials' slots per group (every segment's, or its own)
    slot_base: u32,     // this segment's first slot
    pix_base: u32,      // this segment's first pixel-pass partial slot
    pix_total: u32,     // pixel-pass partial slots over all segments
    off_stat: u32,      // offsets in `work` (floats): stats partials, statistics, coefficients,
    off_stats: u32,     // extras (CE sum, CE weight), log-sum-exp per pixel
    off_coef: u32,
    off_extra: u32,
    off_lse: u32,
    ignore_index: i32,
    has_ignore: u32,
    lead: u32,          // elements bound before the segment's first logit (and gradient)
    has_weight: u32,
    smoothing: f32,
    eps: f32,
    alpha: f32,         // tversky alpha, combo alpha
    beta: f32,
    gamma: f32,
    w: f32,             // sensitivity_specificity's w
    grad_scale: f32,
    target_lead: u32,   // labels (or mask elements) bound before the segment's first
    pad: u32,
}

// Labels (i32) or masks (f32), read as bits.
@group(0) @binding(1) var<storage, read> target_bits: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

const DICE: u32 = 0u;
const JACCARD: u32 = 1u;
const TVERSKY: u32 = 2u;
const SENS_SPEC: u32 = 3u;
const COMBO: u32 = 4u;
const BINARY: u32 = 0u;
const MULTICLASS: u32 = 1u;
const MULTILABEL: u32 = 2u;
const STATS: u32 = 6u;

override KIND: u32 = 0u;
override MODE: u32 = 1u;
// Groups are (image, class) pairs rather than classes. A pipeline constant, so that without it a
// class's coefficients are one address for every pixel (a single load on a CPU adapter).
override PER_IMAGE: bool = false;

var<workgroup> failed: u32;

fn bad_label_recorded(lid: u32) -> bool {
    if (lid == 0u) {
        failed = select(0u, 1u, atomicLoad(&status[0]) != 0u);
    }
    return workgroupUniformLoad(&failed) != 0u;
}

fn class_weight(c: u32) -> f32 {
    if (params.has_weight != 0u) {
        return weight[c];
    }
    return 1.0;
}

fn label(r: u32) -> i32 {
    return bitcast<i32>(target_bits[params.target_lead + r]);
}

fn label_ignored(y: i32) -> bool {
    return params.has_ignore != 0u && y == params.ignore_index;
}

fn mask_ignored(m: f32) -> bool {
    return params.has_ignore != 0u && m == f32(params.ignore_index);
}

// Element (n, c, s) of the segment: its index in the logit and gradient bindings.
fn elem(n: u32, c: u32, s: u32) -> u32 {
    return params.lead + (n * params.classes + c) * params.inner + s;
}

// The group of class c of (global) sample n.
fn group_of(n_global: u32, c: u32) -> u32 {
    if (PER_IMAGE) {
        return n_global * params.classes + c;
    }
    return c;
}

// Multiclass: probability e^(x - lse) and one-hot target of class c for a pixel labelled y.
fn softmax_target(x: f32, lse: f32, y: i32, c: u32) -> vec2<f32> {
    return vec2<f32>(exp(x - lse), select(0.0, 1.0, u32(y) == c));
}

// Probability and target of element (n, c, s); the target is -1 for an ignored element.
fn prob_target(n: u32, c: u32, s: u32) -> vec2<f32> {
    let i = elem(n, c, s);
    if (MODE == MULTICLASS) {
        let r = n * params.inner + s;
        let y = label(r);
        if (label_ignored(y)) {
            return vec2<f32>(0.0, -1.0);
        }
        let lse = work[params.off_lse + (params.sample_base * params.inner + r)];
        return softmax_target(logit(i), lse, y, c);
    }
    let m = bitcast<f32>(target_bits[i - params.lead + params.target_lead]);
    if (mask_ignored(m)) {
        return vec2<f32>(0.0, -1.0);
    }
    return vec2<f32>(sigmoid(logit(i)), m);
}

@compute @workgroup_size(256)
fn pixel_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let rows = params.samples * params.inner;
    let b = lane_walk(block_range(rows, wid.x, nwg.x, WG), lid.x);
    var ce = 0.0;
    var wsum = 0.0;
    // (sample, position) of pixel r.
    var pos = walk2(b.x, params.inner);
    for (var r = b.x; r < b.y; r += LANES) {
        let ns = pos.at;
        pos = step2(pos);
        let n = ns.x;
        let s = ns.y;
        var mt = LSE_EMPTY;
        let base = elem(n, 0u, s);
        for (var c = 0u; c < params.classes; c++) {
            mt = lse_add(mt, logit(base + c * params.inner));
        }
        let l = lse_excess(mt);
        let lse = mt.x + l;
        work[params.off_lse + params.sample_base * params.inner + r] = lse;
        let y = label(r);
        if (label_ignored(y)) {
            continue;
        }
        if (y < 0 || u32(y) >= params.classes) {
            atomicMax(&status[0], 0xffffffffu - (params.sample_base * params.inner + r));
            continue;
        }
        let wy = class_weight(u32(y));
        // -log p_y as (m - x_y) + l: no cancellation for a confident pixel.
        ce += wy * ((mt.x - logit(elem(n, u32(y), s))) + l);
        wsum += wy;
    }
    if (KIND == COMBO) {
        let a = workgroup_sum(lid.x, ce);
        let d = workgroup_sum(lid.x, wsum);
        if (lid.x == 0u) {
            work[2u * (params.pix_base + wid.x)] = a;
            work[2u * (params.pix_base + wid.x) + 1u] = d;
        }
    }
}

var<workgroup> red6: array<array<f32, 6>, 256>;

// Sums the six statistics over the workgroup into invocation 0's slot.
fn reduce6(lid: u32, v: array<f32, 6>) -> array<f32, 6> {
    red6[lid] = v;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            for (var j = 0u; j < STATS; j++) {
                red6[lid][j] += red6[lid + h][j];
            }
        }
        workgroupBarrier();
    }
    let out = red6[0];
    workgroupBarrier();
    return out;
}

// Classes per stats workgroup: a pixel's label and log-sum-exp are read once for that many.
const CHUNK: u32 = 4u;

// The six statistics of `v` with one more element (probability p, target t).
fn add_stats(v: array<f32, 6>, p: f32, t: f32) -> array<f32, 6> {
    let d2 = (t - p) * (t - p);
    return array<f32, 6>(
        v[0] + p * t,
        v[1] + p,
        v[2] + t,
        v[3] + d2 * t,
        v[4] + d2 * (1.0 - t),
        v[5] + 1.0 - t,
    );
}

// Workgroup (x, y): block x of the elements of CHUNK classes of local chunk y (classes
// CHUNK (y % chunks) onwards, of every sample or, per image, of image y / chunks).
@compute @workgroup_size(256)
fn stats_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let chunks = (params.classes + CHUNK - 1u) / CHUNK;
    let c0 = wid.y % chunks * CHUNK;
    // Pixels of the groups in this segment: every (n, s), or those of one image.
    var first_n = 0u;
    var len = params.samples * params.inner;
    if (PER_IMAGE) {
        first_n = wid.y / chunks;
        len = params.inner;
    }
    let b = lane_walk(block_range(len, wid.x, params.wx, WG), lid.x);
    // One accumulator per class of the chunk, named rather than indexed so that they stay in
    // registers.
    var v0 = array<f32, 6>();
    var v1 = array<f32, 6>();
    var v2 = array<f32, 6>();
    var v3 = array<f32, 6>();
    var pos = walk2(b.x, params.inner);
    for (var k = b.x; k < b.y; k += LANES) {
        let ns = pos.at;
        pos = step2(pos);
        let n = first_n + ns.x;
        let s = ns.y;
        var pt: array<vec2<f32>, CHUNK>;
        if (MODE == MULTICLASS) {
            let y = label(n * params.inner + s);
            if (label_ignored(y)) {
                continue;
            }
            let lse = work[params.off_lse + params.sample_base * params.inner + n * params.inner + s];
            for (var j = 0u; j < CHUNK; j++) {
                let c = min(c0 + j, params.classes - 1u);
                pt[j] = softmax_target(logit(elem(n, c, s)), lse, y, c);
            }
        } else {
            for (var j = 0u; j < CHUNK; j++) {
                pt[j] = prob_target(n, min(c0 + j, params.classes - 1u), s);
            }
        }
        // Classes past C (the last chunk's) repeat C - 1 and are dropped when written.
        if (pt[0].y >= 0.0) {
            v0 = add_stats(v0, pt[0].x, pt[0].y);
        }
        if (pt[1].y >= 0.0) {
            v1 = add_stats(v1, pt[1].x, pt[1].y);
        }
        if (pt[2].y >= 0.0) {
            v2 = add_stats(v2, pt[2].x, pt[2].y);
        }
        if (pt[3].y >= 0.0) {
            v3 = add_stats(v3, pt[3].x, pt[3].y);
        }
    }
    let v = array<array<f32, 6>, CHUNK>(v0, v1, v2, v3);
    for (var j = 0u; j < CHUNK; j++) {
        let c = c0 + j;
        let total = reduce6(lid.x, v[j]);
        if (lid.x == 0u && c < params.classes) {
            let g = group_of(params.sample_base + first_n, c);
            let slot = g * params.slots + params.slot_base + wid.x;
            for (var i = 0u; i < STATS; i++) {
                work[params.off_stat + slot * STATS + i] = total[i];
            }
        }
    }
}

// Workgroup g: the statistics of group g over every slot (slots no segment wrote are zero).
@compute @workgroup_size(256)
fn stats_reduce(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let g = wid.x + wid.y * 65535u;
    if (g >= params.groups) {
        return;
    }
    var v = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var k = lid.x; k < params.slots; k += WG) {
        for (var j = 0u; j < STATS; j++) {
            v[j] += work[params.off_stat + (g * params.slots + k) * STATS + j];
        }
    }
    let total = reduce6(lid.x, v);
    if (lid.x == 0u) {
        for (var j = 0u; j < STATS; j++) {
            work[params.off_stats + g * STATS + j] = total[j];
        }
    }
}

// Score numerator, denominator and the clamp indicator of an overlap group.
fn overlap(st: array<f32, 6>) -> vec3<f32> {
    let i = st[0];
    let sp = st[1];
    let stt = st[2];
    let s = params.smoothing;
    var num = i + s;
    var den = 0.0;
    if (KIND == DICE || KIND == COMBO) {
        num = 2.0 * i + s;
        den = sp + stt + s;
    } else if (KIND == JACCARD) {
        den = sp + stt - i + s;
    } else {
        den = i + params.alpha * (sp - i) + params.beta * (stt - i) + s;
    }
    let k = select(0.0, 1.0, den >= params.eps);
    return vec3<f32>(num, max(den, params.eps), k);
}

fn stats_of(g: u32) -> array<f32, 6> {
    var st: array<f32, 6>;
    for (var j = 0u; j < STATS; j++) {
        st[j] = work[params.off_stats + g * STATS + j];
    }
    return st;
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let groups = f32(params.groups);
    // Mean loss over groups (each invocation a strided share).
    var acc = 0.0;
    for (var g = lid.x; g < params.groups; g += WG) {
        let st = stats_of(g);
        if (KIND == SENS_SPEC) {
            acc += params.w * st[3] / (st[2] + params.eps)
                + (1.0 - params.w) * st[4] / (st[5] + params.eps);
        } else if (st[2] > 0.0) {
            let o = overlap(st);
            acc += 1.0 - o.x / o.y;
        }
    }
    let mean = workgroup_sum(lid.x, acc) / groups;
    // Combo's cross-entropy.
    var ce = 0.0;
    var wsum = 0.0;
    if (KIND == COMBO) {
        var a = 0.0;
        var d = 0.0;
        for (var k = lid.x; k < params.pix_total; k += WG) {
            a += work[2u * k];
            d += work[2u * k + 1u];
        }
        ce = workgroup_sum(lid.x, a);
        wsum = workgroup_sum(lid.x, d);
    }
    // d loss / d loss_g.
    var outer = params.grad_scale / groups;
    var value = mean;
    if (KIND == TVERSKY) {
        // pow0 maps NaN to 0 or 1: keep a NaN mean.
        value = select(pow0(mean, params.gamma), mean, is_nan(mean));
        let gamma = params.gamma;
        outer *= select(gamma * pow(mean, gamma - 1.0), select(0.0, 1.0, gamma == 1.0), mean <= 0.0);
    }
    if (KIND == COMBO) {
        let ce_mean = select(0.0, ce / wsum, wsum != 0.0);
        value = params.alpha * ce_mean + (1.0 - params.alpha) * mean;
        outer *= 1.0 - params.alpha;
        if (lid.x == 0u) {
            // The CE gradient's scale: alpha grad_scale / (sum of weights).
            work[params.off_extra] = select(0.0, params.alpha * params.grad_scale / wsum, wsum != 0.0);
        }
    }
    if (lid.x == 0u) {
        loss[0] = value;
    }
    for (var g = lid.x; g < params.groups; g += WG) {
        let st = stats_of(g);
        var a = 0.0;
        var b = 0.0;
        if (KIND == SENS_SPEC) {
            a = outer * params.w / (st[2] + params.eps);
            b = outer * (1.0 - params.w) / (st[5] + params.eps);
        } else if (st[2] > 0.0) {
            let o = overlap(st);
            let num = o.x;
            let den = o.y;
            let k = o.z;
            // d score / d p = (t den - num k d den / d p) / den^2, d den / d p = dt t + dc.
            var dt = 0.0;
            var dc = 0.0;
            var dn = 1.0;
            if (KIND == DICE || KIND == COMBO) {
                dn = 2.0;
                dc = 1.0;
            } else if (KIND == JACCARD) {
                dt = -1.0;
                dc = 1.0;
            } else {
                dt = 1.0 - params.alpha - params.beta;
                dc = params.alpha;
            }
            a = -outer * (dn / den - num * k * dt / (den * den));
            b = outer * num * k * dc / (den * den);
        }
        work[params.off_coef + 2u * g] = a;
        work[params.off_coef + 2u * g + 1u] = b;
    }
}

// d loss / d p of an element with probability p and target t in group g.
fn dloss_dp(g: u32, p: f32, t: f32) -> f32 {
    return dloss(p, t, work[params.off_coef + 2u * g], work[params.off_coef + 2u * g + 1u]);
}

// `dloss_dp` from the coefficients (A, B) of the element's group; A is used only where t > 0
// and B only where t < 1, so a one-hot pixel needs A of its label's group and B of each class's.
fn dloss(p: f32, t: f32, a: f32, b: f32) -> f32 {
    if (KIND == SENS_SPEC) {
        return 2.0 * (p - t) * (a * t + b * (1.0 - t));
    }
    return a * t + b;
}

// The gradient of element (n, c, s) in binary and multilabel modes (0 where ignored).
fn sigmoid_grad(n: u32, c: u32, s: u32) -> f32 {
    let pt = prob_target(n, c, s);
    if (pt.y < 0.0) {
        return 0.0;
    }
    let p = pt.x;
    return dloss_dp(group_of(params.sample_base + n, c), p, pt.y) * p * (1.0 - p);
}

// What the softmax's chain needs of a non-ignored pixel (multiclass): its label, log-sum-exp,
// global sample, A of its label's group and the label's class weight; `dot` is
// sum_c p_c dloss_c, filled by `pixel_dot` class by class.
struct Pixel {
    y: i32,
    lse: f32,
    ng: u32,
    a_y: f32,
    wy: f32,
    dot: f32,
}

// Pixel r (= n S + s of the segment) labelled y, not ignored.
fn pixel(r: u32, n: u32, y: i32) -> Pixel {
    let ng = params.sample_base + n;
    return Pixel(
        y,
        work[params.off_lse + params.sample_base * params.inner + r],
        ng,
        work[params.off_coef + 2u * group_of(ng, u32(y))],
        class_weight(u32(y)),
        0.0,
    );
}

// p_c dloss_c of class c (logit x) of the pixel: one term of its `dot`.
fn pixel_dot(px: Pixel, c: u32, x: f32) -> f32 {
    let pt = softmax_target(x, px.lse, px.y, c);
    return pt.x * dloss(pt.x, pt.y, px.a_y, work[params.off_coef + 2u * group_of(px.ng, c) + 1u]);
}

// The gradient of class c (logit x) of the pixel, its `dot` complete.
fn pixel_grad(px: Pixel, c: u32, x: f32) -> f32 {
    let pt = softmax_target(x, px.lse, px.y, c);
    let b = work[params.off_coef + 2u * group_of(px.ng, c) + 1u];
    var g = pt.x * (dloss(pt.x, pt.y, px.a_y, b) - px.dot);
    if (KIND == COMBO) {
        g += work[params.off_extra] * px.wy * (pt.x - pt.y);
    }
    return g;
}

@compute @workgroup_size(256)
fn grad_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    if (MODE != MULTICLASS) {
        sigmoid_grads(lid.x, wid.x, nwg.x);
    } else {
        softmax_grads(lid.x, wid.x, nwg.x);
    }
}
