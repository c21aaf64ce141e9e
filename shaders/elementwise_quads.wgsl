// The walk of the four-elements-per-step widths (`elementwise_vec4.wgsl`,
// `elementwise_half4.wgsl`), through their `steps`, `step_inputs` and `store_grads`.

// Loss and derivative of the four elements of quad q, the first at (row, col) `rc`; `one` is
// row_col(1).
fn loss_quad(q: u32, rc: vec2<u32>, one: vec2<u32>) -> mat2x4<f32> {
    let pt = step_inputs(q);
    let p = pt[0];
    let t = pt[1];
    let i = params.elem_base + 4u * q;
    let rc1 = advance(rc, one);
    let rc2 = advance(rc1, one);
    let rc3 = advance(rc2, one);
    at_elem(rc);
    let v0 = loss_elem(p.x, t.x, i);
    at_elem(rc1);
    let v1 = loss_elem(p.y, t.y, i + 1u);
    at_elem(rc2);
    let v2 = loss_elem(p.z, t.z, i + 2u);
    at_elem(rc3);
    let v3 = loss_elem(p.w, t.w, i + 3u);
    return mat2x4<f32>(vec4<f32>(v0.x, v1.x, v2.x, v3.x), vec4<f32>(v0.y, v1.y, v2.y, v3.y));
}

// Walks this invocation's quads of its workgroup's block through `loss_elem`: writes each
// gradient and each loss (PER_ELEMENT), and returns the sum of the losses otherwise.
fn walk(lid: u32, wid: u32, nwg: u32) -> f32 {
    let b = lane_walk(block_range(steps(), wid, nwg, WG), lid);
    var rc = row_col(params.elem_base + 4u * b.x);
    let one = row_col(1u);
    let step = row_col(4u * LANES);
    var acc = vec4<f32>(0.0);
    for (var q = b.x; q < b.y; q += LANES) {
        let v = loss_quad(q, rc, one);
        rc = advance(rc, step);
        store_grads(q, v[1] * params.grad_scale);
        if (PER_ELEMENT) {
            loss[4u * q] = v[0].x;
            loss[4u * q + 1u] = v[0].y;
            loss[4u * q + 2u] = v[0].z;
            loss[4u * q + 3u] = v[0].w;
        } else {
            acc += v[0];
        }
    }
    return (acc.x + acc.y) + (acc.z + acc.w);
}
