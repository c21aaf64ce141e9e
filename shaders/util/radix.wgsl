// Segments longer than a block (composed after sort.wgsl): the radix sort's passes, each sorting
// by DIGIT_BITS bits of the rank from (keys, vals) into (keys_out, vals_out).
//
// A pass cuts every segment into tiles of RADIX_WG * RUN elements, invocation t of a tile
// owning RUN consecutive ones (RADIX_WG: the whole workgroup of 256 on a GPU, one SIMD group of
// 8 on a CPU adapter, where every barrier and every invocation that waits at one costs):
//   radix_count:   each tile's count of every digit, into hist laid out [segment][digit][tile];
//   scan_*:        an exclusive prefix sum of hist in that order, which makes each entry the
//                  position where its tile's elements of that digit start: the segment's start,
//                  plus the segment's elements of smaller digits, plus those of the same digit in
//                  earlier tiles (scan_reduce: sums of blocks of SCAN_BLOCK entries, after the
//                  L = 16 tiles entries; scan_top: their prefix; scan_down: the entries');
//   radix_scatter: each element to its tile's start for its digit plus the number of elements of
//                  that digit before it in the tile, which keeps every pass stable.

@group(0) @binding(0) var<storage, read_write> keys: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> vals: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> vals_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> hist: array<u32>;

const DIGIT_BITS: u32 = 4u;
const DIGITS: u32 = 16u;
// Invocations of a tile, a power of two from 8 to 256, and elements of each (a multiple of 4),
// set by the host.
override RADIX_WG: u32 = 256u;
override RUN: u32 = 16u;

fn digit(bits: u32) -> u32 {
    return (rank(bits) >> params.shift) & (DIGITS - 1u);
}

// Sixteen digit counts of at most 2^16 - 1, two 16-bit fields a word: digit d in word d / 2
// (lo holds words 0-3, hi words 4-7), bits 16 (d % 2) and up. Adding two adds every field.
struct Counts {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

fn add_counts(a: Counts, b: Counts) -> Counts {
    return Counts(a.lo + b.lo, a.hi + b.hi);
}

// A count of one for digit d.
fn one_of(d: u32) -> Counts {
    let unit = vec4<u32>(1u << (16u * (d & 1u)));
    let v = select(vec4<u32>(0u), unit, vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>((d >> 1u) & 3u));
    let high = d >= 8u;
    return Counts(select(v, vec4<u32>(0u), high), select(vec4<u32>(0u), v, high));
}

// The counts of the four keys of a quad.
fn quad_counts(k: vec4<u32>) -> Counts {
    let a = add_counts(one_of(digit(k.x)), one_of(digit(k.y)));
    return add_counts(a, add_counts(one_of(digit(k.z)), one_of(digit(k.w))));
}

// The count of digit d.
fn count_of(c: Counts, d: u32) -> u32 {
    let v = select(c.lo, c.hi, d >= 8u);
    let word = (d >> 1u) & 3u;
    let w = select(select(v.x, v.y, word == 1u), select(v.z, v.w, word == 3u), word >= 2u);
    return (w >> (16u * (d & 1u))) & 0xffffu;
}

var<workgroup> tile_lo: array<vec4<u32>, RADIX_WG>;
var<workgroup> tile_hi: array<vec4<u32>, RADIX_WG>;

// The sum of `c` over the tile's invocations up to and including `lid`, every digit at once
// (Hillis-Steele: log2 RADIX_WG steps). Call in uniform control flow.
fn tile_inclusive(lid: u32, c: Counts) -> Counts {
    var sum = c;
    for (var s = 1u; s < RADIX_WG; s <<= 1u) {
        tile_lo[lid] = sum.lo;
        tile_hi[lid] = sum.hi;
        workgroupBarrier();
        if (lid >= s) {
            sum = add_counts(sum, Counts(tile_lo[lid - s], tile_hi[lid - s]));
        }
        workgroupBarrier();
    }
    return sum;
}

// Where tile `tile`'s entry of digit 0 sits in hist; digit d's is params.tiles d further.
fn hist_base(tile: u32) -> u32 {
    return tile / params.tiles * DIGITS * params.tiles + tile % params.tiles;
}

// The first quad of invocation `lid`'s run in tile `tile`.
fn run_start(tile: u32, lid: u32) -> u32 {
    return (tile * RADIX_WG * RUN + lid * RUN) / 4u;
}

// The digit counts of the run from quad `start`.
fn run_counts(start: u32) -> Counts {
    var c = Counts(vec4<u32>(0u), vec4<u32>(0u));
    for (var m = 0u; m < RUN / 4u; m++) {
        c = add_counts(c, quad_counts(keys[start + m]));
    }
    return c;
}

@compute @workgroup_size(RADIX_WG)
fn radix_count(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = flat(wid, nwg);
    if (tile >= params.total / (RADIX_WG * RUN)) {
        return;
    }
    let start = run_start(tile, lid.x);
    let c = run_counts(start);
    let total = tile_inclusive(lid.x, c);
    if (lid.x == RADIX_WG - 1u) {
        let at = hist_base(tile);
        for (var d = 0u; d < DIGITS; d++) {
            hist[at + d * params.tiles] = count_of(total, d);
        }
    }
}

// Writes (key, val) after the `before` elements of its digit that precede it in the tile, whose
// entries of hist start at `at`; returns `before` counting it too.
fn scatter(key: u32, val: u32, at: u32, before: Counts) -> Counts {
    let d = digit(key);
    let to = hist[at + d * params.tiles] + count_of(before, d);
    keys_out[to] = key;
    vals_out[to] = val;
    return add_counts(before, one_of(d));
}

@compute @workgroup_size(RADIX_WG)
fn radix_scatter(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = flat(wid, nwg);
    if (tile >= params.total / (RADIX_WG * RUN)) {
        return;
    }
    let start = run_start(tile, lid.x);
    let c = run_counts(start);
    // The counts of the invocations before this one: inclusive less its own (no field borrows).
    let inclusive = tile_inclusive(lid.x, c);
    var before = Counts(inclusive.lo - c.lo, inclusive.hi - c.hi);
    let at = hist_base(tile);
    for (var m = 0u; m < RUN / 4u; m++) {
        let k = keys[start + m];
        let v = vals[start + m];
        before = scatter(k.x, v.x, at, before);
        before = scatter(k.y, v.y, at, before);
        before = scatter(k.z, v.z, at, before);
        before = scatter(k.w, v.w, at, before);
    }
}

// ---- The prefix sum of hist ----

// Entries of hist each scan invocation walks, and of a scan workgroup's block.
const SCAN_RUN: u32 = 64u;
const SCAN_BLOCK: u32 = 16384u;

var<workgroup> scan_sums: array<u32, 256>;

// The sum of `v` over the invocations before `lid`, and in scan_sums[255] (read after the call)
// the workgroup's total. Call in uniform control flow.
fn workgroup_exclusive(lid: u32, v: u32) -> u32 {
    var sum = v;
    for (var s = 1u; s < 256u; s <<= 1u) {
        scan_sums[lid] = sum;
        workgroupBarrier();
        if (lid >= s) {
            sum += scan_sums[lid - s];
        }
        workgroupBarrier();
    }
    scan_sums[lid] = sum;
    workgroupBarrier();
    return sum - v;
}

// Entries of hist: 16 per tile.
fn hist_len() -> u32 {
    return DIGITS * (params.total / params.len) * params.tiles;
}

// The entries [start, end) invocation `lid` of block b walks.
fn scan_run(b: u32, lid: u32, len: u32) -> vec2<u32> {
    let start = min(b * SCAN_BLOCK + lid * SCAN_RUN, len);
    return vec2<u32>(start, min(start + SCAN_RUN, len));
}

// The sum of hist over the entries [r.x, r.y).
fn hist_sum(r: vec2<u32>) -> u32 {
    var s = 0u;
    for (var i = r.x; i < r.y; i++) {
        s += hist[i];
    }
    return s;
}

// Replaces hist over the entries [r.x, r.y) with its exclusive prefix sum, from `first`.
fn hist_prefix(r: vec2<u32>, first: u32) {
    var at = first;
    for (var i = r.x; i < r.y; i++) {
        let v = hist[i];
        hist[i] = at;
        at += v;
    }
}

@compute @workgroup_size(256)
fn scan_reduce(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let len = hist_len();
    let r = scan_run(wid.x, lid.x, len);
    let s = hist_sum(r);
    workgroup_exclusive(lid.x, s);
    if (lid.x == 0u) {
        hist[len + wid.x] = scan_sums[255];
    }
}

// One workgroup: the blocks' sums into their exclusive prefix, in place.
@compute @workgroup_size(256)
fn scan_top(@builtin(local_invocation_id) lid: vec3<u32>) {
    let len = hist_len();
    let blocks = (len + SCAN_BLOCK - 1u) / SCAN_BLOCK;
    let per = (blocks + 255u) / 256u;
    let start = len + min(lid.x * per, blocks);
    let end = len + min(lid.x * per + per, blocks);
    let r = vec2<u32>(start, end);
    hist_prefix(r, workgroup_exclusive(lid.x, hist_sum(r)));
}

@compute @workgroup_size(256)
fn scan_down(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let len = hist_len();
    let r = scan_run(wid.x, lid.x, len);
    let s = hist_sum(r);
    hist_prefix(r, hist[len + wid.x] + workgroup_exclusive(lid.x, s));
}
