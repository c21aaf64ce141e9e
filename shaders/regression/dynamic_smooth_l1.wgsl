// dynamic_smooth_l1 (Dynamic R-CNN): smooth L1 with beta = state[0]. Each call also records the
// k-th smallest |r| into a history on the GPU; every `iters` calls beta becomes
// min(initial_beta, median(history)) and the history restarts. No host round-trip.
//
// state: [0] beta, [1] calls recorded so far, [2 ..] history. params.p.x = initial_beta.
// `fused_kth` is the fused pass: loss, gradient, partial sums and each workgroup's k smallest
// |r| (after the sums, in partials[num_partials + slot * k ..]); `reduce_kth` finishes the loss,
// selects the global k-th smallest and updates the state.

fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    return smooth_l1(p - t, state[0]);
}

const KMAX: u32 = 16u;
const HMAX: u32 = 1024u;

var<workgroup> pick_val: array<f32, 256>;
var<workgroup> pick_idx: array<u32, 256>;
var<workgroup> history: array<f32, HMAX>;
var<workgroup> flag: u32;

// Inserts `a` into the ascending list `best[0..k]`, dropping its largest entry.
fn insert_smallest(best: ptr<function, array<f32, KMAX>>, k: u32, a: f32) {
    if (!(a < (*best)[k - 1u])) {
        return;
    }
    var j = k - 1u;
    while (j > 0u && (*best)[j - 1u] > a) {
        (*best)[j] = (*best)[j - 1u];
        j -= 1u;
    }
    (*best)[j] = a;
}

// Merges the workgroup's ascending lists into the k smallest values overall, in rounds of
// argmin (ties to the lower invocation). Round r's value is passed to `emit` via the returned
// array, valid in invocation 0.
fn merge_smallest(lid: u32, best: array<f32, KMAX>, k: u32) -> array<f32, KMAX> {
    var out: array<f32, KMAX>;
    var head = 0u;
    for (var round = 0u; round < k; round++) {
        pick_val[lid] = select(BIG, best[min(head, KMAX - 1u)], head < k);
        pick_idx[lid] = lid;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s && pick_val[lid + s] < pick_val[lid]) {
                pick_val[lid] = pick_val[lid + s];
                pick_idx[lid] = pick_idx[lid + s];
            }
            workgroupBarrier();
        }
        out[round] = pick_val[0];
        if (pick_idx[0] == lid) {
            head += 1u;
        }
        workgroupBarrier();
    }
    return out;
}

fn empty_list() -> array<f32, KMAX> {
    var best: array<f32, KMAX>;
    for (var j = 0u; j < KMAX; j++) {
        best[j] = BIG;
    }
    return best;
}

@compute @workgroup_size(256)
fn fused_kth(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = params.k;
    let beta = state[0];
    let stride = nwg.x * WG;
    var best = empty_list();
    var acc = 0.0;
    for (var i = wid.x * WG + lid.x; i < params.n; i += stride) {
        let r = pred[i] - targ[i];
        let v = smooth_l1(r, beta);
        grad[i] = v.y * params.grad_scale;
        if (PER_ELEMENT) {
            loss[i] = v.x;
        } else {
            acc += v.x;
        }
        insert_smallest(&best, k, abs(r));
    }
    let s = workgroup_sum(lid.x, acc);
    let slot = params.wg_base + wid.x;
    let merged = merge_smallest(lid.x, best, k);
    if (lid.x == 0u) {
        partials[slot] = s;
        for (var j = 0u; j < k; j++) {
            partials[params.num_partials + slot * k + j] = merged[j];
        }
    }
}

@compute @workgroup_size(256)
fn reduce_kth(@builtin(local_invocation_id) lid: vec3<u32>) {
    let k = params.k;
    var acc = 0.0;
    var best = empty_list();
    for (var slot = lid.x; slot < params.num_partials; slot += WG) {
        acc += partials[slot];
        for (var j = 0u; j < k; j++) {
            insert_smallest(&best, k, partials[params.num_partials + slot * k + j]);
        }
    }
    let total = workgroup_sum(lid.x, acc);
    let merged = merge_smallest(lid.x, best, k);
    if (lid.x == 0u) {
        if (!PER_ELEMENT) {
            loss[0] = total * params.loss_scale;
        }
        // k' = min(k, n), 1-based.
        let kth = merged[min(k, params.total) - 1u];
        let count = u32(state[1]);
        state[2u + count] = kth;
        flag = count + 1u;
    }
    let recorded = workgroupUniformLoad(&flag);
    if (recorded < params.iters) {
        if (lid.x == 0u) {
            state[1] = f32(recorded);
        }
        return;
    }
    // Median of the history: each value's rank (ties by position) places it in sorted order.
    let m = params.iters;
    for (var j = lid.x; j < m; j += WG) {
        let v = state[2u + j];
        var rank = 0u;
        for (var i = 0u; i < m; i++) {
            let w = state[2u + i];
            if (w < v || (w == v && i < j)) {
                rank += 1u;
            }
        }
        history[rank] = v;
    }
    workgroupBarrier();
    if (lid.x == 0u) {
        let median = 0.5 * (history[(m - 1u) / 2u] + history[m / 2u]);
        // min(initial_beta, median); a NaN median leaves initial_beta, as Python's min does.
        state[0] = select(params.p.x, median, median < params.p.x);
        state[1] = 0.0;
    }
}
