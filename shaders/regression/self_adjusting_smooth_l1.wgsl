// self_adjusting_smooth_l1 (RetinaMask): smooth L1 whose beta per coordinate c (last dimension,
// D = params.coords) is clamp(mu_c - var_c, 1e-3, beta_max), with mu, var running mean and
// unbiased variance of |r| (momentum params.p.y), updated with this batch before the loss is
// taken, and kept on the GPU.
//
// state: [0, D) running mean, [D, 2D) running variance, [2D, 3D) beta.
// Passes: `coord_stats` (per-workgroup sums of |r| - mu and its square per coordinate, shifted by
// the running mean for accuracy), `coord_update` (one workgroup), then the driver's `fused` and
// `reduce` with the new beta. The update is skipped when any variance is NaN (one row, or NaN
// input), as the anchor does. params.p = (beta_max, momentum, -, -).

fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let d = params.coords;
    return smooth_l1(p - t, state[2u * d + i % d]);
}

var<workgroup> sum_b: array<f32, 256>;
var<workgroup> skip: atomic<u32>;

// Invocations that take part in per-coordinate work: the largest multiple of D in a workgroup,
// so that invocation l always meets coordinate l % D.
fn lanes() -> u32 {
    return WG / params.coords * params.coords;
}

@compute @workgroup_size(256)
fn coord_stats(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let d = params.coords;
    let u = lanes();
    // Blocks are multiples of u long and segments start on a row, so every block starts on a row.
    let b = block_range(params.n, wid.x, nwg.x, u);
    var a = 0.0;
    var q = 0.0;
    if (lid.x < u) {
        let shift = state[lid.x % d];
        for (var i = b.x + lid.x; i < b.y; i += u) {
            let x = abs(pred[i] - targ[i]) - shift;
            a += x;
            q += x * x;
        }
    }
    red[lid.x] = a;
    sum_b[lid.x] = q;
    workgroupBarrier();
    if (lid.x < d) {
        var sa = 0.0;
        var sq = 0.0;
        for (var m = lid.x; m < u; m += d) {
            sa += red[m];
            sq += sum_b[m];
        }
        let slot = (params.wg_base + wid.x) * d + lid.x;
        partials[2u * slot] = sa;
        partials[2u * slot + 1u] = sq;
    }
}

@compute @workgroup_size(256)
fn coord_update(@builtin(local_invocation_id) lid: vec3<u32>) {
    let d = params.coords;
    let u = lanes();
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
