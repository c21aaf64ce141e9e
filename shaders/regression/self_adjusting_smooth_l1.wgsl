// self_adjusting_smooth_l1 (RetinaMask): smooth L1 whose beta per coordinate c (last dimension,
// D = params.coords) is clamp(mu_c - var_c, 1e-3, beta_max), with mu, var running mean and
// unbiased variance of |r| (momentum params.p.y), updated with this batch before the loss is
// taken, and kept on the GPU.
//
// state: [0, D) running mean, [D, 2D) running variance, [2D, 3D) beta.
// Passes: `coord_stats` (per-workgroup sums of |r| - mu and its square per coordinate, shifted by
// the running mean for accuracy), `coord_update` (one workgroup), then `coord_fused` (the driver's
// `fused` with fixed betas per invocation) and the driver's `reduce`; every width of the driver
// (`steps`, `step_inputs`, `store_grads`, STEP: 1, 4, and 2 for 16-bit inputs, whose odd
// segment ends in a padding half that these passes skip). The update is skipped when any
// variance is NaN (one row, or NaN input), as the anchor does. params.p = (beta_max, momentum, -,
// -).

fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let d = params.coords;
    return smooth_l1(p - t, state[2u * d + elem_col]);
}

var<workgroup> sum_b: array<f32, 256>;
var<workgroup> skip: atomic<u32>;
// Per-element-offset sums of `coord_stats`: |r| - mu and its square, at lid * STEP + k.
var<workgroup> flat_a: array<f32, 1024>;
var<workgroup> flat_q: array<f32, 1024>;

// Per-coordinate passes walk their blocks in groups of neighbouring invocations whose steps span
// a multiple of D elements (at least LANES invocations where D allows), each group a run of its
// own with its invocations striding by the group size: element k of every step of invocation l
// then sits at coordinate (l % G * STEP + k) % D, since every run starts on a row.
fn coord_group() -> u32 {
    let d = params.coords;
    // D / gcd(D, STEP), STEP being 1, 2 or 4.
    var unit = d;
    if (STEP == 4u) {
        unit = d / select(select(1u, 2u, d % 2u == 0u), 4u, d % 4u == 0u);
    } else if (STEP == 2u) {
        unit = d / select(1u, 2u, d % 2u == 0u);
    }
    return max(unit, LANES / unit * unit);
}

// Invocations that take part: the whole groups of a workgroup.
fn coord_lanes() -> u32 {
    return WG / coord_group() * coord_group();
}

// Where invocation `lid` starts in its workgroup's block of steps, where it stops, and its
// stride. Blocks are multiples of `coord_lanes()` steps and segments start on a row (the host
// ends the four-element prefix on one), so every run starts on a row.
fn coord_walk(wid: u32, nwg: u32, lid: u32) -> vec3<u32> {
    let g = coord_group();
    let w = group_walk(block_range(steps(), wid, nwg, coord_lanes()), lid, g);
    return vec3<u32>(w, g);
}

// The coordinates of the STEP elements of invocation `lid`'s steps (unused lanes repeat the
// first).
fn coords_of(lid: u32) -> vec4<u32> {
    let d = params.coords;
    let first = lid % coord_group() * STEP;
    let k = min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(STEP - 1u));
    return (vec4<u32>(first) + k) % vec4<u32>(d);
}

// A vec4 of state values at `at + coords`.
fn state_at(at: u32, c: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(state[at + c.x], state[at + c.y], state[at + c.z], state[at + c.w]);
}

@compute @workgroup_size(256)
fn coord_stats(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    let d = params.coords;
    let w = coord_walk(wid.x, nwg.x, lid.x);
    let shift = state_at(0u, coords_of(lid.x));
    var a = vec4<f32>(0.0);
    var q = vec4<f32>(0.0);
    for (var s = w.x; s < w.y; s += w.z) {
        let pt = step_inputs(s);
        var x = abs(pt[0] - pt[1]) - shift;
        if (STEP == 2u && 2u * s + 1u >= params.n) {
            // The padding half of 16-bit inputs.
            x.y = 0.0;
        }
        a += x;
        q += x * x;
    }
    for (var k = 0u; k < STEP; k++) {
        flat_a[lid.x * STEP + k] = a[k];
        flat_q[lid.x * STEP + k] = q[k];
    }
    workgroupBarrier();
    // Offset f of the flat sums sits at coordinate f % D, and each coordinate has E of them (the
    // walk's lanes span whole rows). In two stages of about sqrt(E) reads, not E by one
    // invocation per coordinate (1024 for D = 1, the tail of every workgroup): invocation
    // l = c + D b (b < B) sums offsets c + D (b + B m), then invocation c its B sums.
    let per = coord_lanes() * STEP / d;
    let blocks = clamp(u32(sqrt(f32(per))), 1u, WG / d);
    var sa = 0.0;
    var sq = 0.0;
    let c = lid.x % d;
    if (lid.x < d * blocks) {
        for (var m = lid.x / d; m < per; m += blocks) {
            sa += flat_a[c + d * m];
            sq += flat_q[c + d * m];
        }
    }
    workgroupBarrier();
    if (lid.x < d * blocks) {
        flat_a[lid.x] = sa;
        flat_q[lid.x] = sq;
    }
    workgroupBarrier();
    if (lid.x < d) {
        var ta = 0.0;
        var tq = 0.0;
        for (var b = 0u; b < blocks; b++) {
            ta += flat_a[lid.x + d * b];
            tq += flat_q[lid.x + d * b];
        }
        let slot = (params.wg_base + wid.x) * d + lid.x;
        partials[2u * slot] = ta;
        partials[2u * slot + 1u] = tq;
    }
}

// The fused pass with this invocation's coordinates fixed: their betas are read once.
@compute @workgroup_size(256)
fn coord_fused(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    let d = params.coords;
    let w = coord_walk(wid.x, nwg.x, lid.x);
    let beta = state_at(2u * d, coords_of(lid.x));
    let inv_beta = 1.0 / beta;
    var acc = vec4<f32>(0.0);
    for (var s = w.x; s < w.y; s += w.z) {
        let pt = step_inputs(s);
        let r = pt[0] - pt[1];
        // smooth_l1 of the prelude, four at once.
        let a = abs(r);
        let near = a < beta;
        let ri = r * inv_beta;
        let v = select(a - 0.5 * beta, 0.5 * r * ri, near);
        store_grads(s, select(sign(r), ri, near) * params.grad_scale);
        if (PER_ELEMENT) {
            for (var k = 0u; k < STEP; k++) {
                if (s * STEP + k < params.n) {
                    loss[s * STEP + k] = v[k];
                }
            }
        } else {
            acc += v;
        }
    }
    // (The components past STEP, and the padding half, saw r = 0: a loss of 0.)
    var total = acc.x;
    if (STEP == 2u) {
        total = acc.x + acc.y;
    } else if (STEP == 4u) {
        total = (acc.x + acc.y) + (acc.z + acc.w);
    }
    write_partial(lid.x, wid.x, total);
}

@compute @workgroup_size(256)
fn coord_update(@builtin(local_invocation_id) lid: vec3<u32>) {
    params = uniforms;
    let d = params.coords;
    let u = WG / d * d;
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
