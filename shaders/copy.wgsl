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
    let b = block_range(arrayLength(&dst), wid.x, nwg.x, 256u);
    for (var i = b.x + lid.x; i < b.y; i += 256u) {
        dst[i] = src[i];
    }
}
