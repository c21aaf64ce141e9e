// dynamic_smooth_l1 (Dynamic R-CNN): smooth L1 with beta = state[0]. Each call also records the
// k-th smallest |r| into a history on the GPU; every `iters` calls beta becomes
// min(initial_beta, median(history)) and the history restarts. No host round-trip.
//
// state: [0] beta, [1] calls recorded so far, [2 .. 2 + iters] history, then the filter bound τ
// (the last slot). params.p.x = initial_beta.
// `fused_kth` is the fused pass: loss, gradient, partial sums and each workgroup's k smallest
// |r| among those ≤ τ (after the sums, in partials[num_partials + slot * k ..]; on a CPU adapter,
// without a barrier, each invocation's sum and its KEPT candidates: `fused_lists`), and each
// slot's floor (`floors_at`); `reduce_kth` finishes the loss and selects the k-th smallest
// candidate. τ is four times the previous call's k-th smallest (BIG at first): the k smallest of
// the call are all ≤ τ as soon as k values are. An invocation keeps its two smallest values ≤ τ
// (a list of k in the loop halved its speed); one that met more leaves its second smallest as
// its floor, below which it dropped nothing. Every value under the k-th smallest candidate is
// then a candidate as long as that candidate is ≤ τ and ≤ every floor, and the selection is
// exact: ties included (many zero residuals, or 16-bit inputs' coarse steps, leave floors equal
// to the k-th smallest). Otherwise (fewer than k values ≤ τ, every value at the first call, a
// floor under the candidate) `kth_fallback` / `reduce_fallback` select again over every value.
// The host dispatches those two indirectly from `fallback_dispatch`, where `reduce_kth` sets
// their workgroup counts: zero unless the selection falls back (a CPU adapter pays for every
// launched workgroup of a kernel with barriers even when it returns at once, about 0.8 ms a call
// on lavapipe).
// Both widths of the driver run these passes: `fused_kth` walks through the driver's `walk`,
// whose `loss_elem` also keeps the candidates.

// This call's beta and τ, and the two smallest residuals ≤ τ this invocation met and how many
// there were, for `loss_elem` (set by `fused_kth`).
var<private> beta: f32;
var<private> tau: f32;
var<private> m1: f32;
var<private> m2: f32;
var<private> count: u32;

fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    // Rarely true once τ is set (NaN is never ≤ τ); without a branch, which lavapipe runs faster.
    let a = abs(r);
    let keep = a <= tau;
    count += u32(keep);
    let kept = select(BIG, a, keep);
    m2 = min(m2, max(m1, kept));
    m1 = min(m1, kept);
    return smooth_l1(r, beta);
}

// The indirect dispatches of the fallback passes, four words per record: (x, 1, 1, count), x
// the workgroup count `reduce_kth` sets (count when the flag is up, else 0). One record per
// segment for `kth_fallback`, then one for `reduce_fallback` (count 1). Bound for `reduce_kth`
// only (the fallback passes read it as their dispatch arguments).
@group(1) @binding(0) var<storage, read_write> fallback_dispatch: array<u32>;

const KMAX: u32 = 16u;
const HMAX: u32 = 1024u;

// Lists sent in a merge stage: at most WG / 2 senders of KMAX values (8 KiB).
var<workgroup> exchange: array<f32, 2048>;
// Candidates appended to `exchange` by `fused_kth` (at most KEPT per invocation).
var<workgroup> candidates: atomic<u32>;
// The workgroup's lowest floor, as bits (non-negative floats order as their bits).
var<workgroup> lowest: atomic<u32>;
var<workgroup> history: array<f32, HMAX>;
var<workgroup> flag: u32;
// Whether the selection falls back to every value (reduce_kth).
var<workgroup> gate: u32;

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

// Residuals ≤ τ an invocation keeps in its fused pass; past that many it asks for the fallback.
const KEPT: u32 = 2u;

@compute @workgroup_size(256)
fn fused_kth(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    let k = params.k;
    beta = state[0];
    tau = state[tau_at()];
    m1 = BIG;
    m2 = BIG;
    count = 0u;
    if (lid.x == 0u) {
        atomicStore(&candidates, 0u);
        atomicStore(&lowest, bitcast<u32>(BIG));
    }
    let sum = walk(lid.x, wid.x, nwg.x);
    // Every value ≤ τ this invocation dropped is ≥ m2.
    let floor = select(BIG, m2, count > KEPT);
    if (LANES < WG) {
        // A CPU adapter: slots of this invocation's own (see `partial_slots`).
        let slot = invocation_slot(lid.x, wid.x);
        partials[slot] = sum;
        let at = fused_lists().z + KEPT * slot;
        partials[at] = m1;
        partials[at + 1u] = m2;
        partials[floors_at() + slot] = floor;
        return;
    }
    let s = workgroup_sum(lid.x, sum);
    // Only the invocations that dropped a value (rare once τ is set) touch `lowest`: atomics of
    // a whole workgroup on one address run one after another.
    if (floor < BIG) {
        atomicMin(&lowest, bitcast<u32>(floor));
    }
    // Candidates are few once τ is set: each invocation appends its own (in any order), and
    // invocation 0 keeps the k smallest, a set whatever the order (one barrier; a merge tree
    // takes two per stage).
    if (m1 < BIG) {
        exchange[atomicAdd(&candidates, 1u)] = m1;
    }
    if (m2 < BIG) {
        exchange[atomicAdd(&candidates, 1u)] = m2;
    }
    workgroupBarrier();
    if (lid.x == 0u) {
        var best = empty_list();
        let n = atomicLoad(&candidates);
        for (var j = 0u; j < n; j++) {
            let a = exchange[j];
            if (a < best[KMAX - 1u]) {
                insert_smallest(&best, a);
            }
        }
        let slot = params.wg_base + wid.x;
        partials[slot] = s;
        for (var j = 0u; j < k; j++) {
            partials[params.num_partials + slot * k + j] = best[j];
        }
        partials[floors_at() + slot] = bitcast<f32>(atomicLoad(&lowest));
    }
}

// Position of τ in the state (its last slot).
fn tau_at() -> u32 {
    return 2u + params.iters;
}

// The candidate lists `fused_kth` leaves: (how many, entries each, offset of the first in
// `partials`), one of k per workgroup, or on a CPU adapter one of KEPT per invocation.
fn fused_lists() -> vec3<u32> {
    let slots = params.num_partials * partial_slots();
    return vec3<u32>(slots, select(params.k, KEPT, LANES < WG), slots);
}

// Offset of the slots' floors in `partials`, after the candidate lists.
fn floors_at() -> u32 {
    let lists = fused_lists();
    return lists.z + lists.x * lists.y;
}

// The k smallest of the ascending `lists` (as `fused_lists`) in the partial slots. A list is
// left at its first entry not below the running list's last (the rest are no smaller): most
// lists are empty (BIG) once τ is set, and one workgroup reads them all (an H100 at 16M: 131.0
// µs a call with every entry read, 128.7 µs so).
fn merge_partials(lid: u32, k: u32, lists: vec3<u32>) -> array<f32, KMAX> {
    var best = empty_list();
    for (var slot = lid; slot < lists.x; slot += WG) {
        for (var j = 0u; j < lists.y; j++) {
            let a = partials[lists.z + slot * lists.y + j];
            if (!(a < best[KMAX - 1u])) {
                break;
            }
            insert_smallest(&best, a);
        }
    }
    return merge_smallest(lid, best, k);
}

// Records the call's k-th smallest (valid in invocation 0), sets τ for the next call and, every
// `iters` records, beta. Call in uniform control flow.
fn record_kth(lid: u32, kth: f32) {
    if (lid == 0u) {
        let count = u32(state[1]);
        state[2u + count] = kth;
        state[tau_at()] = select(BIG, 4.0 * kth, 4.0 * kth < BIG);
        flag = count + 1u;
    }
    let recorded = workgroupUniformLoad(&flag);
    if (recorded < params.iters) {
        if (lid == 0u) {
            state[1] = f32(recorded);
        }
        return;
    }
    // Median of the history: each value's rank (ties by position) places it in sorted order.
    let m = params.iters;
    for (var j = lid; j < m; j += WG) {
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
    if (lid == 0u) {
        let median = 0.5 * (history[(m - 1u) / 2u] + history[m / 2u]);
        // min(initial_beta, median); a NaN median leaves initial_beta, as Python's min does.
        state[0] = select(params.p.x, median, median < params.p.x);
        state[1] = 0.0;
    }
}

@compute @workgroup_size(256)
fn reduce_kth(@builtin(local_invocation_id) lid: vec3<u32>) {
    params = uniforms;
    let k = params.k;
    if (lid.x == 0u) {
        atomicStore(&lowest, bitcast<u32>(BIG));
    }
    var acc = 0.0;
    var floor = BIG;
    let slots = params.num_partials * partial_slots();
    for (var slot = lid.x; slot < slots; slot += WG) {
        acc += partials[slot];
        floor = min(floor, partials[floors_at() + slot]);
    }
    let total = workgroup_sum(lid.x, acc);
    atomicMin(&lowest, bitcast<u32>(floor));
    let merged = merge_partials(lid.x, k, fused_lists());
    if (lid.x == 0u) {
        if (!PER_ELEMENT) {
            loss[0] = total * params.loss_scale;
        }
        // k' = min(k, n), 1-based; BIG when fewer than k' values were ≤ τ (or all are NaN).
        let kth = merged[min(k, params.total) - 1u];
        let short = kth > bitcast<f32>(atomicLoad(&lowest)) || (kth == BIG && state[tau_at()] < BIG);
        gate = u32(short);
        for (var j = 0u; j < arrayLength(&fallback_dispatch) / 4u; j++) {
            fallback_dispatch[4u * j] = select(0u, fallback_dispatch[4u * j + 3u], short);
        }
    }
    if (workgroupUniformLoad(&gate) == 0u) {
        record_kth(lid.x, merged[min(k, params.total) - 1u]);
    }
}

// Each workgroup's k smallest |r| over all its values (dispatched when the flag is up).
@compute @workgroup_size(256)
fn kth_fallback(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    let k = params.k;
    let b = lane_walk(block_range(params.n, wid.x, nwg.x, WG), lid.x);
    var best = empty_list();
    for (var i = b.x; i < b.y; i += LANES) {
        let pt = elem_inputs(i);
        let a = abs(pt.x - pt.y);
        if (a < best[KMAX - 1u]) {
            insert_smallest(&best, a);
        }
    }
    let merged = merge_smallest(lid.x, best, k);
    if (lid.x == 0u) {
        let slot = params.wg_base + wid.x;
        for (var j = 0u; j < k; j++) {
            partials[params.num_partials + slot * k + j] = merged[j];
        }
    }
}

// Dispatched when the flag is up.
@compute @workgroup_size(256)
fn reduce_fallback(@builtin(local_invocation_id) lid: vec3<u32>) {
    params = uniforms;
    // `kth_fallback`'s lists: k per workgroup.
    let lists = vec3<u32>(params.num_partials, params.k, params.num_partials);
    let merged = merge_partials(lid.x, params.k, lists);
    record_kth(lid.x, merged[min(params.k, params.total) - 1u]);
}
