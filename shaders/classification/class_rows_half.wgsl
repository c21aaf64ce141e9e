// Class rows over 16-bit logits and gradient (`util/half.wgsl`), two per 32-bit word and step.
// The host takes this width only for contiguous rows (no trailing dims) of an even number of
// classes, so that every row starts on a word and no word holds two rows: the invocation that
// writes one half of a word writes the other too. Defines the element accessors and the two
// sweeps of the workgroup-per-row path.

@group(0) @binding(0) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read_write> grad: array<u32>;

// Logits 2w and 2w + 1 as stored.
fn raw_pair(w: u32) -> vec2<f32> {
    if (IN_PLACE) {
        return unpack_pair(grad[w]);
    }
    return unpack_pair(logits[w]);
}

// Logit i as stored (before any soft cap).
fn raw_logit(i: u32) -> f32 {
    return raw_pair(i / 2u)[i % 2u];
}

// Stores gradient i into its half of the word, keeping the other half (only the invocation that
// owns the row writes it: in place, the other half still holds a logit it has yet to read, or
// the gradient it just wrote).
fn store_grad(i: u32, g: f32) {
    var v = unpack_pair(grad[i / 2u]);
    v[i % 2u] = g;
    grad[i / 2u] = pack_pair(v);
}

// Sweep 1 of `fused`: this invocation's share of the row's statistics, one accumulator per
// half, combined at the end.
fn sweep_stats(row: Row, lid: u32) -> Acc {
    var a0 = acc_new();
    var a1 = acc_new();
    let w0 = row.base / 2u;
    let ww = lane_walk(vec2<u32>(0u, params.classes / 2u), lid);
    for (var w = ww.x; w < ww.y; w += LANES) {
        let x = raw_pair(w0 + w);
        let c = 2u * w;
        let i = row.base + c;
        a0 = accumulate(a0, c, capped(x.x), i, row);
        a1 = accumulate(a1, c + 1u, capped(x.y), i + 1u, row);
    }
    return combine(a0, a1);
}

// Sweep 2 of `fused`: this invocation's share of the row's gradient (zeros for an ignored row).
fn sweep_grad(row: Row, st: Stats, co: Coef, lid: u32) {
    let w0 = row.base / 2u;
    let ww = lane_walk(vec2<u32>(0u, params.classes / 2u), lid);
    for (var w = ww.x; w < ww.y; w += LANES) {
        var g = vec2<f32>(0.0);
        if (!row.skip) {
            let x = raw_pair(w0 + w);
            let c = 2u * w;
            let i = row.base + c;
            g = vec2<f32>(
                class_gradient(c, capped(x.x), i, row, st, co),
                class_gradient(c + 1u, capped(x.y), i + 1u, row, st, co),
            );
        }
        grad[w0 + w] = pack_pair(g);
    }
}
