// sinkhorn (geomloss SamplesLoss("sinkhorn"), balanced, log domain): the debiased Sinkhorn
// divergence of two weighted point clouds x [N, D], y [M, D], with ε-scaling. The cost matrices
// are never stored: every pass recomputes C(u, v) = ½‖u − v‖² (p = 2) or √max(‖u − v‖², 1e-8)
// (p = 1) for the pairs it walks.
//
// The points of both clouds lie one after the other (x then y, T = N + M rows), and so do their
// weights and each potential. A potential slot holds T values: over the x rows the potential of
// the problem whose queries are x, over the y rows the one whose queries are y. The cross slots
// hold (f_ba, g_ab), the self slots (f_aa, g_bb). Point q's keys are the other cloud (cross) or
// its own (self); the final step's soft-mins have their log-sum-exps two slots further. The
// soft-min over the keys is
//   S_q = −ε · log Σ_j exp(h_j − C(p_q, p_j)/ε),  h_j = log w_j + pot_j/ε  (log w_j alone at init)
// accumulated as a running (max, sum) across the key ranges of successive dispatches.
//
//   prep:      w (uniform 1/N, 1/M unless given) and log w (−1e30 for a zero weight)
//   bbox:      one workgroup per dimension: min and max over both clouds
//   schedule:  the diameter and geomloss's ε list: [len, diameter, loss, 0, ε_0, ε_1, …]
//   softmin:   one soft-min per point over one key range; then, at the last range, the new
//              potential: S (init, final) or ½(old + S) (the symmetric loop's averaged update)
//   grad_pass: a_q·Σ_j π_qj ∇₁C(p_q, p_j) into the gradient rows, π the soft-min weights of the
//              final step (sign − for the self problems)
//   finish:    loss = Σ_q w_q (S^cross_q − S^self_q) (the self term only when debiased)

struct Params {
    n: u32,
    m: u32,
    d: u32,
    p: u32,
    k_begin: u32,
    k_end: u32,
    step: u32,
    mode: u32,
    slot_in: u32,
    slot_out: u32,
    uniform_w: u32,
    cap: u32,
    blur: f32,
    scaling: f32,
    diameter: f32,  // the caller's diameter, or 0: from the bounding box
    grad_scale: f32,
}

// mode bits
const SELF: u32 = 1u;     // keys: the query's own cloud
const INIT: u32 = 2u;     // h_j = log w_j, S written as is, at ε_0
const FINAL: u32 = 4u;    // at the last ε, S written as is
const DEBIAS: u32 = 8u;   // finish: subtract the self term

// log of a zero weight: exp of it underflows to exactly 0 against any finite exponent, and
// sums of it never reach −∞ (where −∞ − (−∞) would be NaN).
const LOG_ZERO: f32 = -1e30;
const P1_MIN_SQDIST: f32 = 1e-8;
// Keys per block of the soft-min's running log-sum-exp.
const BLOCK: u32 = 8u;
// Header of the schedule buffer before the ε list.
const HEAD: u32 = 4u;

@group(0) @binding(0) var<storage, read> pts: array<f32>;
@group(0) @binding(1) var<storage, read_write> wts: array<f32>;
@group(0) @binding(2) var<storage, read_write> pot: array<f32>;
@group(0) @binding(3) var<storage, read_write> stat: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc: array<f32>;
@group(0) @binding(5) var<storage, read_write> sched: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

fn rows() -> u32 {
    return params.n + params.m;
}

fn quiet_nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The point of a soft-min or gradient invocation, and whether it is one of x. The workgroups of
// x come first and those of y after them, so that a workgroup's points share their keys: the
// key index is then uniform across it and each key is loaded once for the whole workgroup.
struct Query {
    q: u32,
    own_x: bool,
    valid: bool,
}

fn query(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Query {
    let w = wid.x + wid.y * nwg.x;
    let wx = (params.n + WG - 1u) / WG;
    if (w < wx) {
        let q = w * WG + lid;
        return Query(q, true, q < params.n);
    }
    let r = (w - wx) * WG + lid;
    return Query(params.n + r, false, r < params.m);
}

// First row and count of the keys of a point of x (`own_x`) or of y.
fn keys_of(own_x: bool, self_keys: bool) -> vec2<u32> {
    if (own_x == self_keys) {
        return vec2<u32>(0u, params.n);
    }
    return vec2<u32>(params.n, params.m);
}

fn cost(d2: f32) -> f32 {
    if (params.p == 2u) {
        return 0.5 * d2;
    }
    return sqrt(max(d2, P1_MIN_SQDIST));
}

// ∇₁C(u, v) = factor · (u − v); 0 where p = 1 clamps.
fn cost_factor(d2: f32) -> f32 {
    if (params.p == 2u) {
        return 1.0;
    }
    return select(0.0, inverseSqrt(d2), d2 >= P1_MIN_SQDIST);
}

// Up to four coordinates of row r, zero-padded: the path of D ≤ 4, without a loop (lavapipe
// bounds the loop iterations of one invocation, nested ones included, to 65,535).
fn point4(r: u32) -> vec4<f32> {
    let d = params.d;
    let base = r * d;
    var v = vec4<f32>(pts[base], 0.0, 0.0, 0.0);
    if (d > 1u) {
        v.y = pts[base + 1u];
    }
    if (d > 2u) {
        v.z = pts[base + 2u];
    }
    if (d > 3u) {
        v.w = pts[base + 3u];
    }
    return v;
}

// ‖p_q − p_j‖², q's coordinates in `u` when D ≤ 4.
fn sqdist(q: u32, u: vec4<f32>, j: u32) -> f32 {
    if (params.d <= 4u) {
        let e = u - point4(j);
        return dot(e, e);
    }
    var s = 0.0;
    let a = q * params.d;
    let b = j * params.d;
    for (var k = 0u; k < params.d; k++) {
        let e = pts[a + k] - pts[b + k];
        s += e * e;
    }
    return s;
}

@compute @workgroup_size(256)
fn prep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = index(gid, nwg);
    if (q >= rows()) {
        return;
    }
    var w = wts[q];
    if (params.uniform_w != 0u) {
        w = 1.0 / f32(select(params.m, params.n, q < params.n));
        wts[q] = w;
    }
    var lw = LOG_ZERO;
    if (w > 0.0) {
        lw = log(w);
    } else if (w < 0.0 || is_nan(w)) {
        lw = quiet_nan();
    }
    wts[rows() + q] = lw;
}

var<workgroup> lo_s: array<f32, 256>;
var<workgroup> hi_s: array<f32, 256>;
var<workgroup> nan_s: array<u32, 256>;

// One dimension per workgroup: min and max over both clouds into stat[2d], stat[2d + 1] (NaN if any
// coordinate is NaN).
@compute @workgroup_size(256)
fn bbox(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let dim = wid.x + wid.y * nwg.x;
    if (dim >= params.d) {
        return;
    }
    var lo = BIG;
    var hi = -BIG;
    var bad = 0u;
    for (var r = lid; r < rows(); r += WG) {
        let v = pts[r * params.d + dim];
        lo = min(lo, v);
        hi = max(hi, v);
        bad |= u32(is_nan(v));
    }
    lo_s[lid] = lo;
    hi_s[lid] = hi;
    nan_s[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lo_s[lid] = min(lo_s[lid], lo_s[lid + s]);
            hi_s[lid] = max(hi_s[lid], hi_s[lid + s]);
            nan_s[lid] |= nan_s[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let nan = select(0.0, quiet_nan(), nan_s[0] != 0u);
        stat[2u * dim] = lo_s[0] + nan;
        stat[2u * dim + 1u] = hi_s[0] + nan;
    }
}

// geomloss's epsilon_schedule from the bounding-box diameter (or the caller's):
// [diameter^p] + [exp(e) for e in arange(p·ln diameter, p·ln blur, p·ln scaling)] + [blur^p],
// just [blur^p] for a zero diameter; at most `cap` values.
@compute @workgroup_size(1)
fn schedule() {
    var diameter = params.diameter;
    if (diameter <= 0.0) {
        var sq = 0.0;
        for (var k = 0u; k < params.d; k++) {
            let e = stat[2u * k + 1u] - stat[2u * k];
            sq += e * e;
        }
        diameter = sqrt(sq);
    }
    let pf = f32(params.p);
    let blur_p = select(params.blur, params.blur * params.blur, params.p == 2u);
    sched[1] = diameter;
    sched[2] = 0.0;
    sched[3] = 0.0;
    if (diameter == 0.0) {
        sched[0] = 1.0;
        sched[HEAD] = blur_p;
        return;
    }
    let start = pf * log(diameter);
    let stop = pf * log(params.blur);
    let step = pf * log(params.scaling);
    let count = ceil((stop - start) / step);
    var n = 0u;
    if (count > 0.0) {
        n = u32(min(count, f32(params.cap - 2u)));
    }
    sched[HEAD] = select(diameter, diameter * diameter, params.p == 2u);
    let delta = (start + step) - start;
    for (var k = 0u; k < n; k++) {
        var e = start + f32(k) * delta;
        if (k == 1u) {
            e = start + step;
        }
        sched[HEAD + 1u + k] = exp(e);
    }
    sched[HEAD + 1u + n] = blur_p;
    sched[0] = f32(n + 2u);
}

// ε of this dispatch's step, or 0 when the step is past the schedule.
fn step_eps() -> f32 {
    let len = u32(sched[0]);
    var step = params.step;
    if ((params.mode & FINAL) != 0u) {
        step = len - 1u;
    }
    if (step >= len) {
        return 0.0;
    }
    return sched[HEAD + step];
}

@compute @workgroup_size(256)
fn softmin(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let me = query(wid, nwg, lid);
    let q = me.q;
    let t = rows();
    if (!me.valid) {
        return;
    }
    let out_at = params.slot_out * t + q;
    let in_base = params.slot_in * t;
    let eps = step_eps();
    if (eps == 0.0) {
        // Past the schedule's end: the potential stays.
        if (params.k_begin == 0u) {
            pot[out_at] = pot[in_base + q];
        }
        return;
    }
    let keys = keys_of(me.own_x, (params.mode & SELF) != 0u);
    if (params.k_begin >= keys.y) {
        return;
    }
    let end = min(params.k_end, keys.y);
    let init = (params.mode & INIT) != 0u;
    let inv_eps = 1.0 / eps;
    var mx = -BIG;
    var s = 0.0;
    if (params.k_begin > 0u) {
        mx = stat[2u * q];
        s = stat[2u * q + 1u];
    }
    let u = point4(q);
    // Blocks of BLOCK keys: their exponents first, then one rescaling of the running sum per
    // block (about one exponential per key instead of two). A NaN exponent reaches the sum
    // whatever max() makes of it.
    for (var k0 = params.k_begin; k0 < end; k0 += BLOCK) {
        var v: array<f32, BLOCK>;
        var top = -BIG;
        for (var b = 0u; b < BLOCK; b++) {
            let k = k0 + b;
            v[b] = -BIG;
            if (k < end) {
                let j = keys.x + k;
                var h = wts[t + j];
                if (!init) {
                    h += pot[in_base + j] * inv_eps;
                }
                v[b] = h - cost(sqdist(q, u, j)) * inv_eps;
                top = max(top, v[b]);
            }
        }
        let m = max(mx, top);
        var sum = s * exp(mx - m);
        for (var b = 0u; b < BLOCK; b++) {
            sum += exp(v[b] - m);
        }
        s = sum;
        mx = m;
    }
    if (end < keys.y) {
        stat[2u * q] = mx;
        stat[2u * q + 1u] = s;
        return;
    }
    let lse = mx + log(s);
    let soft = -eps * lse;
    if ((params.mode & FINAL) != 0u) {
        // The gradient pass needs the log-sum-exp itself: −S/ε would round it by ~1e-7 of its
        // magnitude, which C/ε can make large.
        pot[out_at] = soft;
        pot[out_at + 2u * t] = lse;
    } else if ((params.mode & INIT) != 0u) {
        pot[out_at] = soft;
    } else {
        pot[out_at] = 0.5 * (pot[in_base + q] + soft);
    }
}

@compute @workgroup_size(256)
fn grad_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let me = query(wid, nwg, lid);
    let q = me.q;
    let t = rows();
    if (!me.valid) {
        return;
    }
    let self_keys = (params.mode & SELF) != 0u;
    let keys = keys_of(me.own_x, self_keys);
    if (params.k_begin >= keys.y) {
        return;
    }
    let end = min(params.k_end, keys.y);
    let eps = step_eps();
    let inv_eps = 1.0 / eps;
    let in_base = params.slot_in * t;
    // log Σ_j exp(v_j) of the final step, two slots after its soft-min.
    let lse = pot[(params.slot_out + 2u) * t + q];
    let coef = select(1.0, -1.0, self_keys) * wts[q] * params.grad_scale;
    let u = point4(q);
    let d = params.d;
    var g = vec4<f32>(0.0);
    for (var k = params.k_begin; k < end; k++) {
        let j = keys.x + k;
        let h = wts[t + j] + pot[in_base + j] * inv_eps;
        let d2 = sqdist(q, u, j);
        let w = coef * exp(h - cost(d2) * inv_eps - lse) * cost_factor(d2);
        if (d <= 4u) {
            g += w * (u - point4(j));
        } else {
            for (var c = 0u; c < d; c++) {
                acc[q * d + c] += w * (pts[q * d + c] - pts[j * d + c]);
            }
        }
    }
    if (d <= 4u) {
        acc[q * d] += g.x;
        if (d > 1u) {
            acc[q * d + 1u] += g.y;
        }
        if (d > 2u) {
            acc[q * d + 2u] += g.z;
        }
        if (d > 3u) {
            acc[q * d + 3u] += g.w;
        }
    }
}

// One workgroup: loss = Σ_q w_q (S^cross_q − S^self_q) into sched[2], in a fixed order.
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
    let t = rows();
    let debias = (params.mode & DEBIAS) != 0u;
    var part = 0.0;
    for (var q = lid; q < t; q += WG) {
        var v = pot[params.slot_in * t + q];
        if (debias) {
            v -= pot[params.slot_out * t + q];
        }
        part += wts[q] * v;
    }
    let total = workgroup_sum(lid, part);
    if (lid == 0u) {
        sched[2] = total;
    }
}
