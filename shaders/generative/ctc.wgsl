// ctc (torch F.ctc_loss): connectionist temporal classification of log_probs [T, N, C]
// (time-major), one workgroup per sequence n for the recursions.
//
// For a target l = (l_1, ..., l_S) the extended sequence l' = (∅, l_1, ∅, ..., l_S, ∅) has
// W = 2S + 1 states; y_t(c) = log_probs[t, n, c] and T_n is the input length:
//   α_t(s) = lse(α_{t-1}(s), α_{t-1}(s-1), α_{t-1}(s-2) [l'_s ≠ l'_{s-2}]) + y_t(l'_s)
//   β_t(s) = lse over s' ∈ {s, s+1, s+2 [l'_{s+2} ≠ l'_s]} of β_{t+1}(s') + y_{t+1}(l'_{s'})
//            (β excludes the emission at t; β_{T_n-1} = 0 at the two final states)
//   nll    = -lse(α_{T_n-1}(W-1), α_{T_n-1}(W-2))
//   d nll / d y_t(c) = -Σ_{s : l'_s = c} γ_t(s),   γ_t(s) = exp(e_s - lse_s' e_s'),
//   e_s = α_t(s) + β_t(s). Σ_s exp(e_s) is p at every frame, so normalising γ per frame gives
//   the same numbers without cancelling large offsets.
//
// Numerics. Rows are kept relative to offsets, so that f32 keeps its precision at any magnitude
// of the inputs: emissions enter as y - m_t, with m_t the largest emission among the sample's
// classes at frame t (`offsets`), and every row is shifted by its own maximum (the forward
// stores α̃_t = α_t - A_t, whose maximum is 0, and accumulates A_t for the loss; the backward
// applies the shift of a row when it reads it). -∞ is NEG, and anything at or below DEAD counts
// as -∞, so that no lse ever evaluates (-∞) - (-∞).
//
// Passes. Every pass after `setup` writes nothing once a bad label was recorded.
//   setup     one workgroup per sample: checks its labels (a label outside [0, C) or equal to
//             the blank sets status = 0xffffffff - position, atomicMax keeping the first) and
//             links equal labels (next occurrence, first-occurrence bit).
//   scan      flags every sample holding a NaN or +inf in its first T_n frames.
//   offsets   m_t for every frame of every sample.
//   fill      the whole gradient: 0, or NaN over the first T_n frames of a flagged sample.
//   forward   one workgroup per sample over the frames [t0, t1) of a chunk, its invocations
//             striding over the states with a barrier per frame: the α̃ rows into the scratch,
//             A_t in the sample's record.
//   finish    one invocation per sample: nll, its kind (finite, +inf, NaN), the loss under
//             reduction none.
//   backward  one workgroup per sample over the frames [t0, t1) of a chunk, last frame first:
//             the gradient of the blank (a workgroup sum over the even states) and of every label
//             of the target (the first occurrence of a label sums its states along the chain of
//             next occurrences, in a fixed order); the other classes keep the 0 of `fill`. The β
//             row is carried to the next chunk in the scratch.
//   reduce    one workgroup: the mean or sum over samples, in a fixed order.
// A batch too large for one binding runs in chunks of sequences, each copied into scratch
// buffers and run as a batch of its own (`n` its sequences, the records gathered into one
// buffer on the host side); `setup` of every chunk runs before anything else, then per chunk:
//   scatter   the chunk's frames [t0, t1) of the gradient into a window of the caller's
//             gradient [T, n_all, C] (`lp` is the chunk's gradient here).
// and at the end `reduce`, or under reduction none
//   emit      one invocation per sample: its loss from the gathered records.
// Chunks keep every invocation under the host's loop budget; a sample whose frames end before
// a chunk returns at once. The gradient is deterministic: no float atomics, fixed orders.

struct Params {
    t_max: u32,      // T
    n: u32,          // N
    c: u32,          // C
    blank: u32,
    stride: u32,     // 2 S_max + 1: states per scratch row
    lstride: u32,    // max(S_max, 1): links per sample
    t0: u32,         // frames [t0, t1) of this chunk
    t1: u32,
    zero_inf: u32,   // 1: an infinite loss counts as 0
    per_sample: u32, // 1 under reduction none
    lp_len: u32,     // T·N·C
    emo_at: u32,     // scratch offsets, in words: m_t [T, N]
    carry_at: u32,   //   β rows carried between chunks [N, stride]
    links_at: u32,   //   label links [N, lstride]
    rec_at: u32,     //   sample records [N, 4]: A, nll, kind, unused
    label_base: u32, // position in the caller's targets of this chunk's first label
    n_all: u32,      // sequences of the whole batch (scatter)
    dst_at: u32,     // scatter: first word of frame t0 in the bound window of the gradient
    pad: u32,
}

struct Seq {
    len: u32,   // T_n
    tlen: u32,  // S_n
    off: u32,   // position of the sample's first label in `targets`
    pad: u32,
    gw: f32,    // gradient weight: grad_scale, divided by N·max(S_n, 1) under mean
    lw: f32,    // loss weight: 1, or 1 / (N·max(S_n, 1)) under mean
    pad1: f32,
    pad2: f32,
}

@group(0) @binding(0) var<storage, read> lp: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read> seqs: array<Seq>;
// α̃ rows [N, T, stride] (f32 bits), then the regions named in Params.
@group(0) @binding(6) var<storage, read_write> work: array<u32>;
@group(0) @binding(7) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(8) var<uniform> params: Params;

// Longest target and its states; the host checks target lengths against SMAX.
const SMAX: u32 = 512u;
const WMAX: u32 = 1025u;
// Invocations per workgroup of `forward` and `backward` (at most 256): 256 on GPUs; 8, one SIMD
// vector, on CPU adapters, where every barrier switches between the workgroup's vectors.
override WGS: u32 = 256u;

const NEG: f32 = -1e30;
const DEAD: f32 = -1e29;
const NONE: u32 = 0xffffu;   // no next occurrence (low half of a link)
const HEAD: u32 = 0x10000u;  // first occurrence of its label
const FINITE: u32 = 0u;
const INFINITE: u32 = 1u;
const NOT_A_NUMBER: u32 = 2u;

// Two rows of states (the forward alternates them; so does the backward, which also keeps β for
// the next frame in the other row), the e of the label states (then each label's occupation,
// at its first occurrence), and the two levels of the workgroup reductions.
var<workgroup> rows: array<f32, 2u * WMAX>;
var<workgroup> gam: array<f32, SMAX>;
var<workgroup> part: array<vec4<f32>, 256>;
var<workgroup> part16: array<vec4<f32>, 16>;
var<workgroup> skip_flag: u32;

fn live(x: f32) -> bool {
    return x > DEAD;
}

// a + b with -∞ absorbing.
fn plus(a: f32, b: f32) -> f32 {
    return select(NEG, a + b, live(a) && live(b));
}

// x - by, keeping -∞.
fn shifted(x: f32, by: f32) -> f32 {
    return select(NEG, x - by, live(x));
}

// e^x for x ≤ 0, to about 1e-7 relative on every adapter (a built-in exp may be several ulps
// off) and exactly 0 below -87, so that a state no alignment reaches contributes exactly 0:
// e^x = 2^k e^r with r = x - k ln 2 (ln 2 split in two, k·ln2_hi exact) and a degree-7 Taylor
// polynomial for |r| ≤ ln(2)/2.
fn exp_neg(x: f32) -> f32 {
    if (x < -87.0) {
        return 0.0;
    }
    let k = round(x * 1.44269504);
    let r = (x - k * 0.693145752) - k * 1.42860677e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0
        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    return ldexp(p, i32(k));
}

// log(e^a + e^b + e^c).
fn lse3(a: f32, b: f32, c: f32) -> f32 {
    let m = max(max(a, b), c);
    if (!live(m)) {
        return NEG;
    }
    return m + log(exp_neg(a - m) + exp_neg(b - m) + exp_neg(c - m));
}

// Frame statistics (max e, Σ exp(e - max), the same over blank states, max of another value),
// merged in any grouping with the same result up to rounding; every invocation merges in the
// same order.
fn comb(p: vec4<f32>, q: vec4<f32>) -> vec4<f32> {
    let m = max(p.x, q.x);
    let a = exp_neg(p.x - m);
    let b = exp_neg(q.x - m);
    return vec4<f32>(m, p.y * a + q.y * b, p.z * a + q.z * b, max(p.w, q.w));
}

// Slots of the first reduction level.
fn groups() -> u32 {
    return min(WGS, 16u);
}

// First level: each of the first groups() invocations merges WGS / groups() slots of `part`.
// Call between the barrier after `part` was written and the next one.
fn fold_part(lid: u32) {
    let g = groups();
    if (lid < g) {
        let per = WGS / g;
        var r = part[lid * per];
        for (var i = 1u; i < per; i++) {
            r = comb(r, part[lid * per + i]);
        }
        part16[lid] = r;
    }
}

// Second level, after the barrier that follows fold_part: the total, in every invocation.
fn fold_part16() -> vec4<f32> {
    var r = part16[0];
    for (var i = 1u; i < groups(); i++) {
        r = comb(r, part16[i]);
    }
    return r;
}

// Merges the invocations' statistics; every invocation gets the total. Call in uniform
// control flow.
fn workgroup_stats(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    part[lid] = mine;
    workgroupBarrier();
    fold_part(lid);
    workgroupBarrier();
    return fold_part16();
}

fn ld(i: u32) -> f32 {
    return bitcast<f32>(work[i]);
}

fn st(i: u32, v: f32) {
    work[i] = bitcast<u32>(v);
}

fn alpha_at(n: u32, t: u32, s: u32) -> u32 {
    return (n * params.t_max + t) * params.stride + s;
}

fn record(n: u32) -> u32 {
    return params.rec_at + 4u * n;
}

fn label(q: Seq, j: u32) -> u32 {
    return u32(targets[q.off + j]);
}

fn sample_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn not_a_number() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn infinity() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

@compute @workgroup_size(256)
fn setup(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = sample_of(wid, nwg);
    if (n >= params.n) {
        return;
    }
    let q = seqs[n];
    for (var j = lid.x; j < q.tlen; j += WG) {
        let y = targets[q.off + j];
        if (y < 0 || u32(y) >= params.c || u32(y) == params.blank) {
            atomicMax(&status[0], 0xffffffffu - (params.label_base + q.off + j));
        }
        var next = NONE;
        var head = HEAD;
        for (var i = 0u; i < q.tlen; i++) {
            if (targets[q.off + i] == y) {
                if (i < j) {
                    head = 0u;
                } else if (i > j && next == NONE) {
                    next = i;
                }
            }
        }
        work[params.links_at + n * params.lstride + j] = next | head;
    }
}

@compute @workgroup_size(256)
fn scan(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let b = lane_walk(block_range(params.lp_len, wid.x, nwg.x, WG), lid.x);
    let frame = params.n * params.c;
    for (var i = b.x; i < b.y; i += LANES) {
        let bits = bitcast<u32>(lp[i]);
        // NaN or +inf (-inf is a valid log-probability).
        if ((bits & 0x7fffffffu) >= 0x7f800000u && bits != 0xff800000u) {
            let n = (i / params.c) % params.n;
            if (i / frame < seqs[n].len) {
                atomicOr(&flags[n], 1u);
            }
        }
    }
}

@compute @workgroup_size(256)
fn offsets(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let f = gid.x + gid.y * nwg.x * WG;
    if (f >= params.t_max * params.n || atomicLoad(&status[0]) != 0u) {
        return;
    }
    let n = f % params.n;
    let q = seqs[n];
    if (f / params.n >= q.len) {
        return;
    }
    let base = f * params.c;
    var m = lp[base + params.blank];
    for (var j = 0u; j < q.tlen; j++) {
        m = max(m, lp[base + label(q, j)]);
    }
    // Every class of the frame at -∞ (or a flagged NaN): no shift.
    if (!live(m)) {
        m = 0.0;
    }
    st(params.emo_at + f, m);
}

@compute @workgroup_size(256)
fn fill(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (atomicLoad(&status[0]) != 0u) {
        return;
    }
    let b = lane_walk(block_range(params.lp_len, wid.x, nwg.x, WG), lid.x);
    let frame = params.n * params.c;
    for (var i = b.x; i < b.y; i += LANES) {
        let n = (i / params.c) % params.n;
        var v = 0.0;
        if (i / frame < seqs[n].len && atomicLoad(&flags[n]) != 0u) {
            v = not_a_number();
        }
        grad[i] = v;
    }
}

@compute @workgroup_size(WGS)
fn forward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = sample_of(wid, nwg);
    if (n >= params.n) {
        return;
    }
    let q = seqs[n];
    let t_end = min(params.t1, q.len);
    if (params.t0 >= t_end) {
        return;
    }
    if (lid.x == 0u) {
        let bad = atomicLoad(&status[0]) != 0u || atomicLoad(&flags[n]) != 0u;
        skip_flag = select(0u, 1u, bad);
    }
    if (workgroupUniformLoad(&skip_flag) != 0u) {
        return;
    }
    let w = 2u * q.tlen + 1u;
    // A_t, and the shift of the row the next frame reads.
    var acc = 0.0;
    var shift = 0.0;
    if (params.t0 > 0u) {
        acc = ld(record(n));
        let prev = ((params.t0 - 1u) & 1u) * WMAX;
        for (var s = lid.x; s < w; s += WGS) {
            rows[prev + s] = ld(alpha_at(n, params.t0 - 1u, s));
        }
        workgroupBarrier();
    }
    for (var t = params.t0; t < t_end; t++) {
        let cur = (t & 1u) * WMAX;
        let prev = WMAX - cur;
        let m = ld(params.emo_at + t * params.n + n);
        let base = (t * params.n + n) * params.c;
        var top = NEG;
        for (var s = lid.x; s < w; s += WGS) {
            var cls = params.blank;
            var skip = false;
            if (s % 2u == 1u) {
                cls = label(q, s / 2u);
                skip = s >= 3u && cls != label(q, s / 2u - 1u);
            }
            var x = NEG;
            if (t == 0u) {
                x = select(NEG, 0.0, s < 2u);
            } else {
                var b = NEG;
                if (s >= 1u) {
                    b = shifted(rows[prev + s - 1u], shift);
                }
                var c = NEG;
                if (skip) {
                    c = shifted(rows[prev + s - 2u], shift);
                }
                x = lse3(shifted(rows[prev + s], shift), b, c);
            }
            x = plus(x, lp[base + cls] - m);
            rows[cur + s] = x;
            top = max(top, x);
        }
        let mx = workgroup_stats(lid.x, vec4<f32>(top, 0.0, 0.0, top)).x;
        shift = select(0.0, mx, live(mx));
        for (var s = lid.x; s < w; s += WGS) {
            st(alpha_at(n, t, s), shifted(rows[cur + s], shift));
        }
        acc += m + shift;
    }
    if (lid.x == 0u) {
        st(record(n), acc);
    }
}

fn sample_loss(kind: u32, nll: f32) -> f32 {
    if (kind == NOT_A_NUMBER) {
        return not_a_number();
    }
    if (kind == INFINITE) {
        return select(infinity(), 0.0, params.zero_inf != 0u);
    }
    return nll;
}

@compute @workgroup_size(256)
fn finish(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = gid.x + gid.y * nwg.x * WG;
    if (n >= params.n || atomicLoad(&status[0]) != 0u) {
        return;
    }
    let q = seqs[n];
    let rec = record(n);
    var kind = FINITE;
    var nll = 0.0;
    if (atomicLoad(&flags[n]) != 0u) {
        kind = NOT_A_NUMBER;
    } else if (q.len == 0u) {
        kind = select(FINITE, INFINITE, q.tlen > 0u);
    } else {
        let w = 2u * q.tlen + 1u;
        let row = alpha_at(n, q.len - 1u, 0u);
        var second = NEG;
        if (q.tlen > 0u) {
            second = ld(row + w - 2u);
        }
        let end = lse3(ld(row + w - 1u), second, NEG);
        if (live(end)) {
            nll = -(ld(rec) + end);
        } else {
            kind = INFINITE;
        }
    }
    st(rec + 1u, nll);
    work[rec + 2u] = kind;
    if (params.per_sample != 0u) {
        loss[n] = sample_loss(kind, nll);
    }
}

@compute @workgroup_size(WGS)
fn backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = sample_of(wid, nwg);
    if (n >= params.n) {
        return;
    }
    let q = seqs[n];
    let t_hi = min(params.t1, q.len);
    if (params.t0 >= t_hi) {
        return;
    }
    let rec = record(n);
    if (lid.x == 0u) {
        let bad = atomicLoad(&status[0]) != 0u || work[rec + 2u] != FINITE;
        skip_flag = select(0u, 1u, bad);
    }
    // Infinite and NaN losses keep the gradient of `fill`.
    if (workgroupUniformLoad(&skip_flag) != 0u) {
        return;
    }
    let w = 2u * q.tlen + 1u;
    let links = params.links_at + n * params.lstride;
    let carry = params.carry_at + n * params.stride;
    // β of the frame about to be processed (up to a shift) sits in the row `cur` of that frame:
    // it starts at the sample's last frame when this chunk holds it, else comes from the chunk
    // after this one.
    let fresh = params.t1 >= q.len;
    for (var s = lid.x; s < w; s += WGS) {
        if (fresh) {
            let last = s + 1u == w || (q.tlen > 0u && s + 2u == w);
            rows[s] = select(NEG, 0.0, last);
        } else {
            rows[s] = ld(carry + s);
        }
    }
    let count = t_hi - params.t0;
    for (var i = 0u; i < count; i++) {
        let t = t_hi - 1u - i;
        let cur = (i & 1u) * WMAX;
        let m = ld(params.emo_at + t * params.n + n);
        let base = (t * params.n + n) * params.c;
        // e = α̃ + β of every state; the row gets β + y - m in its place, the terms of the
        // previous frame's β.
        var mine = vec4<f32>(NEG, 0.0, 0.0, NEG);
        for (var s = lid.x; s < w; s += WGS) {
            let u = rows[cur + s];
            let e = plus(ld(alpha_at(n, t, s)), u);
            let odd = s % 2u == 1u;
            var cls = params.blank;
            if (odd) {
                cls = label(q, s / 2u);
                gam[s / 2u] = e;
            }
            let b = plus(u, lp[base + cls] - m);
            rows[cur + s] = b;
            let one = select(0.0, 1.0, live(e));
            mine = comb(mine, vec4<f32>(e, one, select(one, 0.0, odd), b));
        }
        part[lid.x] = mine;
        workgroupBarrier();
        fold_part(lid.x);
        // Each first occurrence of a label sums the label's states along the chain of next
        // occurrences and keeps log Σ exp(e) in its own slot.
        for (var s = lid.x; s < w; s += WGS) {
            if (s % 2u == 1u && (work[links + s / 2u] & HEAD) != 0u) {
                var hm = NEG;
                var hs = 0.0;
                var j = s / 2u;
                loop {
                    let x = gam[j];
                    if (live(x)) {
                        let m2 = max(hm, x);
                        hs = hs * exp_neg(hm - m2) + exp_neg(x - m2);
                        hm = m2;
                    }
                    let next = work[links + j] & NONE;
                    if (next >= q.tlen) {
                        break;
                    }
                    j = next;
                }
                gam[s / 2u] = select(NEG, hm + log(hs), hs > 0.0);
            }
        }
        workgroupBarrier();
        let tot = fold_part16();
        let scale = select(0.0, q.gw / tot.y, tot.y > 0.0);
        if (lid.x == 0u) {
            grad[base + params.blank] = -tot.z * scale;
        }
        for (var s = lid.x; s < w; s += WGS) {
            if (s % 2u == 1u && (work[links + s / 2u] & HEAD) != 0u) {
                grad[base + label(q, s / 2u)] = -exp_neg(gam[s / 2u] - tot.x) * scale;
            }
        }
        // β of frame t - 1 into the other row.
        if (t > 0u) {
            let sh = select(0.0, tot.w, live(tot.w));
            let nxt = WMAX - cur;
            for (var s = lid.x; s < w; s += WGS) {
                var b1 = NEG;
                if (s + 1u < w) {
                    b1 = shifted(rows[cur + s + 1u], sh);
                }
                var b2 = NEG;
                if (s % 2u == 1u && s + 2u < w && label(q, s / 2u + 1u) != label(q, s / 2u)) {
                    b2 = shifted(rows[cur + s + 2u], sh);
                }
                rows[nxt + s] = lse3(shifted(rows[cur + s], sh), b1, b2);
            }
        }
    }
    if (params.t0 > 0u) {
        let at = (count & 1u) * WMAX;
        for (var s = lid.x; s < w; s += WGS) {
            st(carry + s, rows[at + s]);
        }
    }
}

@compute @workgroup_size(256)
fn reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (lid.x == 0u) {
        skip_flag = select(0u, 1u, atomicLoad(&status[0]) != 0u);
    }
    if (workgroupUniformLoad(&skip_flag) != 0u) {
        return;
    }
    var total = 0.0;
    var infinite = 0.0;
    var nan = 0.0;
    for (var n = lid.x; n < params.n; n += WG) {
        let rec = record(n);
        let kind = work[rec + 2u];
        if (kind == NOT_A_NUMBER) {
            nan += 1.0;
        } else if (kind == INFINITE) {
            if (params.zero_inf == 0u) {
                infinite += 1.0;
            }
        } else {
            total += seqs[n].lw * ld(rec + 1u);
        }
    }
    let sum = workgroup_sum(lid.x, total);
    let infinities = workgroup_sum(lid.x, infinite);
    let nans = workgroup_sum(lid.x, nan);
    if (lid.x == 0u) {
        var v = sum;
        if (infinities > 0.0) {
            v = infinity();
        }
        if (nans > 0.0) {
            v = not_a_number();
        }
        loss[0] = v;
    }
}

@compute @workgroup_size(256)
fn scatter(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (atomicLoad(&status[0]) != 0u) {
        return;
    }
    let row = params.n * params.c;
    let b = lane_walk(block_range((params.t1 - params.t0) * row, wid.x, nwg.x, WG), lid.x);
    for (var i = b.x; i < b.y; i += LANES) {
        let f = i / row;
        grad[params.dst_at + f * params.n_all * params.c + (i - f * row)] = lp[params.t0 * row + i];
    }
}

@compute @workgroup_size(256)
fn emit(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = gid.x + gid.y * nwg.x * WG;
    if (n >= params.n || atomicLoad(&status[0]) != 0u) {
        return;
    }
    let rec = record(n);
    loss[n] = sample_loss(work[rec + 2u], ld(rec + 1u));
}
