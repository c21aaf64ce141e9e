// The gradient pass of the overlap losses into an f32 gradient array, one element (binary,
// multilabel) or one pixel (multiclass) per step, logits through the width's `logit`
// (`overlap_f32.wgsl`, `overlap_staged.wgsl`).

// The gradient pass in binary and multilabel modes: one element per step.
fn sigmoid_grads(lid: u32, wid: u32, nwg: u32) {
    let len = params.samples * params.classes * params.inner;
    let b = lane_walk(block_range(len, wid, nwg, WG), lid);
    // (n, c, s) of element i.
    var pos = walk3(b.x, params.classes, params.inner);
    for (var i = b.x; i < b.y; i += LANES) {
        let ncs = at3(pos);
        pos = step3(pos);
        grad[params.lead + i] = sigmoid_grad(ncs.x, ncs.y, ncs.z);
    }
}

// The gradient pass in multiclass mode: one pixel per step, the softmax's chain over its
// classes (zeros for an ignored pixel).
fn softmax_grads(lid: u32, wid: u32, nwg: u32) {
    let rows = params.samples * params.inner;
    let b = lane_walk(block_range(rows, wid, nwg, WG), lid);
    var pos = walk2(b.x, params.inner);
    for (var r = b.x; r < b.y; r += LANES) {
        let n = pos.at.x;
        let base = elem(n, 0u, pos.at.y);
        pos = step2(pos);
        let y = label(r);
        if (label_ignored(y)) {
            for (var c = 0u; c < params.classes; c++) {
                grad[base + c * params.inner] = 0.0;
            }
            continue;
        }
        var px = pixel(r, n, y);
        for (var c = 0u; c < params.classes; c++) {
            px.dot += pixel_dot(px, c, logit(base + c * params.inner));
        }
        for (var c = 0u; c < params.classes; c++) {
            let i = base + c * params.inner;
            grad[i] = pixel_grad(px, c, logit(i));
        }
    }
}
