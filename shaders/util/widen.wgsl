// Widens 16-bit values (`util/half.wgsl`, two a word) into an f32 array, for the losses whose
// kernels read f32 only.

@group(0) @binding(0) var<storage, read> packed: array<u32>;
@group(0) @binding(1) var<storage, read_write> wide: array<f32>;
// x: the number of values.
@group(0) @binding(2) var<uniform> count: vec4<u32>;

@compute @workgroup_size(256)
fn widen(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = count.x;
    let b = lane_walk(block_range((n + 1u) / 2u, wid.x, nwg.x, WG), lid.x);
    for (var w = b.x; w < b.y; w += LANES) {
        let v = unpack_pair(packed[w]);
        wide[2u * w] = v.x;
        if (2u * w + 1u < n) {
            wide[2u * w + 1u] = v.y;
        }
    }
}
