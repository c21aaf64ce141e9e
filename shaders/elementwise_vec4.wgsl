// Element-wise driver, four elements per step: bindings 0-2 as vec4 arrays (16-byte loads and
// stores), the fused pass and the gradient pass of ROOT losses. The host gives these passes the
// multiple-of-four prefix of the input and runs the remaining 1-3 elements through
// `elementwise_f32.wgsl`. params.n counts elements (a multiple of 4 here).

@group(0) @binding(0) var<storage, read> pred: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> targ: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec4<f32>>;

// Loss and derivative of the four elements of quad q.
fn loss_quad(q: u32) -> mat2x4<f32> {
    let p = pred[q];
    let t = targ[q];
    let i = params.elem_base + 4u * q;
    let v0 = loss_elem(p.x, t.x, i);
    let v1 = loss_elem(p.y, t.y, i + 1u);
    let v2 = loss_elem(p.z, t.z, i + 2u);
    let v3 = loss_elem(p.w, t.w, i + 3u);
    return mat2x4<f32>(vec4<f32>(v0.x, v1.x, v2.x, v3.x), vec4<f32>(v0.y, v1.y, v2.y, v3.y));
}

@compute @workgroup_size(256)
fn fused(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let b = block_range(params.n / 4u, wid.x, nwg.x, WG);
    var acc = vec4<f32>(0.0);
    for (var q = b.x + lid.x; q < b.y; q += WG) {
        let v = loss_quad(q);
        if (WRITE_GRAD) {
            grad[q] = v[1] * params.grad_scale;
        }
        if (PER_ELEMENT) {
            loss[4u * q] = v[0].x;
            loss[4u * q + 1u] = v[0].y;
            loss[4u * q + 2u] = v[0].z;
            loss[4u * q + 3u] = v[0].w;
        } else {
            acc += v[0];
        }
    }
    if (!PER_ELEMENT) {
        let s = workgroup_sum(lid.x, (acc.x + acc.y) + (acc.z + acc.w));
        if (lid.x == 0u) {
            partials[params.wg_base + wid.x] = s;
        }
    }
}

// Second pass of ROOT losses: the gradient, once the total is known.
@compute @workgroup_size(256)
fn apply(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let b = block_range(params.n / 4u, wid.x, nwg.x, WG);
    let coef = state[0];
    for (var q = b.x + lid.x; q < b.y; q += WG) {
        grad[q] = loss_quad(q)[1] * coef;
    }
}
