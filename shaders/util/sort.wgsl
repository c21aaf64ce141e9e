// Segmented key-value sort: `keys` (f32, bound as their bits) in decreasing order within each
// segment of `len` elements (a power of two), segments laid end to end, `vals` (u32) carried
// along. Stable: equal keys keep their input order; -0 equals +0, and NaN keys, all equal, sort
// after every number. Keys and values come back with their bits unchanged.
//
// Every comparison goes through `rank`, the key's place in that order as an unsigned integer.
//
// Segments of at most BLOCK elements: `local_sort`, a bitonic network in workgroup memory, one
// block of BLOCK elements per workgroup, ordered by (rank, position in the block).
//
// Longer segments: a least-significant-digit radix sort of the ranks, four bits a pass, from
// (keys, vals) into (keys_out, vals_out); the host swaps the two pairs between passes, and an
// even number of passes ends where it started (`radix.wgsl` describes a pass).

struct Params {
    total: u32, // elements over all segments (a multiple of BLOCK, and of the radix tile)
    len: u32,   // segment length, a power of two
    shift: u32, // lowest rank bit of this radix pass
    tiles: u32, // radix tiles per segment
}

@group(0) @binding(2) var<uniform> params: Params;

// Place of the key with these bits in the order, smaller first: decreasing numbers (-0 as +0),
// then NaN.
fn rank(bits: u32) -> u32 {
    // Increasing floats as increasing integers: positives above negatives, whose magnitudes
    // count down; -0 (0x80000000) takes +0's place.
    let up = select(bits | 0x80000000u, ~bits, bits > 0x80000000u);
    return select(~up, 0xffffffffu, (bits & 0x7fffffffu) > 0x7f800000u);
}

// The workgroup index in a 2-D dispatch of 65,535-wide rows.
fn flat(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
