// Element-wise driver, one element per step: bindings 0-2 as f32 arrays, the fused pass and the
// gradient pass of ROOT losses. Composed after `elementwise.wgsl`.

@group(0) @binding(0) var<storage, read> pred: array<f32>;
@group(0) @binding(1) var<storage, read> targ: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(256)
fn fused(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let b = block_range(params.n, wid.x, nwg.x, WG);
    var acc = 0.0;
    for (var i = b.x + lid.x; i < b.y; i += WG) {
        let v = loss_elem(pred[i], targ[i], params.elem_base + i);
        if (WRITE_GRAD) {
            grad[i] = v.y * params.grad_scale;
        }
        if (PER_ELEMENT) {
            loss[i] = v.x;
        } else {
            acc += v.x;
        }
    }
    if (!PER_ELEMENT) {
        let s = workgroup_sum(lid.x, acc);
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
    let b = block_range(params.n, wid.x, nwg.x, WG);
    let coef = state[0];
    for (var i = b.x + lid.x; i < b.y; i += WG) {
        grad[i] = loss_elem(pred[i], targ[i], params.elem_base + i).y * coef;
    }
}
