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

// Lists sent in a merge stage: at most WG / 2 senders of KMAX values (8 KiB).
var<workgroup> exchange: array<f32, 2048>;
var<workgroup> history: array<f32, HMAX>;
var<workgroup> flag: u32;

// Inserts `a` into the ascending list `best`, dropping its largest entry: one pass of
// compare-exchange at fixed positions, which compilers keep in registers. Callers skip values not
// below `best[KMAX - 1]` (NaN included, so no NaN enters a list).
fn insert_smallest(best: ptr<function, array<f32, KMAX>>, a: f32) {
    var x = a;
    for (var j = 0u; j < KMAX; j++) {
        let b = (*best)[j];
        (*best)[j] = min(b, x);
        x = max(b, x);
    }
}

// Reduces the workgroup's ascending lists to the k smallest values overall in log2(WG) stages
// of pairwise merges through workgroup memory (two barriers a stage); the result is valid in
// invocation 0.
fn merge_smallest(lid: u32, list: array<f32, KMAX>, k: u32) -> array<f32, KMAX> {
    var mine = list;
    for (var half = 1u; half < WG; half <<= 1u) {
        let at = lid / (2u * half) * KMAX;
        if (lid % (2u * half) == half) {
            for (var j = 0u; j < k; j++) {
                exchange[at + j] = mine[j];
            }
        }
        workgroupBarrier();
        if (lid % (2u * half) == 0u) {
            var out: array<f32, KMAX>;
            var a = 0u;
            var b = 0u;
            // a + b = j < k, so neither list is read past its k-th entry.
            for (var j = 0u; j < k; j++) {
                let x = mine[a];
                let y = exchange[at + b];
                if (x <= y) {
                    out[j] = x;
                    a += 1u;
                } else {
                    out[j] = y;
                    b += 1u;
                }
            }
            mine = out;
        }
        workgroupBarrier();
    }
    return mine;
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
    let b = block_range(params.n, wid.x, nwg.x, WG);
    var best = empty_list();
    var acc = 0.0;
    for (var i = b.x + lid.x; i < b.y; i += WG) {
        let r = pred[i] - targ[i];
        let v = smooth_l1(r, beta);
        grad[i] = v.y * params.grad_scale;
        if (PER_ELEMENT) {
            loss[i] = v.x;
        } else {
            acc += v.x;
        }
        let a = abs(r);
        if (a < best[KMAX - 1u]) {
            insert_smallest(&best, a);
        }
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
            let a = partials[params.num_partials + slot * k + j];
            if (a < best[KMAX - 1u]) {
                insert_smallest(&best, a);
            }
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
