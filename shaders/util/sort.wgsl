// Segmented key-value bitonic sort: `keys` (f32) in decreasing order, ties by increasing `vals`
// (u32), within each segment of `len` elements, a power of two; segments are laid end to end.
// A key that is NaN sorts after every number.
//
// The network for a segment of length P: for k = 2, 4, ..., P and j = k/2, ..., 1, element i
// compares with i ^ j and the pair is put in order, decreasing where i & k == 0 and increasing
// elsewhere. `global_steps` runs LEVELS consecutive steps j, j/2, ... of one k over every
// element, each invocation holding the 2^LEVELS elements those steps connect in registers (one
// pass over memory for up to four steps); `local_steps` runs every j < BLOCK of one k (and, with
// k = 0, the whole network up to k = BLOCK) inside workgroup memory, a block of BLOCK elements
// per workgroup.

struct Params {
    total: u32,   // elements over all segments (a multiple of BLOCK)
    k: u32,
    j: u32,
    len: u32,     // segment length, a power of two
}

@group(0) @binding(0) var<storage, read_write> keys: array<f32>;
@group(0) @binding(1) var<storage, read_write> vals: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

const BLOCK: u32 = 512u;

var<workgroup> block_keys: array<f32, 512>;
var<workgroup> block_vals: array<u32, 512>;

// Whether (ka, va) goes before (kb, vb): larger keys first, NaN last, then smaller values.
fn before(ka: f32, va: u32, kb: f32, vb: u32) -> bool {
    let na = is_nan(ka);
    let nb = is_nan(kb);
    if (na != nb) {
        return nb;
    }
    if (!na && ka != kb) {
        return ka > kb;
    }
    return va < vb;
}

// The direction of element i at stage k: by its index within its segment, so that the last
// stage (k = len) sorts every segment in decreasing order.
fn decreasing(i: u32, k: u32) -> bool {
    return (i & (params.len - 1u) & k) == 0u;
}

// The global index handled by invocation `gid` in a 2-D dispatch of 65,535-wide rows.
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Steps of one pass in `global_steps` (1 to 4).
override LEVELS: u32 = 1u;
const MAX_SPAN: u32 = 16u;

@compute @workgroup_size(256)
fn global_steps(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = flat(gid, nwg);
    let span = 1u << LEVELS;
    if (t >= params.total >> LEVELS) {
        return;
    }
    // The elements i0 + m low, m < span, with low the smallest stride of the pass: the bits of
    // m are those the steps j ... low flip, and k > j leaves one direction for all of them.
    let low = params.j >> (LEVELS - 1u);
    let i0 = (t / low) * low * span + t % low;
    var ks: array<f32, MAX_SPAN>;
    var vs: array<u32, MAX_SPAN>;
    for (var m = 0u; m < span; m++) {
        ks[m] = keys[i0 + m * low];
        vs[m] = vals[i0 + m * low];
    }
    let dec = decreasing(i0, params.k);
    for (var h = span >> 1u; h > 0u; h >>= 1u) {
        for (var m = 0u; m < span; m++) {
            if ((m & h) != 0u) {
                continue;
            }
            let ka = ks[m];
            let kb = ks[m + h];
            let va = vs[m];
            let vb = vs[m + h];
            if (before(kb, vb, ka, va) == dec) {
                ks[m] = kb;
                ks[m + h] = ka;
                vs[m] = vb;
                vs[m + h] = va;
            }
        }
    }
    for (var m = 0u; m < span; m++) {
        keys[i0 + m * low] = ks[m];
        vals[i0 + m * low] = vs[m];
    }
}

fn exchange(a: u32, b: u32, decreasing: bool) {
    let ka = block_keys[a];
    let kb = block_keys[b];
    let va = block_vals[a];
    let vb = block_vals[b];
    if (before(kb, vb, ka, va) == decreasing) {
        block_keys[a] = kb;
        block_keys[b] = ka;
        block_vals[a] = vb;
        block_vals[b] = va;
    }
}

@compute @workgroup_size(256)
fn local_steps(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = (wid.x + wid.y * nwg.x) * BLOCK;
    if (base >= params.total) {
        return;
    }
    for (var h = 0u; h < 2u; h++) {
        let t = lid.x + h * 256u;
        block_keys[t] = keys[base + t];
        block_vals[t] = vals[base + t];
    }
    workgroupBarrier();
    // k = 0: the whole network up to BLOCK (or the segment, if shorter); otherwise only the
    // steps j < BLOCK of that k.
    var k_first = params.k;
    var k_last = params.k;
    if (params.k == 0u) {
        k_first = 2u;
        k_last = min(BLOCK, params.len);
    }
    for (var k = k_first; k <= k_last; k <<= 1u) {
        var j = min(k, BLOCK) >> 1u;
        for (; j > 0u; j >>= 1u) {
            // Invocation t owns the pair (a, a + j) with a's bit j clear.
            let a = 2u * j * (lid.x / j) + lid.x % j;
            exchange(a, a + j, decreasing(base + a, k));
            workgroupBarrier();
        }
    }
    for (var h = 0u; h < 2u; h++) {
        let t = lid.x + h * 256u;
        keys[base + t] = block_keys[t];
        vals[base + t] = block_vals[t];
    }
}
