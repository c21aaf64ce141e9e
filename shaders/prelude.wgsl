// wgloss prelude: numerics shared by every kernel.
//
// WGSL has no infinity literal and may assume finite math in places, so kernels avoid relying on
// inf: `BIG` is the largest finite f32 and serves as a sentinel, and NaN tests go through the bit
// pattern rather than `x != x`, which an optimiser is allowed to fold.

const BIG: f32 = 3.40282347e38;
const LN2: f32 = 0.693147180559945309;

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// log(1 + x) to a few ulps relative for every x > -1. Vulkan bounds `log` only by an absolute
// error of 2^-21 for arguments in [0.5, 2] (lavapipe's is that coarse), so there, x in
// [-0.5, 1], it is `log1p_near`; beyond, log(1 + x). -1 gives -inf and below it NaN, as log.
fn log1p(x: f32) -> f32 {
    return select(log(1.0 + x), log1p_near(x), x >= -0.5 && x <= 1.0);
}

// log(1 + x) for x in [-0.5, 1] only: 2 atanh(s) with s = x / (2 + x) in [-1/3, 1/3], by
// `atanh_tail`. Callers whose argument is known to lie
// there (e^{-|x|} in softplus and bce_logit) take it directly: a CPU adapter would otherwise
// evaluate `log1p`'s unused logarithm too.
fn log1p_near(x: f32) -> f32 {
    let s = x / (2.0 + x);
    let s2 = s * s;
    return 2.0 * s * (1.0 + s2 * atanh_tail(s2));
}

// The mantissa in [1/2, 1) of the positive normal f32 of bits b (the exponent is b >> 23 less
// 126): `frexp` costs a CPU adapter several times as much.
fn mantissa(b: u32) -> f32 {
    return bitcast<f32>((b & 0x007fffffu) | 0x3f000000u);
}

// (atanh(s) / s - 1) / s^2 (1/3 + s^2/5 + s^4/7 + ...) for |s| <= 1/3: a minimax cubic in s^2,
// so that 1 + s^2 atanh_tail(s^2) is within 6e-9 relative of atanh(s) / s there (its f32
// coefficients included). Each term of the series costs a CPU adapter as much as a memory access.
fn atanh_tail(s2: f32) -> f32 {
    return 0.3333321 + s2 * (0.20010765 + s2 * (0.14000885 + s2 * 0.14006083));
}

// e^x - 1, accurate for small |x|: a degree-6 Taylor polynomial below 0.1 in magnitude
// (truncation error under 3e-11 relative), e^x - 1 beyond (whose rounding is then under 1e-6
// relative).
fn expm1(x: f32) -> f32 {
    if (abs(x) < 0.1) {
        return x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x / 720.0)))));
    }
    return exp(x) - 1.0;
}

// The logistic function 1 / (1 + e^-x), without overflow for any finite x.
fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e, 1.0, x >= 0.0) / (1.0 + e);
}

// log(1 + e^x) without overflow.
fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log1p_near(exp(-abs(x)));
}

// (sigma(x), sigma(-x)) given e = e^{-|x|}, with one division: each without cancellation.
fn sigmoid_pair(x: f32, e: f32) -> vec2<f32> {
    let r = 1.0 / (1.0 + e);
    return vec2<f32>(select(e, 1.0, x >= 0.0) * r, select(1.0, e, x >= 0.0) * r);
}

// Binary cross-entropy of logit x against target t in [0, 1] with positive weight pw, and its
// derivative in x, given e = e^{-|x|}: (1 - t) max(x, 0) + pw t max(-x, 0) + (1 + (pw - 1) t)
// log(1 + e), and (1 - t) sigma(x) - pw t sigma(-x). These equal torch's
// (1 - t) x + (1 + (pw - 1) t) softplus(-x) and (1 - t) - (1 + (pw - 1) t) sigma(-x), but the loss
// is a sum of non-negative terms and, for t = 0 or 1, the derivative a single one: a confident
// prediction keeps its small loss and gradient, which torch's forms round to 0.
fn bce_logit(x: f32, t: f32, pw: f32, e: f32) -> vec2<f32> {
    let sig = sigmoid_pair(x, e);
    let sp = sig.x; // sigma(x)
    let sm = sig.y; // sigma(-x)
    let loss = (1.0 - t) * max(x, 0.0) + pw * t * max(-x, 0.0) + (1.0 + (pw - 1.0) * t) * log1p_near(e);
    return vec2<f32>(loss, (1.0 - t) * sp - pw * t * sm);
}

// Running log-sum-exp as (m, t): the running max m and t = sum of e^(s - m) - 1, the sum over
// every term but the max's own 1. Kept apart, t keeps the small terms that 1 + t would round
// away, so that log p of a term near 1 in probability, (s - m) - log1p(t), keeps its relative
// accuracy where m + log(1 + t) - s cancels to 0. One exponential per term: below the running
// max t plus e^(s - m); above it (t + 1) e^(m - s), the new max's own term being the 1. Start
// from LSE_EMPTY (t = -1: no terms); a NaN term makes t NaN.
const LSE_EMPTY: vec2<f32> = vec2<f32>(-BIG, -1.0);

fn lse_add(mt: vec2<f32>, s: f32) -> vec2<f32> {
    let d = s - mt.x;
    let e = exp(-abs(d));
    return vec2<f32>(max(mt.x, s), select(mt.y + e, (mt.y + 1.0) * e, d > 0.0));
}

// Two running log-sum-exps merged: the one with the larger max keeps its t and takes the other's
// whole sum, scaled.
fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let a_hi = a.x >= b.x;
    let hi = select(b, a, a_hi);
    let lo = select(a, b, a_hi);
    return vec2<f32>(hi.x, hi.y + (lo.y + 1.0) * exp(lo.x - hi.x));
}

// log(1 + t) of a running pair: the log-sum-exp less its max, at least 0.
fn lse_excess(mt: vec2<f32>) -> f32 {
    return log1p(mt.y);
}

// The log-sum-exp of a running pair; -BIG for no terms.
fn lse_value(mt: vec2<f32>) -> f32 {
    if (mt.y < 0.0) {
        return -BIG;
    }
    return mt.x + lse_excess(mt);
}

// Smooth L1 (torch semantics) of residual r: value and derivative. beta == 0 is exactly L1.
fn smooth_l1(r: f32, beta: f32) -> vec2<f32> {
    let a = abs(r);
    if (a < beta) {
        return vec2<f32>(0.5 * r * r / beta, r / beta);
    }
    return vec2<f32>(a - 0.5 * beta, sign(r));
}

// (i / d, i % d) for d >= 1: the outer and inner index of flat index i over an inner extent d.
fn div_mod(i: u32, d: u32) -> vec2<u32> {
    return vec2<u32>(i / d, i % d);
}

// div_mod(i + s, d) from q = div_mod(i, d) and step = div_mod(s, d), with an addition instead of
// a division (which a CPU adapter does lane by lane).
fn advance_by(q: vec2<u32>, step: vec2<u32>, d: u32) -> vec2<u32> {
    let inner = q.y + step.y;
    let wrap = u32(inner >= d);
    return vec2<u32>(q.x + step.x + wrap, inner - d * wrap);
}

// Where a walk stepping by LANES over flat indices stands, as `at` = (i / d, i % d): a division
// to start, additions after (`step2`).
struct Walk2 {
    at: vec2<u32>,
    step: vec2<u32>,
    d: u32,
}

fn walk2(start: u32, d: u32) -> Walk2 {
    return Walk2(div_mod(start, d), div_mod(LANES, d), d);
}

// The walk LANES indices further on.
fn step2(w: Walk2) -> Walk2 {
    return Walk2(advance_by(w.at, w.step, w.d), w.step, w.d);
}

// As Walk2 over two nested extents; `at3` gives (i / (m d), i / d % m, i % d).
struct Walk3 {
    rows: Walk2,
    planes: Walk2,
    m: u32,
}

fn walk3(start: u32, m: u32, d: u32) -> Walk3 {
    return Walk3(walk2(start, d), walk2(start, m * d), m);
}

fn step3(w: Walk3) -> Walk3 {
    return Walk3(step2(w.rows), step2(w.planes), w.m);
}

fn at3(w: Walk3) -> vec3<u32> {
    let plane = w.planes.at.x;
    return vec3<u32>(plane, w.rows.at.x - plane * w.m, w.rows.at.y);
}

// The contiguous block of elements [start, end) of `n` that workgroup `w` of `count` walks (its
// invocations through `lane_walk`). Blocks are multiples of `wg` long, so each workgroup streams
// one region of memory: coalesced on a GPU, prefetch-friendly on a CPU adapter.
fn block_range(n: u32, w: u32, count: u32, wg: u32) -> vec2<u32> {
    let per = ((n + count - 1u) / count + wg - 1u) / wg * wg;
    let start = min(w * per, n);
    return vec2<u32>(start, min(start + per, n));
}

// How many neighbouring invocations walk one contiguous run of a workgroup's block together, set
// by the host: the whole workgroup on a GPU (each step one coalesced access), a few on a CPU
// adapter (which runs each group of SIMD-width invocations through its whole loop before the next
// group starts, so each group had better stream runs of memory of its own). A power of two up to
// WG; every value visits every element once (sums may round differently).
override LANES: u32 = WG;

// Where invocation `lid` starts in the block `b` = [start, end) and where it stops, stepping by
// LANES: the block is cut into WG / LANES runs, multiples of LANES long, one per group of LANES
// neighbouring invocations. Each invocation visits as many elements as with a whole-workgroup
// stride, give or take one run's rounding.
fn lane_walk(b: vec2<u32>, lid: u32) -> vec2<u32> {
    return group_walk(b, lid, LANES);
}

// `lane_walk` with groups of `g` invocations (1 <= g <= WG; invocations past the last whole
// group get nothing), stepping by g.
fn group_walk(b: vec2<u32>, lid: u32, g: u32) -> vec2<u32> {
    let run = block_range(b.y - b.x, lid / g, WG / g, g);
    return vec2<u32>(b.x + run.x + lid % g, b.x + run.y);
}

// x^y for x >= 0 with the limits pow(0, y > 0) = 0 and pow(0, 0) = 1 spelled out (WGSL leaves
// pow undefined at x = 0).
fn pow0(x: f32, y: f32) -> f32 {
    if (x > 0.0) {
        return pow(x, y);
    }
    return select(0.0, 1.0, y == 0.0);
}

// Invocations per workgroup of every kernel.
const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

// Sum of `v` over the workgroup, in a fixed tree order; every invocation gets the result.
// Call in uniform control flow.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
