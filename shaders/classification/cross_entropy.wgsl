// cross_entropy (torch cross_entropy with class-index targets), fused forward+backward.
//
// The same driver serves poly1 (Leng et al. 2022), which adds poly (1 - p_y) to each row's loss
// and poly p_y (p_j - [j = y]) times the scale to its gradient.
//
// Extras (PaLM, Gemma): z_loss adds z LSE^2 per row (gradient 2 z LSE p_j); logit_softcap reads
// every logit as cap tanh(x / cap) and multiplies its gradient by 1 - tanh^2.
//
// Logits are [N, C, S] (S = product of trailing dims, 1 for [N, C]); a row is one (n, s), its
// classes C apart by S. Labels are i32 [N, S]. Per row, with p = softmax(x), w the class
// weights (ones when absent), W = sum_c w_c, eps the label smoothing, y the label:
//   loss_r = (1 - eps) w_y (LSE - x_y) + eps / C (W LSE - sum_c w_c x_c)
//   d/dx_j = scale [(1 - eps) w_y (p_j - [j = y]) + eps / C (W p_j - w_j)]
// with scale = grad_scale / D under mean (D = sum of w_y over non-ignored rows, as torch),
// grad_scale otherwise. Ignored rows have loss 0 and gradient 0.
//
// Passes: `labels_pass` checks every label (a label outside [0, C) that is not ignore_index
// records its position in `status`, the smallest bad one kept) and sums w_y per workgroup;
// `labels_reduce` leaves D in state[0]; `fused` (one workgroup per row, rows strided over the
// workgroups) streams each row twice (online max / sum, then the gradient) and writes nothing
// at all if a bad label was recorded; `fused_rows` does the same with one invocation per row,
// for few classes; `reduce` finishes the loss.
// No inf is used: the running max starts at -BIG, whose exponentials underflow to 0.

struct Params {
    rows: u32,          // rows in this segment (samples * S)
    classes: u32,       // C
    inner: u32,         // S
    row_base: u32,      // global index of the segment's first row
    wg_base: u32,       // first partial slot of this segment
    num_partials: u32,  // partial slots over all segments
    ignore_index: i32,
    has_ignore: u32,    // 0 when ignore_index is outside the i32 range (nothing is ignored)
    grad_scale: f32,    // grad_scale (divided by D in the shader under mean)
    smoothing: f32,     // eps
    weight_sum: f32,    // W
    mean: u32,          // 1 under reduction mean
    per_row: u32,       // 1 under reduction none
    has_weight: u32,    // 0: all class weights are 1 (the weight binding is not read)
    poly: f32,          // poly1's epsilon (0 for cross-entropy)
    z_loss: f32,        // z (0: no z-loss)
    softcap: f32,       // cap (0: no soft cap)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(8) var<storage, read_write> state: array<f32>;

// status[0] is 0 (no bad label) or 0xffffffff - p for the smallest bad position p, so that
// atomicMax keeps the first and a zero-filled buffer starts clean.
const NO_ERROR: u32 = 0u;

// Whether logits are soft-capped: a pipeline constant, so that the plain loss pays nothing.
override SOFTCAP: bool = false;

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_x: array<f32, 256>;
var<workgroup> failed: u32;

fn ignored(y: i32) -> bool {
    return params.has_ignore != 0u && y == params.ignore_index;
}

fn class_weight(c: u32) -> f32 {
    if (params.has_weight != 0u) {
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

// grad_scale / D under mean (0 when every row is ignored: loss 0, gradient 0), grad_scale
// otherwise.
fn gradient_scale() -> f32 {
    let denom = state[0];
    if (params.mean == 0u) {
        return params.grad_scale;
    }
    return select(0.0, params.grad_scale / denom, denom != 0.0);
}

// Logit i as the loss sees it: soft-capped when a cap is set. tanh is written with e^{-2|u|} so
// that it never evaluates inf / inf.
fn logit(i: u32) -> f32 {
    let x = logits[i];
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

// Loss of a non-ignored row from its label's weight w_y, logit x_y and probability p_y, its
// LSE and sum_c w_c x_c (the terms of the header).
fn loss_of_row(wy: f32, xy: f32, py: f32, lse: f32, sum_wx: f32) -> f32 {
    let eps = params.smoothing;
    return (1.0 - eps) * wy * (lse - xy)
        + eps / f32(params.classes) * (params.weight_sum * lse - sum_wx)
        + params.poly * (1.0 - py) + params.z_loss * lse * lse;
}

// Gradient of class c with probability p, before the soft cap's slope:
// a (p - [c = y]) + b p - bc w_c, with a, b, bc the row's coefficients.
fn class_gradient(p: f32, is_label: bool, a: f32, b: f32, bc: f32, c: u32) -> f32 {
    return a * (p - select(0.0, 1.0, is_label)) + b * p - bc * class_weight(c);
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
    let b = block_range(params.rows, wid.x, nwg.x, WG);
    var acc = 0.0;
    for (var r = b.x + lid.x; r < b.y; r += WG) {
        let y = labels[r];
        if (ignored(y)) {
            continue;
        }
        if (valid(y)) {
            acc += class_weight(u32(y));
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
    let c_count = params.classes;
    let inner = params.inner;
    let eps = params.smoothing;
    let scale = gradient_scale();
    var acc = 0.0;
    for (var r = wid.x; r < params.rows; r += nwg.x) {
        let base = (r / inner) * c_count * inner + r % inner;
        let y = labels[r];
        let skip = ignored(y);
        // Sweep 1: online max and sum of exponentials, and sum_c w_c x_c.
        var m = -BIG;
        var s = 0.0;
        var wx = 0.0;
        for (var c = lid.x; c < c_count; c += WG) {
            let x = logit(base + c * inner);
            let m2 = max(m, x);
            s = s * exp(m - m2) + exp(x - m2);
            m = m2;
            wx += class_weight(c) * x;
        }
        red_m[lid.x] = m;
        red[lid.x] = s;
        red_x[lid.x] = wx;
        workgroupBarrier();
        for (var h = WG / 2u; h > 0u; h >>= 1u) {
            if (lid.x < h) {
                let ma = red_m[lid.x];
                let mb = red_m[lid.x + h];
                let mm = max(ma, mb);
                red[lid.x] = red[lid.x] * exp(ma - mm) + red[lid.x + h] * exp(mb - mm);
                red_m[lid.x] = mm;
                red_x[lid.x] += red_x[lid.x + h];
            }
            workgroupBarrier();
        }
        let lse = red_m[0] + log(red[0]);
        let sum_wx = red_x[0];
        workgroupBarrier();
        // Sweep 2: the gradient.
        var wy = 0.0;
        var xy = 0.0;
        if (!skip) {
            wy = class_weight(u32(y));
            xy = logit(base + u32(y) * inner);
        }
        let py = exp(xy - lse);
        let a = ((1.0 - eps) * wy + params.poly * py) * scale;
        let bw = eps / f32(c_count) * params.weight_sum * scale;
        let bc = eps / f32(c_count) * scale;
        let bz = 2.0 * params.z_loss * lse * scale;
        for (var c = lid.x; c < c_count; c += WG) {
            let i = base + c * inner;
            var g = 0.0;
            if (!skip) {
                let xc = logit(i);
                let p = exp(xc - lse);
                g = class_gradient(p, c == u32(y), a, bw + bz, bc, c) * cap_slope(xc);
            }
            grad[i] = g;
        }
        var row_loss = 0.0;
        if (!skip) {
            row_loss = loss_of_row(wy, xy, py, lse, sum_wx);
        }
        if (params.per_row != 0u) {
            if (lid.x == 0u) {
                loss[r] = row_loss;
            }
        } else {
            acc += row_loss;
        }
    }
    // Only invocation 0 accumulated row losses.
    if (lid.x == 0u && params.per_row == 0u) {
        partials[params.wg_base + wid.x] = acc;
    }
}

// The row loss and, unless `skip`, its gradient for a whole row in one invocation: the path
// for few classes (C <= SMALL_C), where a workgroup per row would leave most invocations idle.
@compute @workgroup_size(256)
fn fused_rows(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let c_count = params.classes;
    let inner = params.inner;
    let eps = params.smoothing;
    let scale = gradient_scale();
    let b = block_range(params.rows, wid.x, nwg.x, WG);
    var acc = 0.0;
    for (var r = b.x + lid.x; r < b.y; r += WG) {
        let base = (r / inner) * c_count * inner + r % inner;
        let y = labels[r];
        var m = -BIG;
        var s = 0.0;
        var wx = 0.0;
        for (var c = 0u; c < c_count; c++) {
            let x = logit(base + c * inner);
            let m2 = max(m, x);
            s = s * exp(m - m2) + exp(x - m2);
            m = m2;
            wx += class_weight(c) * x;
        }
        let lse = m + log(s);
        var row_loss = 0.0;
        if (ignored(y)) {
            for (var c = 0u; c < c_count; c++) {
                grad[base + c * inner] = 0.0;
            }
        } else {
            let yc = u32(y);
            let wy = class_weight(yc);
            let xy = logit(base + yc * inner);
            let py = exp(xy - lse);
            let a = ((1.0 - eps) * wy + params.poly * py) * scale;
            let bw = eps / f32(c_count) * params.weight_sum * scale;
            let bc = eps / f32(c_count) * scale;
            let bz = 2.0 * params.z_loss * lse * scale;
            for (var c = 0u; c < c_count; c++) {
                let i = base + c * inner;
                let xc = logit(i);
                let p = exp(xc - lse);
                grad[i] = class_gradient(p, c == yc, a, bw + bz, bc, c) * cap_slope(xc);
            }
            row_loss = loss_of_row(wy, xy, py, lse, wx);
        }
        if (params.per_row != 0u) {
            loss[r] = row_loss;
        } else {
            acc += row_loss;
        }
    }
    if (params.per_row == 0u) {
        let total = workgroup_sum(lid.x, acc);
        if (lid.x == 0u) {
            partials[params.wg_base + wid.x] = total;
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
        let denom = state[0];
        loss[0] = select(total, select(0.0, total / denom, denom != 0.0), params.mean != 0u);
    }
}
