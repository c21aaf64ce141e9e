// Margin-softmax heads (F5): cosface, arcface, sphereface, adaface on embeddings [N, D], class
// weights [C, D] and labels [N].
//
// With x̂ and ŵ the L2-normalised rows (F.normalize, eps 1e-12), cos_ic = x̂_i · ŵ_c and z_ic the
// head's logit (a margin on the label c = y_i only):
//   loss = (1/N) Σ_i softplus(LN_i - z_iy),  LN_i = LSE_{c != y_i} z_ic
// (= LSE_c z_ic - z_iy, kept exact for a dominant label logit). With dz_ic = p_ic - [c = y_i]:
//   dL/dx̂_i = (1/N) Σ_c dz_ic ∂z_ic/∂cos ŵ_c,   dL/dŵ_c = (1/N) Σ_i dz_ic ∂z_ic/∂cos x̂_i,
// chained through the normalisations (and, for sphereface, through ‖x_i‖, which scales z).
// No N x C buffer exists: the cosines are recomputed in 16 x 16 tiles in workgroup memory,
// from the raw rows scaled by their inverse norms.
//
// The classes are processed in segments of one binding of weights and at most 1024 tiles
// (fewer for a long D; the host binds each segment's slice and its uniforms): `stats` writes a
// running log-sum-exp per row and chunk of the segment, `merge` folds the chunks into each
// row's running one, `grad_rows` accumulates dL/dx̂ segment by segment, `grad_classes`
// accumulates dL/dŵ for the segment's classes row group by row group (as long as segments).
// So no workgroup walks more than 8192 tile steps: lavapipe miscomputes workgroups that run
// much longer.
//
// Passes: rows_prepare (norms, label check), adaface_stats (AdaFace: batch mean/std of the
// clipped norms, EMA state update), per segment classes_prepare, stats and merge; rows_finish,
// finish (the mean); per segment grad_rows, per segment and row group grad_classes, per
// segment chain_classes; chain_rows. With more than one segment, classes_prepare runs again
// before each segment's grad_rows and grad_classes (the norms of one segment are kept at a time).

struct Params {
    n: u32,
    d: u32,
    classes: u32,      // C, every segment
    c0: u32,           // first class of this segment
    cs: u32,           // classes in this segment
    chunk_len: u32,    // classes per chunk of this segment (a multiple of 16)
    chunks: u32,       // chunks of this segment
    r0: u32,           // first row of this row group (grad_classes)
    rs: u32,           // rows in this row group
    sphere_m: u32,
    normalize: u32,    // 0: the rows as they are (info_nce without normalisation)
    extra: u32,        // scratch index of the AdaFace state, the segment's class norms 4 further
    scale: f32,
    margin: f32,
    cos_m: f32,
    sin_m: f32,
    th: f32,
    mm: f32,
    h: f32,
    t_alpha: f32,
    grad_scale: f32,
    pad3: f32,
    pad4: f32,
    pad5: f32,
}

@group(0) @binding(0) var<storage, read> emb: array<f32>;
@group(0) @binding(1) var<storage, read> label_bits: array<u32>;
// The segment's class rows [cs, D].
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_emb: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
// ROW_STATS floats per row, then a running log-sum-exp (2 floats) per row and chunk of the
// segment in progress; from params.extra AdaFace's [batch_mean, batch_std] (the host copies its
// state in before the passes and out after them), and 4 further the class norms of the segment
// in progress [cs]. Eight storage bindings in all, wgpu's default limit.
@group(0) @binding(7) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(8) var<storage, read_write> status: array<atomic<u32>>;

const COSFACE: u32 = 0u;
const ARCFACE: u32 = 1u;
const SPHEREFACE: u32 = 2u;
const ADAFACE: u32 = 3u;
override KIND: u32 = COSFACE;

const NO_ERROR: u32 = 0u;
const ADAFACE_EPS: f32 = 1e-3;
const PI: f32 = 3.14159265358979;

const ROW_STATS: u32 = 10u;
const NORM: u32 = 0u;
const Z_TARGET: u32 = 1u;
const LN: u32 = 2u;
const LSE_ALL: u32 = 3u;
const ROW_LOSS: u32 = 4u;
const GNORM: u32 = 5u;
const ADA_A: u32 = 6u;
// The running log-sum-exp of the other classes' logits over the segments so far.
const NEG_M: u32 = 7u;
const NEG_S: u32 = 8u;

var<workgroup> wg_failed: u32;

fn stat(i: u32, j: u32) -> f32 {
    return scratch[i * ROW_STATS + j];
}

fn set_stat(i: u32, j: u32, v: f32) {
    scratch[i * ROW_STATS + j] = v;
}

fn class_norm(k: u32) -> f32 {
    return scratch[params.extra + 4u + k];
}

fn partial_at(i: u32, chunk: u32) -> u32 {
    return params.n * ROW_STATS + 2u * (i * params.chunks + chunk);
}

fn label(i: u32) -> u32 {
    return label_bits[i];
}

// Whether a bad label was seen (then nothing else is written). Call in uniform control flow.
fn failed(lid: u32) -> bool {
    if (lid == 0u) {
        wg_failed = atomicLoad(&status[0]);
    }
    return workgroupUniformLoad(&wg_failed) != NO_ERROR;
}

fn row_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Per row: the norm, and the label check.
@compute @workgroup_size(256)
fn rows_prepare(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = row_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    if (label(i) >= params.classes) {
        // i32 labels: negative ones are huge as u32.
        atomicMax(&status[0], 0xffffffffu - i);
    }
    var acc = vec2<f32>(0.0, 1.0);
    for (var c = 0u; c < params.d; c++) {
        acc = nrm2_add(acc, emb[i * params.d + c]);
    }
    set_stat(i, NORM, nrm2_value(acc));
}

// AdaFace's clipped norm; NaN stays NaN (and so poisons the statistics for good, as in head.py).
fn clip_norm(norm: f32) -> f32 {
    return select(clamp(norm, 0.001, 100.0), norm, is_nan(norm));
}

// AdaFace: the batch mean and unbiased std of the clipped norms (0 for one row), the EMA update
// of the state, then each row's margin scaler a_i. One workgroup.
@compute @workgroup_size(256)
fn adaface_stats(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    if (failed(lid)) {
        return;
    }
    var sum = 0.0;
    for (var i = lid; i < params.n; i += WG) {
        sum += clip_norm(stat(i, NORM));
    }
    let mean = workgroup_sum(lid, sum) / f32(params.n);
    var dev = 0.0;
    for (var i = lid; i < params.n; i += WG) {
        let e = clip_norm(stat(i, NORM)) - mean;
        dev += e * e;
    }
    let dev_sum = workgroup_sum(lid, dev);
    var sd = 0.0;
    if (params.n > 1u) {
        sd = sqrt(dev_sum / f32(params.n - 1u));
    }
    let batch_mean = mean * params.t_alpha + (1.0 - params.t_alpha) * scratch[params.extra];
    let batch_std = sd * params.t_alpha + (1.0 - params.t_alpha) * scratch[params.extra + 1u];
    workgroupBarrier();
    if (lid == 0u) {
        scratch[params.extra] = batch_mean;
        scratch[params.extra + 1u] = batch_std;
    }
    for (var i = lid; i < params.n; i += WG) {
        let n_i = clip_norm(stat(i, NORM));
        set_stat(i, ADA_A, clamp((n_i - batch_mean) / (batch_std + ADAFACE_EPS) * params.h, -1.0, 1.0));
    }
}

// Per class of the segment: the norm.
@compute @workgroup_size(256)
fn classes_prepare(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = row_index(gid, nwg);
    if (c >= params.cs) {
        return;
    }
    var acc = vec2<f32>(0.0, 1.0);
    for (var j = 0u; j < params.d; j++) {
        acc = nrm2_add(acc, weight[c * params.d + j]);
    }
    scratch[params.extra + 4u + c] = nrm2_value(acc);
}

fn xhat(i: u32, j: u32) -> f32 {
    let x = emb[i * params.d + j];
    if (params.normalize == 0u) {
        return x;
    }
    return normalized(x, stat(i, NORM));
}

fn what(c: u32, j: u32) -> f32 {
    let w = weight[c * params.d + j];
    if (params.normalize == 0u) {
        return w;
    }
    return normalized(w, class_norm(c));
}

// x̂ of row i and ŵ of segment class k at columns j .. j + 3, 0 past the row, the batch or the
// segment.
fn xhat4(i: u32, j: u32) -> vec4<f32> {
    if (i >= params.n || j >= params.d) {
        return vec4<f32>(0.0);
    }
    let at = i * params.d + j;
    return tile_row4(vec4<f32>(emb[at], emb[at + 1u], emb[at + 2u], emb[at + 3u]), stat(i, NORM), j);
}

fn what4(k: u32, j: u32) -> vec4<f32> {
    if (k >= params.cs || j >= params.d) {
        return vec4<f32>(0.0);
    }
    let at = k * params.d + j;
    return tile_row4(vec4<f32>(weight[at], weight[at + 1u], weight[at + 2u], weight[at + 3u]), class_norm(k), j);
}

// Four raw columns j .. of a row as the tiles take them: normalised by the row's norm when
// asked (one norm read for the four), 0 past the row.
fn tile_row4(v: vec4<f32>, norm: f32, j: u32) -> vec4<f32> {
    if (params.normalize == 0u) {
        return within4(v, j, params.d);
    }
    return within4(normalized4(v, norm), j, params.d);
}

// cos for rows i0 + lid / 16 and segment classes k0 + lid % 16 into s_tile (0 outside).
// Call in uniform control flow.
fn cos_tile(lid: u32, i0: u32, k0: u32) {
    let r = lid / TILE;
    let c = lid % TILE;
    var acc = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < params.d; d0 += SPAN) {
        stage_a(lid, xhat4(i0 + r, d0 + 4u * c));
        stage_k(lid, what4(k0 + r, d0 + 4u * c));
        workgroupBarrier();
        acc = block_dot(lid, staged(d0, params.d), false, acc);
        workgroupBarrier();
    }
    s_tile[lid] = tile_entry(lid, acc);
    workgroupBarrier();
}

// SphereFace's ψ(θ) = (-1)^k cos(mθ) - 2k at cosine c, and dψ/dc (k held fixed), with cos(mθ)
// from the multiple-angle sum on the unclamped cosine, as pml's LargeMarginSoftmaxLoss.
fn sphere_psi(c: f32) -> vec2<f32> {
    let m = params.sphere_m;
    let theta = acos(clamp(c, -1.0, 1.0));
    let k = floor(theta / (PI / f32(m)));
    let s2 = 1.0 - c * c;
    var poly = 0.0;
    var dpoly = 0.0;
    var binom = 1.0;
    for (var n = 0u; n <= m / 2u; n++) {
        let p = m - 2u * n;
        let coef = select(-binom, binom, n % 2u == 0u);
        poly += coef * powi(c, p) * powi(s2, n);
        var d = 0.0;
        if (p > 0u) {
            d += f32(p) * powi(c, p - 1u) * powi(s2, n);
        }
        if (n > 0u) {
            d -= 2.0 * f32(n) * powi(c, p + 1u) * powi(s2, n - 1u);
        }
        dpoly += coef * d;
        let a = f32(m - 2u * n);
        let b = f32(2u * n);
        binom *= a * (a - 1.0) / ((b + 1.0) * (b + 2.0));
    }
    let sgn = select(-1.0, 1.0, k % 2.0 == 0.0);
    return vec2<f32>(sgn * poly - 2.0 * k, sgn * dpoly);
}

fn powi(x: f32, e: u32) -> f32 {
    var r = 1.0;
    for (var j = 0u; j < e; j++) {
        r *= x;
    }
    return r;
}

// The logit of row i at cosine `cos`: (z, ∂z/∂cos, ∂z/∂‖x_i‖).
fn head(i: u32, cosine: f32, is_y: bool) -> vec3<f32> {
    if (is_nan(cosine)) {
        // (The clamps below would drop a NaN.)
        return vec3<f32>(cosine);
    }
    let s = params.scale;
    if (KIND == COSFACE) {
        return vec3<f32>(s * (cosine - select(0.0, params.margin, is_y)), s, 0.0);
    }
    if (KIND == ARCFACE) {
        if (!is_y) {
            return vec3<f32>(s * cosine, s, 0.0);
        }
        let c = clamp(cosine, -1.0, 1.0);
        if (c > params.th) {
            let sin_t = sqrt(max(1.0 - c * c, 0.0));
            let dz = select(0.0, s * (params.cos_m + c * params.sin_m / sin_t), abs(cosine) < 1.0);
            return vec3<f32>(s * (c * params.cos_m - sin_t * params.sin_m), dz, 0.0);
        }
        return vec3<f32>(s * (c - params.mm), select(0.0, s, abs(cosine) <= 1.0), 0.0);
    }
    if (KIND == SPHEREFACE) {
        let r = stat(i, NORM);
        var psi = vec2<f32>(cosine, 1.0);
        if (is_y) {
            psi = sphere_psi(cosine);
        }
        return vec3<f32>(r * psi.x, r * psi.y, psi.x);
    }
    // AdaFace.
    let eps = ADAFACE_EPS;
    let inside_c = cosine >= -1.0 + eps && cosine <= 1.0 - eps;
    let c = clamp(cosine, -1.0 + eps, 1.0 - eps);
    if (!is_y) {
        // acos then cos, with the angle inside its clip: exactly the clamped cosine.
        return vec3<f32>(s * c, select(0.0, s, inside_c), 0.0);
    }
    let a = stat(i, ADA_A);
    let theta = acos(c);
    let shifted = theta - params.margin * a;
    let theta_m = clamp(shifted, eps, PI - eps);
    let g_add = params.margin + params.margin * a;
    let inside = inside_c && shifted >= eps && shifted <= PI - eps;
    return vec3<f32>(s * (cos(theta_m) - g_add), select(0.0, s * sin(theta_m) / sin(theta), inside), 0.0);
}

// Per block of 16 rows and chunk of the segment's classes: the running log-sum-exp of the
// logits of the other classes, and the label's logit where the chunk holds it.
@compute @workgroup_size(256)
fn stats(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    if (failed(lid)) {
        return;
    }
    let i0 = wid.x * TILE;
    let k_start = wid.y * params.chunk_len;
    let k_end = min(k_start + params.chunk_len, params.cs);
    // Each invocation keeps the log-sum-exp of its own tile entries (row lid / 16, every 16th
    // class from lid % 16); the rows' 16 are merged at the end.
    let r = lid / TILE;
    let c = lid % TILE;
    let i = i0 + r;
    var y = 0u;
    if (i < params.n) {
        y = label(i);
    }
    var neg = LSE_EMPTY;
    var nan_seen = false;
    for (var k0 = k_start; k0 < k_end; k0 += TILE) {
        cos_tile(lid, i0, k0);
        let k = k0 + c;
        if (i < params.n && k < k_end) {
            let is_y = params.c0 + k == y;
            let z = head(i, s_tile[lid], is_y).x;
            nan_seen = nan_seen || is_nan(z);
            if (is_y) {
                set_stat(i, Z_TARGET, z);
            } else {
                neg = lse_add(neg, z);
            }
        }
    }
    let poisoned = select(neg, vec2<f32>(neg.x, bitcast<f32>(0x7fc00000u)), nan_seen);
    let merged = merge_row_lse2(lid, vec4<f32>(poisoned, LSE_EMPTY)).xy;
    if (lid < TILE && i0 + lid < params.n) {
        let at = partial_at(i0 + lid, wid.y);
        scratch[at] = merged.x;
        scratch[at + 1u] = merged.y;
    }
}

// Per row: the segment's chunks merged into the running log-sum-exp (NaN-poisoned in its sum).
@compute @workgroup_size(256)
fn merge(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = row_index(gid, nwg);
    if (i >= params.n || atomicLoad(&status[0]) != NO_ERROR) {
        return;
    }
    var neg = LSE_EMPTY;
    if (params.c0 != 0u) {
        neg = vec2<f32>(stat(i, NEG_M), stat(i, NEG_S));
    }
    var nan_seen = is_nan(neg.y);
    for (var chunk = 0u; chunk < params.chunks; chunk++) {
        let at = partial_at(i, chunk);
        let part = vec2<f32>(scratch[at], scratch[at + 1u]);
        nan_seen = nan_seen || is_nan(part.y);
        if (part.y >= 0.0) {
            neg = lse_merge(neg, part);
        }
    }
    set_stat(i, NEG_M, neg.x);
    set_stat(i, NEG_S, select(neg.y, bitcast<f32>(0x7fc00000u), nan_seen));
}

// Per row: the row's loss from the merged log-sum-exp.
@compute @workgroup_size(256)
fn rows_finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = row_index(gid, nwg);
    if (i >= params.n || atomicLoad(&status[0]) != NO_ERROR) {
        return;
    }
    let neg_s = stat(i, NEG_S);
    var ln = lse_value(vec2<f32>(stat(i, NEG_M), neg_s));
    if (is_nan(neg_s)) {
        ln = neg_s;
    }
    let zy = stat(i, Z_TARGET);
    let row_loss = softplus(ln - zy);
    set_stat(i, LN, ln);
    set_stat(i, LSE_ALL, zy + row_loss);
    set_stat(i, ROW_LOSS, row_loss);
}

// One workgroup: the mean of the row losses.
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    if (failed(lid)) {
        return;
    }
    var sum = 0.0;
    for (var i = lid; i < params.n; i += WG) {
        sum += stat(i, ROW_LOSS);
    }
    let total = workgroup_sum(lid, sum);
    if (lid == 0u) {
        loss[0] = total / f32(params.n);
    }
}

// (grad_scale/N) dz_ic ∂z/∂cos and (grad_scale/N) dz_ic ∂z/∂‖x_i‖ for row i, segment class k.
fn coef(i: u32, k: u32, cosine: f32) -> vec2<f32> {
    if (i >= params.n || k >= params.cs) {
        return vec2<f32>(0.0);
    }
    let is_y = params.c0 + k == label(i);
    let z = head(i, cosine, is_y);
    var dz: f32;
    if (is_y) {
        dz = -sigmoid(stat(i, LN) - z.x);
    } else {
        dz = exp(z.x - stat(i, LSE_ALL));
    }
    let w = params.grad_scale / f32(params.n);
    return w * dz * z.yz;
}

// Per block of 16 rows: dL/dx̂ over the segment's classes, added to grad_emb (written by the
// first segment), and dL/d‖x‖ into GNORM.
@compute @workgroup_size(256)
fn grad_rows(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    if (failed(lid)) {
        return;
    }
    let i0 = wid.x * TILE;
    let r = lid / TILE;
    let c = lid % TILE;
    let first = params.c0 == 0u;
    var gnorm = 0.0;
    for (var k0 = 0u; k0 < params.cs; k0 += TILE) {
        cos_tile(lid, i0, k0);
        let g = coef(i0 + r, k0 + c, s_tile[lid]);
        workgroupBarrier();
        s_tile[lid] = g.x;
        // Each invocation's share of its row's sum, merged at the end.
        gnorm += g.y;
        workgroupBarrier();
        for (var d0 = 0u; d0 < params.d; d0 += SPAN) {
            let dc = d0 + 4u * c;
            stage_k(lid, what4(k0 + r, dc));
            workgroupBarrier();
            let acc = tile_combine(r, c, false);
            let i = i0 + r;
            for (var q = 0u; q < 4u; q++) {
                if (i < params.n && dc + q < params.d) {
                    let at = i * params.d + dc + q;
                    grad_emb[at] = select(grad_emb[at], 0.0, first && k0 == 0u) + acc[q];
                }
            }
            workgroupBarrier();
        }
    }
    gnorm = merge_row_sums(lid, vec4<f32>(gnorm, 0.0, 0.0, 0.0)).x;
    let i = i0 + lid;
    if (lid < TILE && i < params.n) {
        set_stat(i, GNORM, select(stat(i, GNORM), 0.0, first) + gnorm);
    }
}

// Per block of 16 classes of the segment: dL/dŵ over the rows of the row group, added to
// grad_weight (written by the first group).
@compute @workgroup_size(256)
fn grad_classes(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    if (failed(lid)) {
        return;
    }
    let k0 = wid.x * TILE;
    let r = lid / TILE;
    let c = lid % TILE;
    for (var i0 = params.r0; i0 < params.r0 + params.rs; i0 += TILE) {
        cos_tile(lid, i0, k0);
        let g = coef(i0 + r, k0 + c, s_tile[lid]);
        workgroupBarrier();
        // s_tile[row * 16 + class].
        s_tile[lid] = g.x;
        workgroupBarrier();
        for (var d0 = 0u; d0 < params.d; d0 += SPAN) {
            let dc = d0 + 4u * c;
            stage_k(lid, xhat4(i0 + r, dc));
            workgroupBarrier();
            let acc = tile_combine(r, c, true);
            let k = k0 + r;
            for (var q = 0u; q < 4u; q++) {
                if (k < params.cs && dc + q < params.d) {
                    let at = k * params.d + dc + q;
                    grad_weight[at] = select(grad_weight[at], 0.0, i0 == 0u) + acc[q];
                }
            }
            workgroupBarrier();
        }
    }
}

// Per class of the segment: dL/dŵ through the normalisation.
@compute @workgroup_size(256)
fn chain_classes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = row_index(gid, nwg);
    if (k >= params.cs || atomicLoad(&status[0]) != NO_ERROR || params.normalize == 0u) {
        return;
    }
    let norm = class_norm(k);
    var dot = 0.0;
    for (var j = 0u; j < params.d; j++) {
        dot += what(k, j) * grad_weight[k * params.d + j];
    }
    for (var j = 0u; j < params.d; j++) {
        let at = k * params.d + j;
        grad_weight[at] = normalize_backward(grad_weight[at], what(k, j), dot, norm);
    }
}

// Per row: dL/dx̂ through the normalisation, plus dL/d‖x‖ · x/‖x‖ (sphereface).
@compute @workgroup_size(256)
fn chain_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = row_index(gid, nwg);
    if (i >= params.n || atomicLoad(&status[0]) != NO_ERROR || params.normalize == 0u) {
        return;
    }
    let norm = stat(i, NORM);
    let gnorm = stat(i, GNORM);
    var dot = 0.0;
    for (var j = 0u; j < params.d; j++) {
        dot += xhat(i, j) * grad_emb[i * params.d + j];
    }
    for (var j = 0u; j < params.d; j++) {
        let at = i * params.d + j;
        var g = normalize_backward(grad_emb[at], xhat(i, j), dot, norm);
        if (norm > 0.0 && gnorm != 0.0) {
            g += gnorm * emb[at] / norm;
        }
        grad_emb[at] = g;
    }
}
