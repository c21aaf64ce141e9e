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
// Passes: `normalize` (x̂ and norms into `scratch`), `stats` (per anchor: LSE over all others
// (supcon), LSE over negatives, positive count and sum), `pairs` (nt_xent: per anchor
// R_a = Σ_p σ(LN_a - s_ap) and Σ_p loss_ap), `finish` (one workgroup: the loss and each anchor's
// weight), `grad`, `chain`.
//
// Key ranges: every walk over the keys covers [params.k_begin, params.k_end) only, and the host
// runs one dispatch per range (each with its own parameters, at a dynamic offset), so that no
// workgroup walks more than a bounded number of tiles (lavapipe miscomputes workgroups that
// walk much longer). A range after the first merges its statistics into those of the ranges
// before it, in key order, so ties still go to the lowest index.

struct Params {
    n: u32,
    d: u32,
    views_half: u32,   // views mode: N/2 (labels are i mod N/2), else 0
    squared: u32,      // triplet: squared distances
    inv_tau: f32,      // 1 for the distance kinds
    grad_scale: f32,
    margin_a: f32,     // contrastive: pos_margin; triplet: margin
    margin_b: f32,     // contrastive: neg_margin
    k_begin: u32,      // the keys this dispatch walks: [k_begin, k_end), k_begin % 16 == 0
    k_end: u32,
    chunk: u32,        // semi-hard: the chunk of 16 positives per anchor this dispatch mines
    pad: u32,
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
// Triplet with semi-hard mining (FaceNet, as TF Addons' triplet_semihard_loss): for each ordered
// positive pair (a, p), the closest negative farther than p, else the farthest negative; the
// mean of max(0, d_ap - d_an + margin) over the positive pairs with a negative.
const TRIPLET_SEMI: u32 = 4u;
override KIND: u32 = SUPCON;

const STATS: u32 = 8u;
// Per-anchor statistics. supcon keeps its log-sum-exp over all others as the running pair
// (ALL_MAX, ALL_EXCESS) = (m, t) (the prelude's `lse_add`), so that a confident anchor's small
// loss (m - mean s_ap) + log1p(t) and its positive's coefficient keep their relative accuracy.
const ALL_MAX: u32 = 0u;
const LSE_NEG: u32 = 1u;
const POS: u32 = 2u;
const POS_SUM: u32 = 3u;
const RATE: u32 = 4u;        // nt_xent
const ALL_EXCESS: u32 = 4u;  // supcon
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
// Semi-hard: per anchor, its number of positives and, over the chunks mined so far, the sum of
// its pairs' hinges and the number of its pairs with a negative.
const POSITIVES: u32 = 0u;
const HINGE_SUM: u32 = 1u;
const PAIRS: u32 = 2u;
// After the per-anchor statistics: the largest number of positives of any anchor, and the
// weight 1 / (pairs with a negative).
const MAX_POSITIVES: u32 = 0u;
const PAIR_WEIGHT: u32 = 1u;
const GLOBALS: u32 = 2u;
// Semi-hard records: one per anchor and slot j < 16 of the current chunk, the chunk's j-th
// positive (the (16·chunk + j)-th of the anchor in index order) and its negative.
const SLOTS: u32 = 16u;
const RECORD: u32 = 8u;
const R_P: u32 = 0u;       // the positive's index, NONE for no (active) triplet
const R_N: u32 = 1u;       // the closest negative farther than p so far, then the chosen one
const R_D_AP: u32 = 2u;
const R_D_N: u32 = 3u;     // its distance
const R_FAR: u32 = 4u;     // the farthest negative so far
const R_D_FAR: u32 = 5u;
const R_CURSOR: u32 = 6u;  // the slot's positive of the previous chunk
const R_NAN: u32 = 7u;     // 1 when a NaN distance was seen

fn is_distance() -> bool {
    return KIND == CONTRASTIVE || KIND == TRIPLET_HARD || KIND == TRIPLET_SEMI;
}

// The mined triplets use the raw rows, the others the normalised ones.
fn raw_rows() -> bool {
    return KIND == TRIPLET_HARD || KIND == TRIPLET_SEMI;
}

fn global_at(j: u32) -> u32 {
    return params.n * params.d + params.n * STATS + j;
}

fn record_at(r: u32, j: u32) -> u32 {
    return global_at(GLOBALS) + r * RECORD + j;
}

fn record(r: u32, j: u32) -> f32 {
    return scratch[record_at(r, j)];
}

fn record_index(r: u32, j: u32) -> u32 {
    return bitcast<u32>(scratch[record_at(r, j)]);
}

fn set_record(r: u32, j: u32, v: f32) {
    scratch[record_at(r, j)] = v;
}

fn set_record_index(r: u32, j: u32, v: u32) {
    scratch[record_at(r, j)] = bitcast<f32>(v);
}

// Whether this dispatch's chunk lies past every anchor's positives (semi-hard).
fn chunk_empty() -> bool {
    return params.chunk * SLOTS >= bitcast<u32>(scratch[global_at(MAX_POSITIVES)]);
}

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

// x̂ of row i at columns c .. c + 3, 0 past the row or the batch.
fn xhat4(i: u32, c: u32) -> vec4<f32> {
    if (i >= params.n || c >= params.d) {
        return vec4<f32>(0.0);
    }
    let at = i * params.d + c;
    let v = vec4<f32>(scratch[at], scratch[at + 1u], scratch[at + 2u], scratch[at + 3u]);
    return within4(v, c, params.d);
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
        scratch[i * params.d + c] = select(normalized(x, norm), x, raw_rows());
    }
    set_stat(i, NORM, norm);
    if (KIND == TRIPLET_SEMI) {
        var positives = 0u;
        let yi = label(i);
        for (var k = 0u; k < params.n; k++) {
            positives += select(0u, 1u, k != i && label(k) == yi);
        }
        set_stat(i, POSITIVES, bitcast<f32>(positives));
        set_stat(i, HINGE_SUM, 0.0);
        set_stat(i, PAIRS, 0.0);
    }
}

// The tile s_ak / τ for anchors a0 + lid / 16 and keys k0 + lid % 16 into s_tile (0 outside
// the batch). Call in uniform control flow.
fn similarity_tile(lid: u32, a0: u32, k0: u32) {
    let r = lid / TILE;
    let c = lid % TILE;
    var acc = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < params.d; d0 += SPAN) {
        stage_a(lid, xhat4(a0 + r, d0 + 4u * c));
        stage_k(lid, xhat4(k0 + r, d0 + 4u * c));
        workgroupBarrier();
        acc = block_dot(lid, staged(d0, params.d), is_distance(), acc);
        workgroupBarrier();
    }
    let v = tile_entry(lid, acc);
    if (is_distance()) {
        // Differences summed directly: no cancellation for close rows.
        s_tile[lid] = select(sqrt(v), v, params.squared != 0u);
    } else {
        s_tile[lid] = v * params.inv_tau;
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
    // Each invocation keeps the statistics of its own tile entries (anchor a0 + lid / 16, every
    // 16th key from lid % 16); each anchor's 16 are merged at the end.
    let anchor = a0 + lid / TILE;
    var y_anchor = 0;
    if (anchor < params.n) {
        y_anchor = label(anchor);
    }
    var all = LSE_EMPTY;
    var neg = LSE_EMPTY;
    var pos = 0.0;
    var pos_sum = 0.0;
    var nan_seen = false;
    for (var k0 = params.k_begin; k0 < params.k_end; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        let k = k0 + lid % TILE;
        if (anchor < params.n && k < params.n && k != anchor) {
            let s = s_tile[lid];
            nan_seen = nan_seen || is_nan(s);
            all = lse_add(all, s);
            if (label(k) == y_anchor) {
                pos += 1.0;
                pos_sum += s;
            } else {
                neg = lse_add(neg, s);
            }
        }
    }
    let lse = merge_row_lse2(lid, vec4<f32>(all, neg));
    let sums = merge_row_sums(lid, vec4<f32>(pos, pos_sum, select(0.0, 1.0, nan_seen), 0.0));
    let a = a0 + lid;
    if (lid < TILE && a < params.n) {
        all = lse.xy;
        neg = lse.zw;
        pos = sums.x;
        pos_sum = sums.y;
        nan_seen = sums.z > 0.0;
        if (params.k_begin > 0u) {
            // After the first key range: merge with the ranges before.
            nan_seen = nan_seen || is_nan(stat(a, LSE_NEG));
            if (KIND == SUPCON) {
                nan_seen = nan_seen || is_nan(stat(a, ALL_EXCESS));
                all = lse_merge(all, vec2<f32>(stat(a, ALL_MAX), stat(a, ALL_EXCESS)));
            }
            neg = lse_add(neg, stat(a, LSE_NEG));
            pos += stat(a, POS);
            pos_sum += stat(a, POS_SUM);
        }
        let poison = select(0.0, bitcast<f32>(0x7fc00000u), nan_seen);
        set_stat(a, LSE_NEG, lse_value(neg) + poison);
        if (KIND == SUPCON) {
            set_stat(a, ALL_MAX, all.x);
            set_stat(a, ALL_EXCESS, all.y + poison);
        }
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
    // Per invocation its own tile entries, merged per anchor at the end (as `stats`); each
    // invocation meets its keys in increasing order, so strict comparisons keep the lowest index
    // on a tie, and the merge compares indices where distances tie.
    let anchor = a0 + lid / TILE;
    var y_anchor = 0;
    if (anchor < params.n) {
        y_anchor = label(anchor);
    }
    var pos = 0.0;
    var pos_sum = 0.0;
    var neg = 0.0;
    var neg_sum = 0.0;
    var p_idx = NONE;
    var n_idx = NONE;
    var d_ap = 0.0;
    var d_an = 0.0;
    var nan_seen = false;
    for (var k0 = params.k_begin; k0 < params.k_end; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        let k = k0 + lid % TILE;
        if (anchor < params.n && k < params.n && k != anchor) {
            let s = s_tile[lid];
            nan_seen = nan_seen || is_nan(s);
            let positive = label(k) == y_anchor;
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
    let a = a0 + lid;
    if (KIND == CONTRASTIVE) {
        let sums = merge_row_sums(lid, vec4<f32>(pos, pos_sum, neg, neg_sum));
        pos = sums.x;
        pos_sum = sums.y;
        neg = sums.z;
        neg_sum = sums.w;
    } else {
        let best = merge_row_extremes(lid, vec4<f32>(d_ap, bitcast<f32>(p_idx), d_an, bitcast<f32>(n_idx)));
        d_ap = best.x;
        p_idx = bitcast<u32>(best.y);
        d_an = best.z;
        n_idx = bitcast<u32>(best.w);
    }
    nan_seen = merge_row_sums(lid, vec4<f32>(select(0.0, 1.0, nan_seen))).x > 0.0;
    if (lid < TILE && a < params.n && params.k_begin > 0u) {
        // After the first key range: merge with the ranges before (their keys come first).
        if (KIND == CONTRASTIVE) {
            neg += stat(a, NEG_COUNT);
            neg_sum += stat(a, NEG_SUM);
            pos += stat(a, POS);
            pos_sum += stat(a, POS_SUM);
        } else {
            let before_p = bitcast<u32>(stat(a, P_IDX));
            let before_n = bitcast<u32>(stat(a, N_IDX));
            nan_seen = nan_seen || is_nan(stat(a, D_AP)) || is_nan(stat(a, D_AN));
            if (before_p != NONE && !(p_idx != NONE && d_ap > stat(a, D_AP))) {
                p_idx = before_p;
                d_ap = stat(a, D_AP);
            }
            if (before_n != NONE && !(n_idx != NONE && d_an < stat(a, D_AN))) {
                n_idx = before_n;
                d_an = stat(a, D_AN);
            }
        }
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

// The farthest positive and the closest negative (d_ap, p_idx, d_an, n_idx; indices as bits,
// NONE for none) that the 16 invocations of each tile row found among their own keys, merged
// per row: the lowest index on a tie. Valid in invocation r for row r. Call in uniform control
// flow.
fn merge_row_extremes(lid: u32, found: vec4<f32>) -> vec4<f32> {
    row_tile[lid] = found;
    workgroupBarrier();
    var d_ap = 0.0;
    var p_idx = NONE;
    var d_an = 0.0;
    var n_idx = NONE;
    if (lid < TILE) {
        for (var c = 0u; c < TILE; c++) {
            let part = row_tile[lid * TILE + c];
            let p = bitcast<u32>(part.y);
            if (p != NONE && (p_idx == NONE || part.x > d_ap || (part.x == d_ap && p < p_idx))) {
                p_idx = p;
                d_ap = part.x;
            }
            let n = bitcast<u32>(part.w);
            if (n != NONE && (n_idx == NONE || part.z < d_an || (part.z == d_an && n < n_idx))) {
                n_idx = n;
                d_an = part.z;
            }
        }
    }
    workgroupBarrier();
    return vec4<f32>(d_ap, bitcast<f32>(p_idx), d_an, bitcast<f32>(n_idx));
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
        } else if (KIND == TRIPLET_SEMI) {
            a_sum += stat(a, HINGE_SUM);
            a_count += stat(a, PAIRS);
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
        scratch[global_at(PAIR_WEIGHT)] = w_pos;
    }
    if (KIND == TRIPLET_SEMI) {
        return;
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
    // Per invocation its own tile entries, merged per anchor at the end (as `stats`).
    let anchor = a0 + lid / TILE;
    var y_anchor = 0;
    var ln = 0.0;
    if (anchor < params.n) {
        y_anchor = label(anchor);
        ln = stat(anchor, LSE_NEG);
    }
    var rate = 0.0;
    var total = 0.0;
    for (var k0 = params.k_begin; k0 < params.k_end; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        let k = k0 + lid % TILE;
        if (anchor < params.n && k < params.n && k != anchor && label(k) == y_anchor) {
            let z = ln - s_tile[lid];
            rate += sigmoid(z);
            total += softplus(z);
        }
    }
    let sums = merge_row_sums(lid, vec4<f32>(rate, total, 0.0, 0.0));
    let a = a0 + lid;
    if (lid < TILE && a < params.n) {
        rate = sums.x;
        total = sums.y;
        if (params.k_begin > 0u) {
            rate += stat(a, RATE);
            total += stat(a, PAIR_LOSS);
        }
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
                sum += (stat(a, ALL_MAX) - stat(a, POS_SUM) / p) + log1p(stat(a, ALL_EXCESS));
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
    if (KIND == TRIPLET_SEMI) {
        // The chunk's active triplets of anchor a: +1 per one with positive k, -1 per one with
        // negative k (the weight 1 / pairs is applied in `chain`).
        var c = 0.0;
        for (var j = 0u; j < SLOTS; j++) {
            let r = a * SLOTS + j;
            let p = record_index(r, R_P);
            if (p == NONE) {
                continue;
            }
            c += select(0.0, 1.0, p == k) - select(0.0, 1.0, record_index(r, R_N) == k);
        }
        return c;
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
        // log softmax_k; with a single positive its coefficient softmax_p - 1 as expm1, which
        // keeps a confident anchor's tiny value.
        let lp = (s - stat(a, ALL_MAX)) - log1p(stat(a, ALL_EXCESS));
        if (positive && stat(a, POS) == 1.0) {
            return w * expm1(lp);
        }
        return w * (exp(lp) - select(0.0, 1.0 / stat(a, POS), positive));
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
    // Semi-hard: the chunks past every anchor's positives launch no workgroups (`semi_max`).
    let a0 = wid.x * TILE;
    let r = lid / TILE;
    let c = lid % TILE;
    // Semi-hard adds every chunk to the first one's gradient.
    let first = params.chunk == 0u && params.k_begin == 0u;
    var rowsum = 0.0;
    for (var k0 = params.k_begin; k0 < params.k_end; k0 += TILE) {
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
        // Each invocation's share of its anchor's row sum, merged at the end.
        rowsum -= ci;
        workgroupBarrier();
        for (var d0 = 0u; d0 < params.d; d0 += SPAN) {
            let dc = d0 + 4u * c;
            stage_k(lid, xhat4(k0 + r, dc));
            workgroupBarrier();
            let acc = tile_combine(r, c, false);
            let a = a0 + r;
            for (var q = 0u; q < 4u; q++) {
                if (a < params.n && dc + q < params.d) {
                    let at = a * params.d + dc + q;
                    grad[at] = select(grad[at], 0.0, first && k0 == 0u) + acc[q];
                }
            }
            workgroupBarrier();
        }
    }
    if (is_distance()) {
        rowsum = merge_row_sums(lid, vec4<f32>(rowsum, 0.0, 0.0, 0.0)).x;
        let a = a0 + lid;
        if (lid < TILE && a < params.n) {
            if (!first) {
                rowsum += stat(a, ROWSUM);
            }
            set_stat(a, ROWSUM, rowsum);
        }
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
    var scale = params.inv_tau * params.grad_scale;
    if (KIND == TRIPLET_SEMI) {
        scale *= scratch[global_at(PAIR_WEIGHT)];
    }
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
        if (raw_rows()) {
            grad[at] = g * scale;
        } else {
            grad[at] = normalize_backward(g, xhat(i, c), dot, norm) * scale;
        }
    }
}

// ---- Semi-hard mining -------------------------------------------------------------------------
// Each ordered positive pair needs its own negative, so the pairs are mined in chunks of 16 per
// anchor (one dispatch sequence per chunk, the records reused): `pick` finds each slot's
// positive and d_ap, `mine` walks the keys keeping the closest negative farther than the
// positive and the farthest one, `settle` chooses and adds the hinges to the anchor's sums, and
// `grad_pass` adds the chunk's active triplets to the gradient (coef counts, from the records,
// how often k is the positive or the negative of a's triplets). The gradient is scaled by
// 1 / (pairs with a negative) in `chain`. The host encodes a chunk
// for every possible count of positives (N - 1), dispatched indirectly: `semi_max` gives the
// chunks within the largest count their workgroups, and the others launch none (the first
// always runs). Memory: 8 floats per anchor and slot.

var<workgroup> most_positives: atomic<u32>;
var<workgroup> skip_chunk: u32;

// The semi-hard chunks' indirect dispatches: records (x, 1, 1, count), x = 0 until `semi_max`
// sets it to count; three a chunk (pick, mine and grad_pass, settle).
@group(1) @binding(0) var<storage, read_write> semi_dispatch: array<u32>;
const SEMI_RECORDS: u32 = 3u;

// One workgroup: the largest number of positives of any anchor.
@compute @workgroup_size(256)
fn semi_max(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    // Workgroup memory starts undefined (the pipelines skip its zeroing).
    if (lid == 0u) {
        atomicStore(&most_positives, 0u);
    }
    workgroupBarrier();
    var most = 0u;
    for (var a = lid; a < params.n; a += WG) {
        most = max(most, bitcast<u32>(stat(a, POSITIVES)));
    }
    atomicMax(&most_positives, most);
    workgroupBarrier();
    let positives = atomicLoad(&most_positives);
    if (lid == 0u) {
        scratch[global_at(MAX_POSITIVES)] = bitcast<f32>(positives);
    }
    for (var c = 1u + lid; c * SLOTS < positives; c += WG) {
        for (var k = 0u; k < SEMI_RECORDS; k++) {
            let at = 4u * (SEMI_RECORDS * c + k);
            semi_dispatch[at] = semi_dispatch[at + 3u];
        }
    }
}

fn distance_rows(a: u32, k: u32) -> f32 {
    // Summed in the order the tiles sum it.
    var acc = 0.0;
    for (var c = 0u; c < params.d; c++) {
        let t = xhat(a, c) - xhat(k, c);
        acc += t * t;
    }
    return select(sqrt(acc), acc, params.squared != 0u);
}

// One invocation per record: the slot's positive (the next 16th after the previous chunk's),
// its distance, and empty mining state.
@compute @workgroup_size(256)
fn pick(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r = gid.x + gid.y * nwg.x * 256u;
    if (r >= params.n * SLOTS) {
        return;
    }
    if (chunk_empty()) {
        // The first chunk always runs `grad_pass`, which reads the records.
        if (params.chunk == 0u) {
            set_record_index(r, R_P, NONE);
        }
        return;
    }
    let a = r / SLOTS;
    set_record_index(r, R_P, NONE);
    if (params.chunk * SLOTS + r % SLOTS >= bitcast<u32>(stat(a, POSITIVES))) {
        return;
    }
    var k = 0u;
    var left = r % SLOTS + 1u;
    if (params.chunk > 0u) {
        k = record_index(r, R_CURSOR) + 1u;
        left = SLOTS;
    }
    let ya = label(a);
    for (; k < params.n; k++) {
        if (k != a && label(k) == ya) {
            left -= 1u;
            if (left == 0u) {
                break;
            }
        }
    }
    if (k >= params.n) {
        return;
    }
    set_record_index(r, R_CURSOR, k);
    set_record_index(r, R_P, k);
    set_record(r, R_D_AP, distance_rows(a, k));
    set_record_index(r, R_N, NONE);
    set_record(r, R_D_N, 0.0);
    set_record_index(r, R_FAR, NONE);
    set_record(r, R_D_FAR, 0.0);
    set_record(r, R_NAN, 0.0);
}

// A workgroup per 16 anchors, an invocation per anchor and slot: over this dispatch's keys, the
// closest negative farther than the slot's positive and the farthest negative (the lowest index
// on a tie; the ranges come in key order).
@compute @workgroup_size(256)
fn mine(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let lid = lid3.x;
    if (lid == 0u) {
        skip_chunk = select(0u, 1u, chunk_empty());
    }
    if (workgroupUniformLoad(&skip_chunk) != 0u) {
        return;
    }
    let a0 = wid.x * TILE;
    let row = lid / SLOTS;
    let a = a0 + row;
    let r = a * SLOTS + lid % SLOTS;
    var p = NONE;
    if (a < params.n) {
        p = record_index(r, R_P);
    }
    var d_ap = 0.0;
    var best = NONE;
    var d_best = 0.0;
    var far = NONE;
    var d_far = 0.0;
    var nan_seen = false;
    var ya = 0;
    if (p != NONE) {
        d_ap = record(r, R_D_AP);
        best = record_index(r, R_N);
        d_best = record(r, R_D_N);
        far = record_index(r, R_FAR);
        d_far = record(r, R_D_FAR);
        nan_seen = record(r, R_NAN) != 0.0;
        ya = label(a);
    }
    for (var k0 = params.k_begin; k0 < params.k_end; k0 += TILE) {
        similarity_tile(lid, a0, k0);
        if (p != NONE) {
            for (var c = 0u; c < TILE; c++) {
                let k = k0 + c;
                if (k >= params.n || label(k) == ya) {
                    continue;
                }
                let s = s_tile[row * TILE + c];
                nan_seen = nan_seen || is_nan(s);
                if (s > d_ap && (best == NONE || s < d_best)) {
                    best = k;
                    d_best = s;
                }
                if (far == NONE || s > d_far) {
                    far = k;
                    d_far = s;
                }
            }
        }
        workgroupBarrier();
    }
    if (p != NONE) {
        set_record_index(r, R_N, best);
        set_record(r, R_D_N, d_best);
        set_record_index(r, R_FAR, far);
        set_record(r, R_D_FAR, d_far);
        set_record(r, R_NAN, select(0.0, 1.0, nan_seen));
    }
}

// One invocation per anchor: each slot's negative (the closest farther one, else the farthest),
// its hinge into the anchor's sums; slots without a negative or with an inactive hinge cleared
// for `grad_pass` (the hinge passes its gradient at 0, as TF's maximum).
@compute @workgroup_size(256)
fn settle(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let a = gid.x + gid.y * nwg.x * 256u;
    if (a >= params.n || chunk_empty()) {
        return;
    }
    var sum = 0.0;
    var pairs = 0.0;
    for (var j = 0u; j < SLOTS; j++) {
        let r = a * SLOTS + j;
        if (record_index(r, R_P) == NONE) {
            continue;
        }
        var ng = record_index(r, R_N);
        var d_an = record(r, R_D_N);
        if (ng == NONE) {
            ng = record_index(r, R_FAR);
            d_an = record(r, R_D_FAR);
        }
        if (ng == NONE) {
            set_record_index(r, R_P, NONE);
            continue;
        }
        var h = record(r, R_D_AP) - d_an + params.margin_a;
        if (record(r, R_NAN) != 0.0) {
            h = bitcast<f32>(0x7fc00000u);
        }
        sum += select(max(h, 0.0), h, is_nan(h));
        pairs += 1.0;
        set_record_index(r, R_N, ng);
        set_record(r, R_D_N, d_an);
        if (!(h >= 0.0)) {
            set_record_index(r, R_P, NONE);
        }
    }
    set_stat(a, HINGE_SUM, stat(a, HINGE_SUM) + sum);
    set_stat(a, PAIRS, stat(a, PAIRS) + pairs);
}
