// Plain copy, one element per step: a roofline of the benchmarks. Same block shape as the loss
// kernels.

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let b = lane_walk(block_range(arrayLength(&dst), wid.x, nwg.x, 256u), lid.x);
    for (var i = b.x; i < b.y; i += LANES) {
        dst[i] = src[i];
    }
}
