// ghm_c (mmdet GHMC, Li et al. 2019): binary cross-entropy on logits x, each element weighted by
// the inverse density of its gradient norm g = |sigmoid(x) - t| over `bins` equal bins of
// [0, 1] (the last edge 1 + 1e-6, as mmdet), counted over the valid elements of the batch:
//   w = tot / (n num_b)      (momentum 0; num_b the elements in g's bin, n the non-empty bins)
//   w = tot / (n acc_b),  acc_b = m acc_b + (1 - m) num_b for non-empty bins  (momentum m > 0)
// with tot = max(valid elements, 1). Loss w bce(x, t), gradient w (sigmoid(x) - t): w is a
// constant for the gradient. Under mean the sum is divided by tot + 1.1920929e-7 (mmdet's
// avg_factor plus f32 epsilon), folded into w here, so the driver runs with sum scales.
// Elements whose mask is not > 0, and NaN g, get weight 0 (a NaN x still makes its loss NaN).
//
// params.k = bins (<= 255), params.p = (momentum, mean ? 1 : 0, -, -); MASKED: a mask is bound
// (without one nothing is read: a lookup per element costs on a CPU adapter even behind a uniform
// branch).
// state: [0, bins) acc (kept across calls), [bins, 2 bins) the weights of this call.
// Passes: `hist_pass` (per-workgroup counts of each bin and of valid elements, into partials),
// `hist_update` (one workgroup: totals, EMA, weights), then the driver's `fused` and `reduce`.

@group(0) @binding(7) var<storage, read> mask: array<f32>;

override MASKED: bool = false;

var<workgroup> counts: array<atomic<u32>, 256>;

// Whether element j of this segment takes part.
fn is_valid(j: u32) -> bool {
    return !MASKED || mask[j] > 0.0;
}

// The bin of g = |sigmoid(x) - t|, or `bins` when g is in none (NaN, or beyond the last edge).
fn bin_of(g: f32) -> u32 {
    let bins = params.k;
    let fb = f32(bins);
    if (!(g < 1.000001)) {
        return bins;
    }
    // Edges are k / bins: the product's rounding can land one bin off, which the comparison
    // with the edges themselves corrects.
    var b = min(u32(g * fb), bins - 1u);
    if (b > 0u && g < f32(b) / fb) {
        b -= 1u;
    } else if (b + 1u < bins && g >= f32(b + 1u) / fb) {
        b += 1u;
    }
    return b;
}

fn loss_elem(x: f32, t: f32, i: u32) -> vec2<f32> {
    let bins = params.k;
    // bce and d = sigmoid(x) - t from one exponential.
    let v = bce_logit(x, t, 1.0, exp(-abs(x)));
    let d = v.y;
    var w = 0.0;
    if (is_valid(i - params.elem_base)) {
        let b = bin_of(abs(d));
        if (b < bins) {
            w = state[bins + b];
        }
    }
    return w * v;
}

@compute @workgroup_size(256)
fn hist_pass(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    let bins = params.k;
    atomicStore(&counts[lid.x], 0u);
    workgroupBarrier();
    // The driver's steps (one, two or four elements each, whichever width this kernel is).
    let b = lane_walk(block_range(steps(), wid.x, nwg.x, WG), lid.x);
    var valid = 0u;
    for (var s = b.x; s < b.y; s += LANES) {
        let pt = step_inputs(s);
        for (var j = 0u; j < STEP; j++) {
            // (Past the segment: the padding half of 16-bit inputs.)
            if (s * STEP + j >= params.n || !is_valid(s * STEP + j)) {
                continue;
            }
            valid += 1u;
            let x = pt[0][j];
            let k = bin_of(abs(bce_logit(x, pt[1][j], 1.0, exp(-abs(x))).y));
            if (k < bins) {
                atomicAdd(&counts[k], 1u);
            }
        }
    }
    // Slot `bins` counts the valid elements. A workgroup walks at most MAX_ITERATIONS * 256
    // elements, so its counts are exact in f32.
    atomicAdd(&counts[bins], valid);
    workgroupBarrier();
    if (lid.x <= bins) {
        partials[(params.wg_base + wid.x) * (bins + 1u) + lid.x] = f32(atomicLoad(&counts[lid.x]));
    }
}

@compute @workgroup_size(256)
fn hist_update(@builtin(local_invocation_id) lid: vec3<u32>) {
    params = uniforms;
    let bins = params.k;
    // The totals of slot k over every workgroup, exactly, in u32: invocation l sums slot
    // l % (bins + 1) over every (WG / (bins + 1))-th workgroup, then invocation k <= bins those
    // sums of slot k (for 10 bins and 4,096 workgroups, 178 + 23 reads each, not 4,096).
    let slots = bins + 1u;
    let lanes = WG / slots;
    var part = 0u;
    if (lid.x < lanes * slots) {
        for (var w = lid.x / slots; w < params.num_partials; w += lanes) {
            part += u32(partials[w * slots + lid.x % slots]);
        }
    }
    atomicStore(&counts[lid.x], part);
    workgroupBarrier();
    var total = 0u;
    if (lid.x < slots) {
        for (var m = 0u; m < lanes; m++) {
            total += atomicLoad(&counts[lid.x + slots * m]);
        }
    }
    workgroupBarrier();
    atomicStore(&counts[lid.x], total);
    workgroupBarrier();
    if (lid.x == 0u) {
        let tot = max(f32(atomicLoad(&counts[bins])), 1.0);
        var nonempty = 0u;
        for (var k = 0u; k < bins; k++) {
            nonempty += select(0u, 1u, atomicLoad(&counts[k]) > 0u);
        }
        let momentum = params.p.x;
        var norm = f32(max(nonempty, 1u));
        if (params.p.y != 0.0) {
            norm *= tot + 1.1920929e-7;
        }
        for (var k = 0u; k < bins; k++) {
            let num = atomicLoad(&counts[k]);
            var w = 0.0;
            if (num > 0u) {
                var density = f32(num);
                if (momentum > 0.0) {
                    state[k] = momentum * state[k] + (1.0 - momentum) * f32(num);
                    density = state[k];
                }
                w = tot / density / norm;
            }
            state[bins + k] = w;
        }
    }
}
