// Segments of at most BLOCK elements (composed after sort.wgsl): a bitonic network in workgroup
// memory.

@group(0) @binding(0) var<storage, read_write> keys: array<u32>;
@group(0) @binding(1) var<storage, read_write> vals: array<u32>;

const BLOCK: u32 = 512u;

var<workgroup> block_keys: array<u32, 512>;
var<workgroup> block_vals: array<u32, 512>;
var<workgroup> block_rank: array<u32, 512>;
var<workgroup> block_at: array<u32, 512>;

// Puts the slots a < b in order (by rank, then position), forwards or backwards.
fn exchange(a: u32, b: u32, forwards: bool) {
    let ra = block_rank[a];
    let rb = block_rank[b];
    let pa = block_at[a];
    let pb = block_at[b];
    let b_first = rb < ra || (rb == ra && pb < pa);
    if (b_first == forwards) {
        block_rank[a] = rb;
        block_rank[b] = ra;
        block_at[a] = pb;
        block_at[b] = pa;
    }
}

// The network for a segment of length P: for k = 2, 4, ..., P and j = k/2, ..., 1, slot i
// compares with i ^ j, and the pair is put in order forwards where i & k == 0 (within the
// segment) and backwards elsewhere, so that the last stage orders every segment forwards.
// Invocations of a block: 256 on a GPU, one SIMD group of 8 on a CPU adapter; set by the host.
override SORT_WG: u32 = 256u;

@compute @workgroup_size(SORT_WG)
fn local_sort(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = flat(wid, nwg) * BLOCK;
    if (base >= params.total) {
        return;
    }
    for (var t = lid.x; t < BLOCK; t += SORT_WG) {
        let k = keys[base + t];
        block_keys[t] = k;
        block_vals[t] = vals[base + t];
        block_rank[t] = rank(k);
        block_at[t] = t;
    }
    workgroupBarrier();
    for (var k = 2u; k <= min(BLOCK, params.len); k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            // Pair i is (a, a + j) with a's bit j clear.
            for (var i = lid.x; i < BLOCK / 2u; i += SORT_WG) {
                let a = 2u * j * (i / j) + i % j;
                exchange(a, a + j, (a & (params.len - 1u) & k) == 0u);
            }
            workgroupBarrier();
        }
    }
    for (var t = lid.x; t < BLOCK; t += SORT_WG) {
        let src = block_at[t];
        keys[base + t] = block_keys[src];
        vals[base + t] = block_vals[src];
    }
}
