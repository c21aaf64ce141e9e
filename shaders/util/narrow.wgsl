// Packs an f32 staging gradient into a 16-bit one, two values a word (`util/half.wgsl`): the
// last word of an odd count keeps its high half (padding past a view, or a value its owner
// wrote). Writes nothing when the status word reports a bad label, as the loss kernels.

@group(0) @binding(0) var<storage, read> staged: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read> status: array<u32>;
// x: the number of values; y: the values bound before the first in both arrays (even).
@group(0) @binding(3) var<uniform> count: vec4<u32>;

@compute @workgroup_size(256)
fn narrow(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (status[0] != 0u) {
        return;
    }
    let n = count.x;
    let lead = count.y;
    let b = lane_walk(block_range((n + 1u) / 2u, wid.x, nwg.x, WG), lid.x);
    for (var w = b.x; w < b.y; w += LANES) {
        let i = lead + 2u * w;
        var v = vec2<f32>(staged[i], 0.0);
        if (2u * w + 1u < n) {
            v.y = staged[i + 1u];
        } else {
            v.y = unpack_pair(packed[i / 2u]).y;
        }
        packed[i / 2u] = pack_pair(v);
    }
}
