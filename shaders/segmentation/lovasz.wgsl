// Lovász losses (smp LovaszLoss): lovasz_softmax (multiclass logits [N, C, S], labels [N, S],
// classes present) and lovasz_hinge (binary logits [N, 1, S], masks [N, 1, S]).
//
// Errors are grouped (a class over the batch, or an (image, class) pair per image; the hinge: the
// batch, or one image), sorted in decreasing order on the GPU, and with gt the sorted 0/1 ground
// truth, gts its sum and cum_i its running sum,
//   J_i = 1 - (gts - cum_i) / (gts + (i + 1 - cum_i)),   g_i = J_i - J_{i-1} (J_{-1} = 0)
//   loss_group = sum_i f(e_i) g_i,   f(e) = e (softmax, e = |fg - p_c|) or relu(e) (hinge,
//   e = 1 - x (2t - 1)).
// softmax: the loss is the mean over present classes (gts > 0) of each image (per_image, then
// the mean over images) or of the batch; hinge: the mean over images, or the batch's loss.
//
// A group owns P slots (P a power of two >= its pixels); slots carry the error as the sort key
// and, as the value, 4 pixel + 2 gt + ignored (ignored also set for the padding, whose key is
// NaN and which sorts last with ignored pixels), so that equal errors keep pixel order. Groups are bound in
// chunks that fit one binding; logits, targets and gradient in segments of whole samples, each
// view bound from the storage offset alignment at or before its first element
// (`Tensor::binding_led`): `lead` and `target_lead` count the elements bound before it.
// Passes: `init_slots`, `errors_pass` (per segment and chunk), the sort, `scan_blocks`,
// `scan_groups`, `finish` (per-group weights), `lovasz_pass` (per chunk and segment: the
// Lovász gradient of each slot, into the gradient w.r.t. the probability or logit),
// `chain_pass` (softmax: through the softmax), `reduce`.

struct Params {
    samples: u32,      // samples in this logits segment
    classes: u32,      // C (1 for the hinge)
    inner: u32,        // S
    sample_base: u32,  // first sample of this logits segment
    group_len: u32,    // P
    chunk_groups: u32, // groups per chunk
    group_base: u32,   // first group of this chunk
    groups: u32,       // G, all groups
    ignore_index: i32,
    has_ignore: u32,
    per_image: u32,
    images: u32,       // N
    wg_base: u32,      // first partial slot of this (chunk, segment) dispatch
    num_partials: u32,
    write_loss: u32,   // 1 in the first segment's dispatch of each chunk
    grad_scale: f32,
    lead: u32,         // elements bound before the segment's first logit (and gradient)
    target_lead: u32,  // elements bound before the segment's first target
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> target_bits: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> keys: array<f32>;
@group(0) @binding(5) var<storage, read_write> vals: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read_write> work: array<f32>;
@group(0) @binding(8) var<storage, read_write> status: array<atomic<u32>>;

// `work`: [0, G) group totals gts, [G, 2G) group weights, [2G, 2G + blocks) block offsets,
// then the loss partials.
const GT_BIT: u32 = 2u;
const IGNORED_BIT: u32 = 1u;
const SENTINEL: u32 = 0xffffffffu;

fn slot_value(pixel: u32, flags: u32) -> u32 {
    return (pixel << 2u) | flags;
}
const BLOCK: u32 = 512u;

// Whether the kernel computes the hinge (true) or the softmax loss.
override HINGE: bool = false;

var<workgroup> failed: u32;
var<workgroup> scan: array<f32, 512>;

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn bad_label_recorded(lid: u32) -> bool {
    if (lid == 0u) {
        failed = select(0u, 1u, atomicLoad(&status[0]) != 0u);
    }
    return workgroupUniformLoad(&failed) != 0u;
}

fn off_weights() -> u32 {
    return params.groups;
}

fn off_blocks() -> u32 {
    return 2u * params.groups;
}

fn off_partials() -> u32 {
    return 2u * params.groups + params.groups * params.group_len / BLOCK + 1u;
}

// Group and slot position of class c of global pixel (n, s).
fn group_of(n: u32, c: u32) -> u32 {
    if (params.per_image != 0u) {
        return n * params.classes + c;
    }
    return c;
}

fn position_of(n: u32, s: u32) -> u32 {
    return select(n * params.inner + s, s, params.per_image != 0u);
}

@compute @workgroup_size(256)
fn init_slots(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < params.chunk_groups * params.group_len) {
        keys[i] = nan();
        vals[i] = SENTINEL;
    }
}

// Every pixel of the segment writes its slot in each group of this chunk.
@compute @workgroup_size(256)
fn errors_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let rows = params.samples * params.inner;
    let b = lane_walk(block_range(rows, wid.x, nwg.x, WG), lid.x);
    let chunk_end = params.group_base + params.chunk_groups;
    // (sample, position) of pixel r.
    var pos = walk2(b.x, params.inner);
    for (var r = b.x; r < b.y; r += LANES) {
        let ns = pos.at;
        pos = step2(pos);
        let n_local = ns.x;
        let s = ns.y;
        let n = params.sample_base + n_local;
        let pixel = n * params.inner + s;
        if (HINGE) {
            let g = select(0u, n, params.per_image != 0u);
            if (g < params.group_base || g >= chunk_end) {
                continue;
            }
            let t = bitcast<f32>(target_bits[params.target_lead + r]);
            let slot = (g - params.group_base) * params.group_len + position_of(n, s);
            grad[params.lead + r] = 0.0;
            if (params.has_ignore != 0u && t == f32(params.ignore_index)) {
                vals[slot] = slot_value(pixel, IGNORED_BIT);
                continue;
            }
            let gt = t > 0.5;
            keys[slot] = 1.0 - logits[params.lead + r] * (2.0 * t - 1.0);
            vals[slot] = slot_value(pixel, select(0u, GT_BIT, gt));
            continue;
        }
        let y = bitcast<i32>(target_bits[params.target_lead + r]);
        let ignored = params.has_ignore != 0u && y == params.ignore_index;
        if (!ignored && (y < 0 || u32(y) >= params.classes)) {
            atomicMax(&status[0], 0xffffffffu - pixel);
            continue;
        }
        let base = params.lead + n_local * params.classes * params.inner + s;
        let sm = pixel_softmax(base);
        for (var c = 0u; c < params.classes; c++) {
            let g = group_of(n, c);
            if (g < params.group_base || g >= chunk_end) {
                continue;
            }
            let slot = (g - params.group_base) * params.group_len + position_of(n, s);
            if (ignored) {
                vals[slot] = slot_value(pixel, IGNORED_BIT);
                continue;
            }
            let fg = u32(y) == c;
            let p = exp(logits[base + c * params.inner] - sm.x) / sm.y;
            keys[slot] = abs(select(0.0, 1.0, fg) - p);
            vals[slot] = slot_value(pixel, select(0u, GT_BIT, fg));
        }
    }
}

// The softmax of the pixel whose class-0 logit is at `base`: (m, Σ_c e^{x_c − m}) with m the
// largest logit, so that p_c = e^{x_c − m} / sum. The sum is taken in 64-bit fixed point (units
// of 2^-40, two u32 words): integer addition is associative, so the sum, and with it every
// probability, has the same bits whatever the order of the classes. Mathematically equal errors
// (a class of two pixels whose other logits are permuted) then stay equal in f32 and sort as
// they do in exact arithmetic. Terms under 2^-40 are dropped (the sum is at least 1); the high
// word holds C · 2^8, so C < 2^24 (the host checks). A NaN logit makes the sum NaN.
fn pixel_softmax(base: u32) -> vec2<f32> {
    var m = -BIG;
    var nan_seen = false;
    for (var c = 0u; c < params.classes; c++) {
        let x = logits[base + c * params.inner];
        nan_seen = nan_seen || is_nan(x);
        m = max(m, x);
    }
    var hi = 0u;
    var lo = 0u;
    for (var c = 0u; c < params.classes; c++) {
        let v = exp(logits[base + c * params.inner] - m) * 256.0;
        let whole = floor(v);
        let low = lo + u32((v - whole) * 4294967296.0);
        hi += u32(whole) + select(0u, 1u, low < lo);
        lo = low;
    }
    let sum = f32(hi) * (1.0 / 256.0) + f32(lo) * (1.0 / 1099511627776.0);
    return vec2<f32>(m, select(sum, nan(), nan_seen));
}

fn gt_of(v: u32) -> f32 {
    return select(0.0, 1.0, (v & GT_BIT) != 0u && (v & IGNORED_BIT) == 0u);
}

// Invocations of the block passes (scan_blocks, lovasz_pass), each owning SPAN consecutive
// slots of the block: 256 on a GPU, one SIMD group of 8 on a CPU adapter (where each barrier
// and each invocation that waits at one costs); set by the host.
override BLOCK_WG: u32 = 256u;
// Derived from BLOCK_WG (an override, as WGSL has no constants computed from overrides).
override SPAN: u32 = BLOCK / BLOCK_WG;

var<workgroup> span_sums: array<f32, BLOCK_WG>;

// The sum of `v` over the invocations before `lid` (exact for integers below 2^24), and in
// span_sums[BLOCK_WG - 1] (read after the call) the workgroup's total. Call in uniform control
// flow.
fn span_exclusive(lid: u32, v: f32) -> f32 {
    var sum = v;
    for (var s = 1u; s < BLOCK_WG; s <<= 1u) {
        span_sums[lid] = sum;
        workgroupBarrier();
        if (lid >= s) {
            sum += span_sums[lid - s];
        }
        workgroupBarrier();
    }
    span_sums[lid] = sum;
    workgroupBarrier();
    return sum - v;
}

// Inclusive scan of `scan` over the workgroup's BLOCK slots.
fn block_scan(lid: u32) {
    let first = lid * SPAN;
    var run = 0.0;
    for (var t = first; t < first + SPAN; t++) {
        run += scan[t];
        scan[t] = run;
    }
    let before = span_exclusive(lid, run);
    for (var t = first; t < first + SPAN; t++) {
        scan[t] += before;
    }
    workgroupBarrier();
}

// Per block of the chunk: its sum of gt (groups of P >= BLOCK), or the totals of the groups
// it holds (P < BLOCK).
@compute @workgroup_size(BLOCK_WG)
fn scan_blocks(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let block = wid.x + wid.y * nwg.x;
    let base = block * BLOCK;
    if (base >= params.chunk_groups * params.group_len) {
        return;
    }
    for (var t = lid.x * SPAN; t < lid.x * SPAN + SPAN; t++) {
        scan[t] = gt_of(vals[base + t]);
    }
    block_scan(lid.x);
    let p = params.group_len;
    if (p >= BLOCK) {
        if (lid.x == 0u) {
            let global_block = params.group_base * p / BLOCK + block;
            work[off_blocks() + global_block] = scan[BLOCK - 1u];
        }
    } else {
        for (var i = lid.x; i < BLOCK / p; i += BLOCK_WG) {
            // Group i of the block ends at slot (i + 1) p - 1.
            let end = (i + 1u) * p - 1u;
            var before = 0.0;
            if (i > 0u) {
                before = scan[i * p - 1u];
            }
            let g = params.group_base + (base / p) + i;
            if (g < params.groups) {
                work[g] = scan[end] - before;
            }
        }
    }
}

// Groups of P >= BLOCK: the exclusive offsets of their blocks and their totals (one workgroup
// per group of the chunk, on a 2-D grid).
@compute @workgroup_size(256)
fn scan_groups(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let local_group = wid.x + wid.y * nwg.x;
    let g = params.group_base + local_group;
    if (local_group >= params.chunk_groups || g >= params.groups || params.group_len < BLOCK) {
        return;
    }
    let blocks = params.group_len / BLOCK;
    let first = g * blocks;
    // Invocation 0 walks the group's blocks: few (P / 512 <= 2^21).
    if (lid.x == 0u) {
        var total = 0.0;
        for (var b = 0u; b < blocks; b++) {
            let v = work[off_blocks() + first + b];
            work[off_blocks() + first + b] = total;
            total += v;
        }
        work[g] = total;
    }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let c_count = params.classes;
    if (HINGE) {
        let share = select(1.0, 1.0 / f32(params.images), params.per_image != 0u);
        for (var g = lid.x; g < params.groups; g += WG) {
            work[off_weights() + g] = share;
        }
        return;
    }
    // Softmax: the mean over present classes of each image (or of the batch), then over images.
    let units = select(1u, params.images, params.per_image != 0u);
    for (var u = lid.x; u < units; u += WG) {
        var present = 0u;
        for (var c = 0u; c < c_count; c++) {
            present += select(0u, 1u, work[u * c_count + c] > 0.0);
        }
        let share = 1.0 / (f32(max(present, 1u)) * f32(units));
        for (var c = 0u; c < c_count; c++) {
            let g = u * c_count + c;
            work[off_weights() + g] = select(0.0, share, work[g] > 0.0);
        }
    }
}

// Per block of sorted slots: the Lovász gradient, the loss partial and the gradient w.r.t. the
// probability (softmax) or logit (hinge) of each slot whose pixel lies in this logits segment.
@compute @workgroup_size(BLOCK_WG)
fn lovasz_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let block = wid.x + wid.y * nwg.x;
    let base = block * BLOCK;
    let in_chunk = base < params.chunk_groups * params.group_len;
    for (var t = lid.x * SPAN; t < lid.x * SPAN + SPAN; t++) {
        var v = 0.0;
        if (in_chunk) {
            v = gt_of(vals[base + t]);
        }
        scan[t] = v;
    }
    block_scan(lid.x);
    let p = params.group_len;
    let first_pixel = params.sample_base * params.inner;
    let last_pixel = first_pixel + params.samples * params.inner;
    var acc = 0.0;
    for (var t = lid.x * SPAN; t < lid.x * SPAN + SPAN; t++) {
        let slot = base + t;
        if (!in_chunk) {
            break;
        }
        let g = params.group_base + slot / p;
        let q = slot % p;
        let v = vals[slot];
        let e = keys[slot];
        if ((v & IGNORED_BIT) != 0u || g >= params.groups) {
            continue;
        }
        // Running sum of gt up to this slot within its group.
        var cum = scan[t];
        if (p >= BLOCK) {
            cum += work[off_blocks() + params.group_base * p / BLOCK + block];
        } else if (t >= q + 1u) {
            cum -= scan[t - q - 1u];
        }
        let gt = gt_of(v);
        let gts = work[g];
        // g = J_q - J_{q-1} without the cancellation of two nearly equal J: with I, U the
        // intersection and union after this slot, a foreground slot lowers I by one (g = 1/U),
        // a background slot raises U by one (g = I / (U (U - 1))); the first slot has
        // J_{-1} = 0 and g = J_0 = 1 / U whatever its gt (1 - (gts - 1) / gts, 1 - gts / (gts + 1)).
        let inter = gts - cum;
        let uni = gts + (f32(q) + 1.0 - cum);
        var lg = 1.0 / uni;
        if (q > 0u && gt < 0.5) {
            lg = inter / (uni * (uni - 1.0));
        }
        let w = work[off_weights() + g];
        var f = e;
        var slope = 1.0;
        if (HINGE) {
            f = max(e, 0.0);
            slope = select(0.0, 1.0, e > 0.0);
        }
        if (params.write_loss != 0u) {
            // A NaN error (NaN logit) is not ignored: it reaches the loss.
            acc += select(w * f * lg, e, is_nan(e));
        }
        let pixel = v >> 2u;
        if (pixel < first_pixel || pixel >= last_pixel) {
            continue;
        }
        let local = pixel - first_pixel;
        let d = w * slope * lg * params.grad_scale;
        if (HINGE) {
            // e = 1 - x s: d e / d x = -s.
            grad[params.lead + local] = -d * (2.0 * gt - 1.0);
        } else {
            // e = |fg - p|: d e / d p = sign(p - fg), 0 at e = 0.
            let c = g % params.classes;
            let n_local = local / params.inner;
            let s = local % params.inner;
            let sign_pf = select(select(1.0, -1.0, gt > 0.5), 0.0, e == 0.0);
            grad[params.lead + (n_local * params.classes + c) * params.inner + s] = d * sign_pf;
        }
    }
    if (params.write_loss != 0u) {
        span_exclusive(lid.x, acc);
        if (lid.x == 0u) {
            work[off_partials() + params.wg_base + block] = span_sums[BLOCK_WG - 1u];
        }
    }
}

// Softmax: from d loss / d p (left in `grad` by lovasz_pass) to d loss / d logits, per pixel.
@compute @workgroup_size(256)
fn chain_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let rows = params.samples * params.inner;
    let b = lane_walk(block_range(rows, wid.x, nwg.x, WG), lid.x);
    var pos = walk2(b.x, params.inner);
    for (var r = b.x; r < b.y; r += LANES) {
        let ns = pos.at;
        pos = step2(pos);
        let base = params.lead + ns.x * params.classes * params.inner + ns.y;
        let y = bitcast<i32>(target_bits[params.target_lead + r]);
        if (params.has_ignore != 0u && y == params.ignore_index) {
            for (var c = 0u; c < params.classes; c++) {
                grad[base + c * params.inner] = 0.0;
            }
            continue;
        }
        let sm = pixel_softmax(base);
        var dot = 0.0;
        for (var c = 0u; c < params.classes; c++) {
            let i = base + c * params.inner;
            dot += exp(logits[i] - sm.x) / sm.y * grad[i];
        }
        for (var c = 0u; c < params.classes; c++) {
            let i = base + c * params.inner;
            let pc = exp(logits[i] - sm.x) / sm.y;
            grad[i] = pc * (grad[i] - dot);
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
        acc += work[off_partials() + i];
    }
    let total = workgroup_sum(lid.x, acc);
    if (lid.x == 0u) {
        loss[0] = total;
    }
}
