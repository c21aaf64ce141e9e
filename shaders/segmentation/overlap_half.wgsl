// Overlap losses over 16-bit logits and gradient (`util/half.wgsl`), two per 32-bit word.
// Segments start on a word (an even lead). The gradient pass writes whole words: two elements per step in
// binary and multilabel modes (the padding half past an odd last element kept), and in
// multiclass mode two pixels per step, (n, s) and (n, s + 1) for an even s (the host takes this
// width in multiclass mode only for an even S), whose logits of each class share one word and
// no other pixel's.

@group(0) @binding(0) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<u32>;

fn logit(i: u32) -> f32 {
    return unpack_pair(logits[i / 2u])[i % 2u];
}

// (n, c, s) one element past `ncs`.
fn next_elem(ncs: vec3<u32>) -> vec3<u32> {
    if (ncs.z + 1u < params.inner) {
        return vec3<u32>(ncs.x, ncs.y, ncs.z + 1u);
    }
    if (ncs.y + 1u < params.classes) {
        return vec3<u32>(ncs.x, ncs.y + 1u, 0u);
    }
    return vec3<u32>(ncs.x + 1u, 0u, 0u);
}

// Binary and multilabel modes: word w holds elements 2w and 2w + 1.
fn sigmoid_grads(lid: u32, wid: u32, nwg: u32) {
    let len = params.samples * params.classes * params.inner;
    let b = lane_walk(block_range((len + 1u) / 2u, wid, nwg, WG), lid);
    // (n, c, s) of element 2w, stepping 2 LANES elements.
    let cd = params.classes * params.inner;
    let step = 2u * LANES;
    var rows = Walk2(div_mod(2u * b.x, params.inner), div_mod(step, params.inner), params.inner);
    var planes = Walk2(div_mod(2u * b.x, cd), div_mod(step, cd), cd);
    let w_lead = params.lead / 2u;
    for (var w = b.x; w < b.y; w += LANES) {
        let ncs = at3(Walk3(rows, planes, params.classes));
        rows = step2(rows);
        planes = step2(planes);
        var g = vec2<f32>(sigmoid_grad(ncs.x, ncs.y, ncs.z), 0.0);
        if (2u * w + 1u < len) {
            let next = next_elem(ncs);
            g.y = sigmoid_grad(next.x, next.y, next.z);
        } else {
            // The padding half: kept as stored.
            g.y = unpack_pair(grad[w_lead + w]).y;
        }
        grad[w_lead + w] = pack_pair(g);
    }
}

// Multiclass mode: pixels r = 2q and 2q + 1, (n, 2k) and (n, 2k + 1) with (n, k) = (q / (S/2),
// q % (S/2)); a word per class holds both.
fn softmax_grads(lid: u32, wid: u32, nwg: u32) {
    let half_s = params.inner / 2u;
    let b = lane_walk(block_range(params.samples * half_s, wid, nwg, WG), lid);
    var pos = walk2(b.x, half_s);
    let none = Pixel(0, 0.0, 0u, 0.0, 0.0, 0.0);
    for (var q = b.x; q < b.y; q += LANES) {
        let n = pos.at.x;
        let s = 2u * pos.at.y;
        pos = step2(pos);
        let r = n * params.inner + s;
        // Word of class 0; classes are S / 2 words apart.
        let w0 = elem(n, 0u, s) / 2u;
        let y = vec2<i32>(label(r), label(r + 1u));
        let keep = vec2<bool>(!label_ignored(y.x), !label_ignored(y.y));
        var px0 = none;
        var px1 = none;
        if (keep.x) {
            px0 = pixel(r, n, y.x);
        }
        if (keep.y) {
            px1 = pixel(r + 1u, n, y.y);
        }
        for (var c = 0u; c < params.classes; c++) {
            let x = unpack_pair(logits[w0 + c * half_s]);
            if (keep.x) {
                px0.dot += pixel_dot(px0, c, x.x);
            }
            if (keep.y) {
                px1.dot += pixel_dot(px1, c, x.y);
            }
        }
        for (var c = 0u; c < params.classes; c++) {
            let x = unpack_pair(logits[w0 + c * half_s]);
            var g = vec2<f32>(0.0);
            if (keep.x) {
                g.x = pixel_grad(px0, c, x.x);
            }
            if (keep.y) {
                g.y = pixel_grad(px1, c, x.y);
            }
            grad[w0 + c * half_s] = pack_pair(g);
        }
    }
}
