// Plain copy, four elements per step: a roofline of the benchmarks. Same block shape and 16-byte
// accesses as the loss kernels; the element count is a multiple of 4.

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

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
