// self_adjusting_smooth_l1 (RetinaMask): smooth L1 whose beta per coordinate c (last dimension,
// D = params.coords) is clamp(mu_c - var_c, 1e-3, beta_max), with mu, var running mean and
// unbiased variance of |r| (momentum params.p.y), updated with this batch before the loss is
// taken, and kept on the GPU.
//
// state: [0, D) running mean, [D, 2D) running variance, [2D, 3D) beta.
// Passes: `coord_stats` (per-workgroup sums of |r| - mu and its square per coordinate, shifted by
// the running mean for accuracy), `coord_update` (one workgroup), then `coord_fused` (the driver's
// `fused` with one beta per invocation) and the driver's `reduce`. The update is skipped when any
// variance is NaN (one row, or NaN input), as the anchor does. params.p = (beta_max, momentum, -,
// -).

fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let d = params.coords;
    return smooth_l1(p - t, state[2u * d + i % d]);
}

var<workgroup> sum_b: array<f32, 256>;
var<workgroup> skip: atomic<u32>;

// Per-coordinate passes walk their blocks in groups of a multiple of D neighbouring invocations
// (at least LANES where D allows), each group a run of its own with its invocations striding by
// the group size, so that invocation l always meets coordinate l % D.
fn coord_group() -> u32 {
    let d = params.coords;
    return max(d, LANES / d * d);
}

// Invocations that take part: the whole groups of a workgroup (a multiple of D).
fn coord_lanes() -> u32 {
    return WG / coord_group() * coord_group();
}

// Where invocation `lid` starts in its workgroup's block, where it stops, and its stride.
// Blocks are multiples of `coord_lanes()` long and segments start on a row, so every run starts
// on a row.
fn coord_walk(wid: u32, nwg: u32, lid: u32) -> vec3<u32> {
    let g = coord_group();
    let b = block_range(params.n, wid, nwg, coord_lanes());
    let run = block_range(b.y - b.x, lid / g, WG / g, g);
    return vec3<u32>(b.x + run.x + lid % g, b.x + run.y, g);
}

@compute @workgroup_size(256)
fn coord_stats(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let d = params.coords;
    let w = coord_walk(wid.x, nwg.x, lid.x);
    let shift = state[lid.x % d];
    var a = 0.0;
    var q = 0.0;
    for (var i = w.x; i < w.y; i += w.z) {
        let x = abs(pred[i] - targ[i]) - shift;
        a += x;
        q += x * x;
    }
    red[lid.x] = a;
    sum_b[lid.x] = q;
    workgroupBarrier();
    if (lid.x < d) {
        var sa = 0.0;
        var sq = 0.0;
        for (var m = lid.x; m < coord_lanes(); m += d) {
            sa += red[m];
            sq += sum_b[m];
        }
        let slot = (params.wg_base + wid.x) * d + lid.x;
        partials[2u * slot] = sa;
        partials[2u * slot + 1u] = sq;
    }
}

// The fused pass with this invocation's coordinate fixed: its beta is read once.
@compute @workgroup_size(256)
fn coord_fused(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let d = params.coords;
    let w = coord_walk(wid.x, nwg.x, lid.x);
    let beta = state[2u * d + lid.x % d];
    var acc = 0.0;
    for (var i = w.x; i < w.y; i += w.z) {
        let v = smooth_l1(pred[i] - targ[i], beta);
        grad[i] = v.y * params.grad_scale;
        if (PER_ELEMENT) {
            loss[i] = v.x;
        } else {
            acc += v.x;
        }
    }
    write_partial(lid.x, wid.x, acc);
}

@compute @workgroup_size(256)
fn coord_update(@builtin(local_invocation_id) lid: vec3<u32>) {
    let d = params.coords;
    let u = coord_lanes();
    let rows = f32(params.total / d);
    let momentum = params.p.y;
    if (lid.x == 0u) {
        atomicStore(&skip, select(0u, 1u, params.total / d < 2u));
    }
    // Invocation l sums the partials of coordinate l % D over every (u / D)-th slot.
    var sa = 0.0;
    var sq = 0.0;
    if (lid.x < u) {
        let c = lid.x % d;
        for (var w = lid.x / d; w < params.num_partials; w += u / d) {
            sa += partials[2u * (w * d + c)];
            sq += partials[2u * (w * d + c) + 1u];
        }
    }
    red[lid.x] = sa;
    sum_b[lid.x] = sq;
    workgroupBarrier();
    // D <= 256: invocation c owns coordinate c.
    let c = lid.x;
    var mean = 0.0;
    var vari = 0.0;
    if (c < d) {
        var ta = 0.0;
        var tq = 0.0;
        for (var m = c; m < u; m += d) {
            ta += red[m];
            tq += sum_b[m];
        }
        mean = state[c] + ta / rows;
        vari = (tq - ta * ta / rows) / (rows - 1.0);
        if (is_nan(vari)) {
            atomicStore(&skip, 1u);
        }
    }
    workgroupBarrier();
    if (c < d) {
        if (atomicLoad(&skip) == 0u) {
            state[c] = (1.0 - momentum) * state[c] + momentum * mean;
            state[d + c] = (1.0 - momentum) * state[d + c] + momentum * max(vari, 0.0);
        }
        state[2u * d + c] = clamp(state[c] - state[d + c], 1e-3, params.p.x);
    }
}
