// In-batch contrastive losses (F5) on embeddings [N, D] and labels [N]: supcon (pml SupConLoss)
// and nt_xent (labels mode: pml NTXentLoss; views mode: SimCLR, rows i and i + N/2 the pairs).
//
// With x̂ the L2-normalised embeddings (torch F.normalize, eps 1e-12) and s_ak = x̂_a · x̂_k / τ
// over k != a, positives P(a) = {k != a : label k = label a}, negatives the other labels:
//   supcon   loss_a = LSE_{k != a} s_ak - mean_{p in P(a)} s_ap, mean over anchors with a
//            positive (pml's AvgNonZeroReducer; the same unless a loss underflows to 0); 0 for
//            a batch without any negative pair, as pml
//   nt_xent  loss_ap = softplus(LN_a - s_ap), LN_a = LSE over the negatives of a (no
//            negatives: -BIG, loss 0), mean over ordered positive pairs. Views mode is supcon
//            with labels i mod N/2 (one positive per anchor).
// The similarity matrix is never stored: it is recomputed in 16 x 16 tiles in workgroup memory
// (a workgroup per block of 16 anchors, walking every block of 16 keys), with running
// log-sum-exp statistics per anchor. With c_ak = d loss / d s_ak, the gradient w.r.t. x̂_i is
//   (1/τ) Σ_k (c_ik + c_ki) x̂_k,
// accumulated per key tile into `grad`, then chained through the normalisation.
//
// Passes: `normalize` (x̂ and norms into `scratch`), `stats` (per anchor: LSE over all others,
// LSE over negatives, positive count and sum), `pairs` (nt_xent: per anchor R_a = Σ_p σ(LN_a -
// s_ap) and Σ_p loss_ap), `finish` (one workgroup: the loss and each anchor's weight), `grad`,
// `chain`.

struct Params {
    n: u32,
    d: u32,
    views_half: u32,   // views mode: N/2 (labels are i mod N/2), else 0
    squared: u32,      // triplet: squared distances
    inv_tau: f32,      // 1 for the distance kinds
    grad_scale: f32,
    margin_a: f32,     // contrastive: pos_margin; triplet: margin
    margin_b: f32,     // contrastive: neg_margin
}

@group(0) @binding(0) var<storage, read> emb: array<f32>;
@group(0) @binding(1) var<storage, read> label_bits: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;
// x̂ [N, D], then STATS floats per anchor.
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;

const SUPCON: u32 = 0u;
const NT_XENT: u32 = 1u;
// Over distances ‖x_a - x_k‖ rather than cosines: contrastive (pml ContrastiveLoss, on x̂) and
// triplet with batch-hard mining (Hermans et al. 2017, on the raw rows).
const CONTRASTIVE: u32 = 2u;
const TRIPLET_HARD: u32 = 3u;
override KIND: u32 = SUPCON;

const TILE: u32 = 16u;
const STATS: u32 = 8u;
// Per-anchor statistics.
const LSE_ALL: u32 = 0u;
const LSE_NEG: u32 = 1u;
const POS: u32 = 2u;
const POS_SUM: u32 = 3u;
const RATE: u32 = 4u;
const PAIR_LOSS: u32 = 5u;
const WEIGHT: u32 = 6u;
const NORM: u32 = 7u;
// The distance kinds reuse the slots: contrastive counts and sums of the non-zero pair losses,
// triplet the hardest positive and negative (index and distance); both the per-anchor sum of the
// pair coefficients for the gradient.
const NEG_COUNT: u32 = 0u;
const NEG_SUM: u32 = 1u;
const D_AP: u32 = 0u;
const D_AN: u32 = 1u;
const P_IDX: u32 = 2u;
const N_IDX: u32 = 3u;
const NEG_WEIGHT: u32 = 4u;
const ROWSUM: u32 = 5u;
const NONE: u32 = 0xffffffffu;

fn is_distance() -> bool {
    return KIND == CONTRASTIVE || KIND == TRIPLET_HARD;
}

var<workgroup> a_tile: array<f32, 256>;
var<workgroup> k_tile: array<f32, 256>;
var<workgroup> s_tile: array<f32, 256>;

fn stat(a: u32, j: u32) -> f32 {
    return scratch[params.n * params.d + a * STATS + j];
}

fn set_stat(a: u32, j: u32, v: f32) {
    scratch[params.n * params.d + a * STATS + j] = v;
}

fn label(i: u32) -> i32 {
    if (params.views_half != 0u) {
        return i32(i % params.views_half);
    }
    return bitcast<i32>(label_bits[i]);
}

fn xhat(i: u32, c: u32) -> f32 {
    return scratch[i * params.d + c];
}

// One invocation per row: x̂ and the norm.
@compute @workgroup_size(256)
fn normalize(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params.n) {
        return;
    }
    var sq = 0.0;
    for (var c = 0u; c < params.d; c++) {
        let x = emb[i * params.d + c];
        sq += x * x;
    }
    // The norm without overflow for huge entries: scale by the largest magnitude.
    var big = 0.0;
    for (var c = 0u; c < params.d; c++) {
        big = max(big, abs(emb[i * params.d + c]));
    }
    var norm = sqrt(sq);
    if (big > 0.0 && (sq > 1e30 || sq < 1e-30)) {
        var ssq = 0.0;
        for (var c = 0u; c < params.d; c++) {
            let x = emb[i * params.d + c] / big;
            ssq += x * x;
        }
        norm = big * sqrt(ssq);
    }
    if (is_nan(sq)) {
        norm = sq;
    }
    for (var c = 0u; c < params.d; c++) {
        let x = emb[i * params.d + c];
        // Mined triplets use the raw rows.
        scratch[i * params.d + c] = select(normalized(x, norm), x, KIND == TRIPLET_HARD);
    }
    set_stat(i, NORM, norm);
}

// The tile s_ak / τ for anchors a0 + lid / 16 and keys k0 + lid % 16 into s_tile (0 outside
// the batch). Call in uniform control flow.
fn similarity_tile(lid: u32, a0: u32, k0: u32) {
    let r = lid / TILE;
    let c = lid % TILE;
    var acc = 0.0;
    for (var d0 = 0u; d0 < params.d; d0 += TILE) {
        let a = a0 + r;
        let k = k0 + r;
        let dc = d0 + c;
        a_tile[lid] = select(0.0, xhat(a, dc), a < params.n && dc < params.d);
        k_tile[lid] = select(0.0, xhat(k, dc), k < params.n && dc < params.d);
        workgroupBarrier();
        if (is_distance()) {
            for (var j = 0u; j < TILE; j++) {
                let t = a_tile[r * TILE + j] - k_tile[c * TILE + j];
                acc += t * t;
            }
        } else {
            for (var j = 0u; j < TILE; j++) {
                acc += a_tile[r * TILE + j] * k_tile[c * TILE + j];
            }
        }
        workgroupBarrier();
    }
    if (is_distance()) {
        // Differences summed directly: no cancellation for close rows.
        s_tile[lid] = select(sqrt(acc), acc, params.squared != 0u);
    } else {
        s_tile[lid] = acc * params.inv_tau;
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn stats(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let lid = lid3.x;
    let a0 = wid.x * TILE;
    let a = a0 + lid;
    var all = vec2<f32>(-BIG, 0.0);
    var neg = vec2<f32>(-BIG, 0.0);
    var pos = 0.0;
    var pos_sum = 0.0;
    var nan_seen = false;
    for (var k0 = 0u; k0 < params.n; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        if (lid < TILE && a < params.n) {
            let ya = label(a);
            for (var c = 0u; c < TILE; c++) {
                let k = k0 + c;
                if (k >= params.n || k == a) {
                    continue;
                }
                let s = s_tile[lid * TILE + c];
                nan_seen = nan_seen || is_nan(s);
                all = lse_add(all, s);
                if (label(k) == ya) {
                    pos += 1.0;
                    pos_sum += s;
                } else {
                    neg = lse_add(neg, s);
                }
            }
        }
        workgroupBarrier();
    }
    if (lid < TILE && a < params.n) {
        let poison = select(0.0, bitcast<f32>(0x7fc00000u), nan_seen);
        set_stat(a, LSE_ALL, lse_value(all) + poison);
        set_stat(a, LSE_NEG, lse_value(neg) + poison);
        set_stat(a, POS, pos);
        set_stat(a, POS_SUM, pos_sum + poison);
    }
}

// The distance kinds, per anchor: contrastive, the count and sum of the non-zero positive pair
// losses relu(d - pos_margin) and negative ones relu(neg_margin - d); triplet, the farthest
// positive and the closest negative (the lowest index on a tie).
@compute @workgroup_size(256)
fn distance_stats(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let lid = lid3.x;
    let a0 = wid.x * TILE;
    let a = a0 + lid;
    var pos = 0.0;
    var pos_sum = 0.0;
    var neg = 0.0;
    var neg_sum = 0.0;
    var p_idx = NONE;
    var n_idx = NONE;
    var d_ap = 0.0;
    var d_an = 0.0;
    var nan_seen = false;
    for (var k0 = 0u; k0 < params.n; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        if (lid < TILE && a < params.n) {
            let ya = label(a);
            for (var c = 0u; c < TILE; c++) {
                let k = k0 + c;
                if (k >= params.n || k == a) {
                    continue;
                }
                let s = s_tile[lid * TILE + c];
                nan_seen = nan_seen || is_nan(s);
                let positive = label(k) == ya;
                if (KIND == CONTRASTIVE) {
                    let l = select(params.margin_b - s, s - params.margin_a, positive);
                    if (l > 0.0 && positive) {
                        pos += 1.0;
                        pos_sum += l;
                    } else if (l > 0.0) {
                        neg += 1.0;
                        neg_sum += l;
                    }
                } else if (positive) {
                    if (p_idx == NONE || s > d_ap) {
                        p_idx = k;
                        d_ap = s;
                    }
                } else if (n_idx == NONE || s < d_an) {
                    n_idx = k;
                    d_an = s;
                }
            }
        }
        workgroupBarrier();
    }
    if (lid < TILE && a < params.n) {
        let poison = select(0.0, bitcast<f32>(0x7fc00000u), nan_seen);
        if (KIND == CONTRASTIVE) {
            set_stat(a, NEG_COUNT, neg);
            set_stat(a, NEG_SUM, neg_sum + poison);
            set_stat(a, POS, pos);
            set_stat(a, POS_SUM, pos_sum + poison);
        } else {
            set_stat(a, D_AP, d_ap + poison);
            set_stat(a, D_AN, d_an + poison);
            set_stat(a, P_IDX, bitcast<f32>(p_idx));
            set_stat(a, N_IDX, bitcast<f32>(n_idx));
        }
    }
}

// Whether anchor a has a mined triplet (triplet kind).
fn has_triplet(a: u32) -> bool {
    return bitcast<u32>(stat(a, P_IDX)) != NONE && bitcast<u32>(stat(a, N_IDX)) != NONE;
}

// One workgroup, the distance kinds: the loss and the pair weights. Contrastive: the mean of
// the non-zero positive pair losses plus that of the negative ones (0 for an empty group).
// Triplet: the mean of the hinges over anchors with a triplet.
fn finish_distance(lid: u32) {
    var a_sum = 0.0;
    var a_count = 0.0;
    var b_sum = 0.0;
    var b_count = 0.0;
    for (var a = lid; a < params.n; a += WG) {
        if (KIND == CONTRASTIVE) {
            a_sum += stat(a, POS_SUM);
            a_count += stat(a, POS);
            b_sum += stat(a, NEG_SUM);
            b_count += stat(a, NEG_COUNT);
        } else if (has_triplet(a)) {
            let h = stat(a, D_AP) - stat(a, D_AN) + params.margin_a;
            a_sum += select(max(h, 0.0), h, is_nan(h));
            a_count += 1.0;
        }
    }
    let pos_total = workgroup_sum(lid, a_sum);
    let pos_terms = workgroup_sum(lid, a_count);
    let neg_total = workgroup_sum(lid, b_sum);
    let neg_terms = workgroup_sum(lid, b_count);
    let w_pos = select(0.0, 1.0 / pos_terms, pos_terms > 0.0);
    let w_neg = select(0.0, 1.0 / neg_terms, neg_terms > 0.0);
    if (lid == 0u) {
        loss[0] = pos_total * w_pos + neg_total * w_neg;
    }
    for (var a = lid; a < params.n; a += WG) {
        var wa = w_pos;
        if (KIND == TRIPLET_HARD) {
            let h = stat(a, D_AP) - stat(a, D_AN) + params.margin_a;
            // The hinge passes its gradient at 0 (TF's maximum backward).
            wa = select(0.0, w_pos, has_triplet(a) && h >= 0.0);
        }
        set_stat(a, WEIGHT, wa);
        set_stat(a, NEG_WEIGHT, w_neg);
    }
}

// nt_xent: per anchor, Σ_p σ(LN_a - s_ap) and Σ_p softplus(LN_a - s_ap).
@compute @workgroup_size(256)
fn pairs(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let lid = lid3.x;
    let a0 = wid.x * TILE;
    let a = a0 + lid;
    var rate = 0.0;
    var total = 0.0;
    var ln = 0.0;
    if (lid < TILE && a < params.n) {
        ln = stat(a, LSE_NEG);
    }
    for (var k0 = 0u; k0 < params.n; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        if (lid < TILE && a < params.n) {
            let ya = label(a);
            for (var c = 0u; c < TILE; c++) {
                let k = k0 + c;
                if (k >= params.n || k == a || label(k) != ya) {
                    continue;
                }
                let z = ln - s_tile[lid * TILE + c];
                rate += sigmoid(z);
                total += softplus(z);
            }
        }
        workgroupBarrier();
    }
    if (lid < TILE && a < params.n) {
        set_stat(a, RATE, rate);
        set_stat(a, PAIR_LOSS, total);
    }
}

// One workgroup: the loss and each anchor's weight (1 / the number of terms averaged). supcon,
// as pml, gives 0 to a batch without a negative pair (every label the same).
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    if (is_distance()) {
        finish_distance(lid);
        return;
    }
    var sum = 0.0;
    var count = 0.0;
    var with_negatives = 0.0;
    for (var a = lid; a < params.n; a += WG) {
        let p = stat(a, POS);
        if (KIND == SUPCON) {
            if (p > 0.0) {
                sum += stat(a, LSE_ALL) - stat(a, POS_SUM) / p;
                count += 1.0;
            }
            with_negatives += select(0.0, 1.0, stat(a, LSE_NEG) > -BIG);
        } else {
            sum += stat(a, PAIR_LOSS);
            count += p;
        }
    }
    let total = workgroup_sum(lid, sum);
    let terms = workgroup_sum(lid, count);
    var w = select(0.0, 1.0 / terms, terms > 0.0);
    if (KIND == SUPCON && params.views_half == 0u && workgroup_sum(lid, with_negatives) == 0.0) {
        w = 0.0;
    }
    if (lid == 0u) {
        loss[0] = total * w;
    }
    for (var a = lid; a < params.n; a += WG) {
        var wa = w;
        if (KIND == SUPCON && stat(a, POS) == 0.0) {
            wa = 0.0;
        }
        set_stat(a, WEIGHT, wa);
    }
}

// d loss / d s_ak for k != a (s the similarity over τ, or the distance).
fn coef(a: u32, k: u32, s: f32) -> f32 {
    if (a >= params.n || k >= params.n || a == k) {
        return 0.0;
    }
    if (KIND == CONTRASTIVE) {
        if (label(a) == label(k)) {
            return select(0.0, stat(a, WEIGHT), s - params.margin_a > 0.0);
        }
        return select(0.0, -stat(a, NEG_WEIGHT), params.margin_b - s > 0.0);
    }
    if (KIND == TRIPLET_HARD) {
        let w = stat(a, WEIGHT);
        if (w == 0.0) {
            return 0.0;
        }
        if (k == bitcast<u32>(stat(a, P_IDX))) {
            return w;
        }
        return select(0.0, -w, k == bitcast<u32>(stat(a, N_IDX)));
    }
    let w = stat(a, WEIGHT);
    if (w == 0.0) {
        return 0.0;
    }
    let positive = label(a) == label(k);
    if (KIND == SUPCON) {
        return w * (exp(s - stat(a, LSE_ALL)) - select(0.0, 1.0 / stat(a, POS), positive));
    }
    let ln = stat(a, LSE_NEG);
    if (positive) {
        return -w * sigmoid(ln - s);
    }
    return w * stat(a, RATE) * exp(s - ln);
}

// Σ_k (c_ik + c_ki) x̂_k for the 16 anchors of the workgroup, into `grad` (exclusive rows).
@compute @workgroup_size(256)
fn grad_pass(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let lid = lid3.x;
    let a0 = wid.x * TILE;
    let r = lid / TILE;
    let c = lid % TILE;
    var rowsum = 0.0;
    for (var k0 = 0u; k0 < params.n; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        let s = s_tile[lid];
        var ci = coef(a0 + r, k0 + c, s) + coef(k0 + c, a0 + r, s);
        if (is_distance()) {
            // d d_ak / d x_a = (x_a - x_k) · dd: the x_a part goes to ROWSUM.
            var dd = select(0.0, 1.0 / s, s > 0.0);
            if (params.squared != 0u) {
                dd = 2.0;
            }
            ci = -ci * dd;
        }
        workgroupBarrier();
        s_tile[lid] = ci;
        workgroupBarrier();
        if (is_distance() && lid < TILE) {
            for (var j = 0u; j < TILE; j++) {
                rowsum -= s_tile[lid * TILE + j];
            }
        }
        for (var d0 = 0u; d0 < params.d; d0 += TILE) {
            let k = k0 + r;
            let dc = d0 + c;
            k_tile[lid] = select(0.0, xhat(k, dc), k < params.n && dc < params.d);
            workgroupBarrier();
            var acc = 0.0;
            for (var j = 0u; j < TILE; j++) {
                acc += s_tile[r * TILE + j] * k_tile[j * TILE + c];
            }
            let a = a0 + r;
            if (a < params.n && dc < params.d) {
                let at = a * params.d + dc;
                grad[at] = select(grad[at], 0.0, k0 == 0u) + acc;
            }
            workgroupBarrier();
        }
    }
    let a = a0 + lid;
    if (is_distance() && lid < TILE && a < params.n) {
        set_stat(a, ROWSUM, rowsum);
    }
}

// Per row: from d loss / d x̂ (times τ, in `grad`) through the normalisation, times grad_scale.
@compute @workgroup_size(256)
fn chain(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params.n) {
        return;
    }
    let scale = params.inv_tau * params.grad_scale;
    let norm = stat(i, NORM);
    var rowsum = 0.0;
    if (is_distance()) {
        rowsum = stat(i, ROWSUM);
    }
    var dot = 0.0;
    for (var c = 0u; c < params.d; c++) {
        dot += xhat(i, c) * (grad[i * params.d + c] + rowsum * xhat(i, c));
    }
    for (var c = 0u; c < params.d; c++) {
        let at = i * params.d + c;
        let g = grad[at] + rowsum * xhat(i, c);
        if (KIND == TRIPLET_HARD) {
            grad[at] = g * scale;
        } else {
            grad[at] = normalize_backward(g, xhat(i, c), dot, norm) * scale;
        }
    }
}
