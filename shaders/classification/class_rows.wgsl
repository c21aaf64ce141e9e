// Losses over a class dimension, fused forward+backward: cross_entropy (torch cross_entropy,
// class-index or probability targets), poly1 (Leng et al. 2022), softmax_focal (kornia
// focal_loss with per-class alpha) and multiclass_hinge (torch multi_margin_loss).
//
// Logits are [N, C, S] (S = product of trailing dims, 1 for [N, C]); a row is one (n, s), its
// classes C apart by S. Labels are i32 [N, S]; probability targets are f32 [N, C, S]. Per row,
// with p = softmax(x), LSE its log-sum-exp, w the class weights (ones when absent; softmax_focal's
// alpha), W = sum_c w_c, eps the label smoothing, y the label:
//
//   cross_entropy, labels:  (1 - eps) w_y (LSE - x_y) + eps / C (W LSE - sum_c w_c x_c)
//     d/dx_j = (1 - eps) w_y (p_j - [j = y]) + eps / C (W p_j - w_j)
//   cross_entropy, probabilities t (t' = (1 - eps) t + eps / C):
//     sum_c w_c t'_c (LSE - x_c),   d/dx_j = p_j sum_c w_c t'_c - w_j t'_j
//   poly1 adds poly (1 - p_y) (gradient poly p_y (p_j - [j = y])); z_loss adds z LSE^2
//     (gradient 2 z LSE p_j); logit_softcap reads every logit as cap tanh(x / cap) and
//     multiplies its gradient by 1 - tanh^2.
//   softmax_focal: -w_y q^gamma log p_y with q = 1 - p_y = -expm1(log p_y),
//     d/dx_j = w_y q^gamma (1 - gamma p_y log(p_y) / q) (p_j - [j = y])
//   multiclass_hinge: w_y / C sum_{j != y} h_j^power with h_j = max(0, margin - x_y + x_j),
//     d/dx_j = w_y / C power h_j^(power - 1) (j != y), d/dx_y = -sum_{j != y} of those.
//
// Every gradient is multiplied by scale = grad_scale / D under mean and grad_scale otherwise;
// D is the sum of w_y over non-ignored rows (cross-entropy with labels, as torch), the number
// of non-ignored rows (`count_rows`: softmax_focal, multiclass_hinge), or the number of rows
// (probability targets, `fixed_denom`). Ignored rows have loss 0 and gradient 0.
//
// Passes: `labels_pass` checks every label (a label outside [0, C) that is not ignore_index
// records its position in `status`, the smallest bad one kept) and sums the row weights per
// workgroup; `labels_reduce` leaves D in state[0]; `fused` (one workgroup per row, rows strided
// over the workgroups) streams each row twice (statistics, then the gradient) and writes
// nothing at all if a bad label was recorded; `fused_rows` does the same with one invocation per
// row (few classes, or any row a CPU adapter's loop budget allows); `reduce` finishes the loss.
// Probability targets skip the label passes.
// With IN_PLACE the logits are read from the gradient binding, which they share: every logit is
// read before the invocation that reads it last overwrites it, and a row's label logit before
// the workgroup's first barrier.
// A segment's views are bound from the storage offset alignment at or before their first element
// (`Tensor::binding_led`), so that a segment may start anywhere: `lead`, `row_lead` and
// `target_lead` count the elements bound before it. With 16-bit logits the lead is even, and
// on the four-per-step widths a multiple of four (the host's segments start there).
// No inf is used: the running max starts at -BIG, whose exponentials underflow to 0.
// Two widths: class_rows_f32.wgsl reads and writes one logit per step (any layout);
// class_rows_vec4.wgsl four, for contiguous rows of a multiple of four classes on the
// workgroup-per-row path (16-byte accesses; on a CPU adapter a load costs about the same for one
// logit or four).

struct Params {
    rows: u32,          // rows in this segment (samples * S)
    classes: u32,       // C
    inner: u32,         // S
    row_base: u32,      // global index of the segment's first row
    wg_base: u32,       // first partial slot of this segment
    num_partials: u32,  // partial slots over all segments
    ignore_index: i32,
    has_ignore: u32,    // 0: nothing is ignored (no ignore index, or one outside the i32 range)
    grad_scale: f32,    // grad_scale (divided by D in the shader under mean)
    smoothing: f32,     // eps
    weight_sum: f32,    // W
    mean: u32,          // 1 under reduction mean
    per_row: u32,       // 1 under reduction none
    lead: u32,          // elements bound before the segment's first logit (and gradient)
    poly: f32,          // poly1's epsilon (0 otherwise)
    z_loss: f32,        // z (0: no z-loss)
    softcap: f32,       // cap (0: no soft cap)
    gamma: f32,         // softmax_focal's gamma
    margin: f32,        // multiclass_hinge's margin
    power: u32,         // multiclass_hinge's p, 1 or 2
    count_rows: u32,    // 1: D counts non-ignored rows instead of summing w_y
    fixed_denom: f32,   // D of probability targets (the number of rows)
    row_lead: u32,      // rows bound before the segment's first label (and per-row loss)
    target_lead: u32,   // elements bound before the segment's first probability target
}

// Bindings 0 (logits) and 2 (gradient) are declared by the width file (class_rows_f32.wgsl or
// class_rows_vec4.wgsl), with `raw_logit`, `store_grad` and the two sweeps of `fused`.
// Class labels (i32) or probability targets (f32, under PROBS), read as bits: one binding, so
// that the kernel stays within eight storage bindings (wgpu's default limits).
@group(0) @binding(1) var<storage, read> target_bits: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(8) var<storage, read_write> state: array<f32>;

// status[0] is 0 (no bad label) or 0xffffffff - p for the smallest bad position p, so that
// atomicMax keeps the first and a zero-filled buffer starts clean.
const NO_ERROR: u32 = 0u;

const CROSS_ENTROPY: u32 = 0u;
const FOCAL: u32 = 1u;
const MARGIN: u32 = 2u;

// Pipeline constants, so that each loss pays only for what it uses.
// Which loss: CROSS_ENTROPY (also poly1), FOCAL or MARGIN.
override KIND: u32 = 0u;
// Whether logits are soft-capped.
override SOFTCAP: bool = false;
// Whether targets are probabilities rather than labels (binding 1 either way).
override PROBS: bool = false;
// Whether the logits are read from the gradient binding, which the gradient overwrites.
override IN_PLACE: bool = false;
// Class weights given; without them every weight is 1 and the weight binding is not read (a
// lookup per element costs on a CPU adapter even behind a uniform branch).
override WEIGHTED: bool = false;
// 16-bit logits of an odd class count, whose rows share 32-bit words (class_rows_half.wgsl).
override SHARED_WORDS: bool = false;

// Under SHARED_WORDS, the edge slots in `state` from here on: one gradient per row of the
// segment, for its class in a shared word (`store_edge`).
const EDGES: u32 = 4u;

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;
var<workgroup> failed: u32;

fn ignored(y: i32) -> bool {
    return params.has_ignore != 0u && y == params.ignore_index;
}

fn class_weight(c: u32) -> f32 {
    if (WEIGHTED) {
        return weight[c];
    }
    return 1.0;
}

// Whether the labels pass recorded a bad label: the whole workgroup then writes nothing. Call in
// uniform control flow.
fn bad_label_recorded(lid: u32) -> bool {
    if (lid == 0u) {
        failed = select(0u, 1u, atomicLoad(&status[0]) != NO_ERROR);
    }
    return workgroupUniformLoad(&failed) != 0u;
}

// D: the mean's denominator (see the header).
fn denominator() -> f32 {
    if (PROBS) {
        return params.fixed_denom;
    }
    return state[0];
}

// grad_scale / D under mean (0 when every row is ignored: loss 0, gradient 0), grad_scale
// otherwise.
fn gradient_scale() -> f32 {
    let denom = denominator();
    if (params.mean == 0u) {
        return params.grad_scale;
    }
    return select(0.0, params.grad_scale / denom, denom != 0.0);
}

// Logit i as the loss sees it.
fn logit(i: u32) -> f32 {
    return capped(raw_logit(i));
}

// A stored logit as the loss sees it: soft-capped when a cap is set. tanh is written with
// e^{-2|u|} so that it never evaluates inf / inf.
fn capped(x: f32) -> f32 {
    if (SOFTCAP) {
        let u = x / params.softcap;
        let e = exp(-2.0 * abs(u));
        return params.softcap * sign(u) * (1.0 - e) / (1.0 + e);
    }
    return x;
}

// d capped / d x at capped value xc: 1 - (xc / cap)^2, or 1 without a cap.
fn cap_slope(xc: f32) -> f32 {
    if (SOFTCAP) {
        let t = xc / params.softcap;
        return 1.0 - t * t;
    }
    return 1.0;
}

// The smoothed probability target t'_i of element i.
fn smoothed_target(i: u32) -> f32 {
    let eps = params.smoothing;
    let bits = target_bits[i - params.lead + params.target_lead];
    return (1.0 - eps) * bitcast<f32>(bits) + eps / f32(params.classes);
}

// h^power and its derivative for multiclass_hinge.
fn hinge_pow(h: f32) -> f32 {
    return select(h * h, h, params.power == 1u);
}

fn hinge_slope(h: f32) -> f32 {
    return select(2.0 * h, 1.0, params.power == 1u);
}

// One row: where its classes start, its label (-1 under probability targets), whether it is
// ignored, its label's logit (0 when there is none), and its index in the segment.
struct Row {
    base: u32,
    y: i32,
    skip: bool,
    xy: f32,
    at: u32,
}

fn row_at(r: u32) -> Row {
    return row_of(r, div_mod(r, params.inner));
}

// Row r, whose (sample, position) sp = div_mod(r, S) the caller tracks.
fn row_of(r: u32, sp: vec2<u32>) -> Row {
    let base = params.lead + sp.x * params.classes * params.inner + sp.y;
    var y = -1;
    if (!PROBS) {
        y = bitcast<i32>(target_bits[params.row_lead + r]);
    }
    let skip = ignored(y);
    var xy = 0.0;
    if (!PROBS && !skip) {
        xy = logit(base + u32(y) * params.inner);
    }
    return Row(base, y, skip, xy, r);
}

// The class of `row` whose element shares a 32-bit word with another row, or C when none does:
// under SHARED_WORDS (an odd class count) the first when the row starts in a word's high half,
// else the last.
fn shared_class(row: Row) -> u32 {
    if (!SHARED_WORDS) {
        return params.classes;
    }
    return select(params.classes - 1u, 0u, row.base % 2u == 1u);
}

// Keeps the gradient of `row`'s shared element in its edge slot, for `shared_words`.
fn store_edge(row: Row, g: f32) {
    state[EDGES + row.at] = g;
}

// Stores gradient i (class c of `row`): into the gradient, or into the row's edge slot for an
// element in a shared word.
fn store_class_grad(row: Row, c: u32, i: u32, g: f32) {
    if (SHARED_WORDS && c == shared_class(row)) {
        store_edge(row, g);
    } else {
        store_grad(i, g);
    }
}

// Running statistics of (part of) a row: the running log-sum-exp (m, t) (see `lse_add`), and two
// sums whose meaning depends on the loss (see `accumulate`).
struct Acc {
    m: f32,
    t: f32,
    a: f32,
    b: f32,
}

fn acc_new() -> Acc {
    return Acc(LSE_EMPTY.x, LSE_EMPTY.y, 0.0, 0.0);
}

// Adds class c (logit x, element i) of `row`. a, b: cross-entropy with labels: sum w_c x_c;
// with probabilities: sum w_c t'_c x_c and sum w_c t'_c; multiclass_hinge: sum h_j^power and
// sum power h_j^(power - 1) over active j != y (a NaN h counts as active, so NaN propagates).
fn accumulate(acc: Acc, c: u32, x: f32, i: u32, row: Row) -> Acc {
    var o = acc;
    if (KIND != MARGIN) {
        let mt = lse_add(vec2<f32>(o.m, o.t), x);
        o.m = mt.x;
        o.t = mt.y;
    }
    if (KIND == CROSS_ENTROPY) {
        if (PROBS) {
            let wt = class_weight(c) * smoothed_target(i);
            o.a += wt * x;
            o.b += wt;
        } else {
            o.a += class_weight(c) * x;
        }
    } else if (KIND == MARGIN && c != u32(row.y)) {
        let h = params.margin - row.xy + x;
        if (!(h <= 0.0)) {
            o.a += hinge_pow(h);
            o.b += hinge_slope(h);
        }
    }
    return o;
}

// The partial statistics invocation k left in the reduction arrays.
fn acc_at(k: u32) -> Acc {
    return Acc(red_m[k], red[k], red_a[k], red_b[k]);
}

fn combine(u: Acc, v: Acc) -> Acc {
    var o = Acc(u.m, u.t, u.a + v.a, u.b + v.b);
    if (KIND != MARGIN) {
        let mt = lse_merge(vec2<f32>(u.m, u.t), vec2<f32>(v.m, v.t));
        o.m = mt.x;
        o.t = mt.y;
    }
    return o;
}

// A finished row (the log-sum-exp parts are unused by multiclass_hinge): its max logit m,
// l = LSE - m = log(1 + t) >= 0, LSE itself, and the sums a, b.
struct Stats {
    m: f32,
    l: f32,
    lse: f32,
    a: f32,
    b: f32,
}

fn finish(acc: Acc) -> Stats {
    let l = lse_excess(vec2<f32>(acc.m, acc.t));
    return Stats(acc.m, l, acc.m + l, acc.a, acc.b);
}

// log p_y = (x_y - m) - l, at most 0 and, for p_y near 1, accurate relative to its own size
// (LSE - x_y would round it to 0 once it falls below LSE's last bit); NaN stays NaN.
fn log_py(row: Row, st: Stats) -> f32 {
    return (row.xy - st.m) - st.l;
}

// Coefficients of a row's gradient: g_c = a (p_c - [c = y]) + bp p_c - bc w_c u_c, u_c = t'_c
// under probability targets and 1 otherwise (multiclass_hinge uses a alone, see
// `class_gradient`); dy = p_y - 1 = expm1(log p_y), the label's p_c - 1 without cancellation.
struct Coef {
    a: f32,
    bp: f32,
    bc: f32,
    dy: f32,
}

// The coefficients of a non-ignored row.
fn coefficients(row: Row, st: Stats, scale: f32) -> Coef {
    let inv_c = 1.0 / f32(params.classes);
    if (KIND == MARGIN) {
        return Coef(scale * class_weight(u32(row.y)) * inv_c, 0.0, 0.0, 0.0);
    }
    if (KIND == FOCAL) {
        let lp = log_py(row, st);
        let py = exp(lp);
        let q = -expm1(lp);
        // log(p_y) / q tends to -1 as q -> 0.
        let r = select(lp / q, -1.0, q == 0.0);
        let gamma = params.gamma;
        let coef = class_weight(u32(row.y)) * pow0(q, gamma) * (1.0 - gamma * py * r);
        return Coef(coef * scale, 0.0, 0.0, -q);
    }
    let bz = 2.0 * params.z_loss * st.lse;
    if (PROBS) {
        return Coef(0.0, (st.b + bz) * scale, scale, 0.0);
    }
    let eps = params.smoothing;
    let lp = log_py(row, st);
    let a = (1.0 - eps) * class_weight(u32(row.y)) + params.poly * exp(lp);
    let bp = (eps * inv_c * params.weight_sum + bz) * scale;
    return Coef(a * scale, bp, eps * inv_c * scale, expm1(lp));
}

// Gradient of class c (capped logit x, element i) of a non-ignored row.
fn class_gradient(c: u32, x: f32, i: u32, row: Row, st: Stats, co: Coef) -> f32 {
    if (KIND == MARGIN) {
        if (c == u32(row.y)) {
            return -co.a * st.b;
        }
        let h = params.margin - row.xy + x;
        return select(0.0, co.a * hinge_slope(h), h > 0.0);
    }
    let p = exp(x - st.lse);
    var u = 1.0;
    if (PROBS) {
        u = smoothed_target(i);
    }
    let p_less_onehot = select(p, co.dy, c == u32(row.y));
    let g = co.a * p_less_onehot + co.bp * p - co.bc * class_weight(c) * u;
    return g * cap_slope(x);
}

// Loss of a non-ignored row.
fn row_loss(row: Row, st: Stats) -> f32 {
    let inv_c = 1.0 / f32(params.classes);
    if (KIND == MARGIN) {
        return class_weight(u32(row.y)) * st.a * inv_c;
    }
    if (KIND == FOCAL) {
        let lp = log_py(row, st);
        return -class_weight(u32(row.y)) * pow0(-expm1(lp), params.gamma) * lp;
    }
    let z = params.z_loss * st.lse * st.lse;
    if (PROBS) {
        return st.lse * st.b - st.a + z;
    }
    let eps = params.smoothing;
    let lp = log_py(row, st);
    return -(1.0 - eps) * class_weight(u32(row.y)) * lp
        + eps * inv_c * (params.weight_sum * st.lse - st.a)
        - params.poly * expm1(lp) + z;
}

fn valid(y: i32) -> bool {
    return y >= 0 && u32(y) < params.classes;
}

@compute @workgroup_size(256)
fn labels_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let b = lane_walk(block_range(params.rows, wid.x, nwg.x, WG), lid.x);
    var acc = 0.0;
    for (var r = b.x; r < b.y; r += LANES) {
        let y = bitcast<i32>(target_bits[params.row_lead + r]);
        if (ignored(y)) {
            continue;
        }
        if (valid(y)) {
            acc += select(class_weight(u32(y)), 1.0, params.count_rows != 0u);
        } else {
            atomicMax(&status[0], 0xffffffffu - (params.row_base + r));
        }
    }
    let s = workgroup_sum(lid.x, acc);
    if (lid.x == 0u) {
        partials[params.wg_base + wid.x] = s;
    }
}

@compute @workgroup_size(256)
fn labels_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var i = lid.x; i < params.num_partials; i += WG) {
        acc += partials[i];
    }
    let total = workgroup_sum(lid.x, acc);
    if (lid.x == 0u) {
        state[0] = total;
    }
}

@compute @workgroup_size(256)
fn fused(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let scale = gradient_scale();
    var total = 0.0;
    for (var r = wid.x; r < params.rows; r += nwg.x) {
        let row = row_at(r);
        // Sweep 1: the row's statistics, then a tree over the workgroup.
        let acc = sweep_stats(row, lid.x);
        red_m[lid.x] = acc.m;
        red[lid.x] = acc.t;
        red_a[lid.x] = acc.a;
        red_b[lid.x] = acc.b;
        workgroupBarrier();
        for (var h = WG / 2u; h > 0u; h >>= 1u) {
            if (lid.x < h) {
                let o = combine(acc_at(lid.x), acc_at(lid.x + h));
                red_m[lid.x] = o.m;
                red[lid.x] = o.t;
                red_a[lid.x] = o.a;
                red_b[lid.x] = o.b;
            }
            workgroupBarrier();
        }
        let st = finish(acc_at(0u));
        workgroupBarrier();
        // Sweep 2: the gradient.
        var co = Coef(0.0, 0.0, 0.0, 0.0);
        if (!row.skip) {
            co = coefficients(row, st, scale);
        }
        sweep_grad(row, st, co, lid.x);
        var l = 0.0;
        if (!row.skip) {
            l = row_loss(row, st);
        }
        if (params.per_row != 0u) {
            if (lid.x == 0u) {
                loss[params.row_lead + r] = l;
            }
        } else {
            total += l;
        }
    }
    // Only invocation 0's total is kept: every invocation summed the same row losses.
    if (lid.x == 0u && params.per_row == 0u) {
        partials[params.wg_base + wid.x] = total;
    }
}

// The row loss and, unless the row is ignored, its gradient for a whole row in one invocation:
// the path for few classes on a GPU (C <= 32), where a workgroup per row would leave most
// invocations idle, and for every row within the loop budget on a CPU adapter, where the
// workgroup path's barriers cost more than the row (the host's `Gpu::whole_row_classes`).
@compute @workgroup_size(256)
fn fused_rows(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let scale = gradient_scale();
    let b = lane_walk(block_range(params.rows, wid.x, nwg.x, WG), lid.x);
    var pos = walk2(b.x, params.inner);
    var total = 0.0;
    for (var r = b.x; r < b.y; r += LANES) {
        let row = row_of(r, pos.at);
        pos = step2(pos);
        var acc = acc_new();
        for (var c = 0u; c < params.classes; c++) {
            let i = row.base + c * params.inner;
            acc = accumulate(acc, c, logit(i), i, row);
        }
        let st = finish(acc);
        var l = 0.0;
        if (row.skip) {
            for (var c = 0u; c < params.classes; c++) {
                store_class_grad(row, c, row.base + c * params.inner, 0.0);
            }
        } else {
            let co = coefficients(row, st, scale);
            for (var c = 0u; c < params.classes; c++) {
                let i = row.base + c * params.inner;
                store_class_grad(row, c, i, class_gradient(c, logit(i), i, row, st, co));
            }
            l = row_loss(row, st);
        }
        if (params.per_row != 0u) {
            loss[params.row_lead + r] = l;
        } else {
            total += l;
        }
    }
    store_total(lid.x, wid.x, total);
}

// Ends a pass of one invocation per row (or pair of rows): the workgroup's sum of its rows'
// losses to its partial slot, unless each row's loss was written. Call in uniform control flow.
fn store_total(lid: u32, wid: u32, total: f32) {
    if (params.per_row == 0u) {
        let sum = workgroup_sum(lid, total);
        if (lid == 0u) {
            partials[params.wg_base + wid] = sum;
        }
    }
}

@compute @workgroup_size(256)
fn reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    var acc = 0.0;
    for (var i = lid.x; i < params.num_partials; i += WG) {
        acc += partials[i];
    }
    let total = workgroup_sum(lid.x, acc);
    if (lid.x == 0u) {
        let denom = denominator();
        loss[0] = select(total, select(0.0, total / denom, denom != 0.0), params.mean != 0u);
    }
}
