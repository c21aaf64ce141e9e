// Class rows over 16-bit logits and gradient (`util/half.wgsl`), two per 32-bit word and step.
// Contiguous rows (no trailing dims) take the paths of class_rows.wgsl; rows with trailing dims
// of an even size take `fused_row_pairs`. Segments start on a word; a row of an odd class count
// that starts in a word's high half shares that word with the row before, and one that ends in
// a low half shares it with the row after (or with the padding past the last row). The sweeps
// step over the row's own words; its shared element (the first or the last, at most one per
// row) is read alone, and its gradient goes to the row's edge slot in `state` (`store_edge`):
// `shared_words` packs both halves of each shared word after `fused` or `fused_rows`, so that
// no two invocations write one word. Defines the element accessors, the two sweeps of the
// workgroup-per-row path, `shared_words` and `fused_row_pairs`.

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
// the gradient it just wrote; a word shared with another row goes through `store_edge`).
fn store_grad(i: u32, g: f32) {
    var v = unpack_pair(grad[i / 2u]);
    v[i % 2u] = g;
    grad[i / 2u] = pack_pair(v);
}

// The row's own words: (first word, how many), and its classes before the first of them
// (1 when the row starts in a high half, else 0).
struct Words {
    first: u32,
    count: u32,
    head: u32,
}

fn row_words(row: Row) -> Words {
    let head = row.base % 2u;
    return Words((row.base + head) / 2u, (params.classes - head) / 2u, head);
}

// Sweep 1 of `fused`: this invocation's share of the row's statistics, one accumulator per
// half, combined at the end; invocation 0 adds the shared element.
fn sweep_stats(row: Row, lid: u32) -> Acc {
    var a0 = acc_new();
    var a1 = acc_new();
    let rw = row_words(row);
    let ww = lane_walk(vec2<u32>(0u, rw.count), lid);
    for (var w = ww.x; w < ww.y; w += LANES) {
        let x = raw_pair(rw.first + w);
        let c = 2u * w + rw.head;
        let i = row.base + c;
        a0 = accumulate(a0, c, capped(x.x), i, row);
        a1 = accumulate(a1, c + 1u, capped(x.y), i + 1u, row);
    }
    let c = shared_class(row);
    if (lid == 0u && c < params.classes) {
        a0 = accumulate(a0, c, logit(row.base + c), row.base + c, row);
    }
    return combine(a0, a1);
}

// Sweep 2 of `fused`: this invocation's share of the row's gradient (zeros for an ignored row).
fn sweep_grad(row: Row, st: Stats, co: Coef, lid: u32) {
    let rw = row_words(row);
    let ww = lane_walk(vec2<u32>(0u, rw.count), lid);
    for (var w = ww.x; w < ww.y; w += LANES) {
        var g = vec2<f32>(0.0);
        if (!row.skip) {
            let x = raw_pair(rw.first + w);
            let c = 2u * w + rw.head;
            let i = row.base + c;
            g = vec2<f32>(
                class_gradient(c, capped(x.x), i, row, st, co),
                class_gradient(c + 1u, capped(x.y), i + 1u, row, st, co),
            );
        }
        grad[rw.first + w] = pack_pair(g);
    }
    let c = shared_class(row);
    if (lid == 0u && c < params.classes) {
        var g = 0.0;
        if (!row.skip) {
            let i = row.base + c;
            g = class_gradient(c, logit(i), i, row, st, co);
        }
        store_edge(row, g);
    }
}

// After `fused` or `fused_rows` over rows of an odd class count: each word shared by rows 2j
// (its low half, the row's last class) and 2j + 1 (its high half, the first class) takes both
// edge slots; after the last row of an odd count, the high half (padding) is kept. Writes
// nothing if a bad label was recorded.
@compute @workgroup_size(256)
fn shared_words(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let b = lane_walk(block_range((params.rows + 1u) / 2u, wid.x, nwg.x, WG), lid.x);
    for (var j = b.x; j < b.y; j += LANES) {
        let r = 2u * j;
        let w = (params.lead + (r + 1u) * params.classes - 1u) / 2u;
        var v = unpack_pair(grad[w]);
        v.x = state[EDGES + r];
        if (r + 1u < params.rows) {
            v.y = state[EDGES + r + 1u];
        }
        grad[w] = pack_pair(v);
    }
}

// The path for trailing dims (S even): one invocation per pair of rows (n, 2k) and (n, 2k + 1),
// whose logits of each class share one word and no other row's; both rows' statistics, then
// both gradients a word per class (no word is read back).
@compute @workgroup_size(256)
fn fused_row_pairs(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (bad_label_recorded(lid.x)) {
        return;
    }
    let scale = gradient_scale();
    // Words from one class to the next.
    let stride = params.inner / 2u;
    let b = lane_walk(block_range(params.rows / 2u, wid.x, nwg.x, WG), lid.x);
    var pos = walk2(b.x, stride);
    var total = 0.0;
    for (var p = b.x; p < b.y; p += LANES) {
        let s = 2u * pos.at.y;
        let r = pos.at.x * params.inner + s;
        let row0 = row_of(r, vec2<u32>(pos.at.x, s));
        let row1 = row_of(r + 1u, vec2<u32>(pos.at.x, s + 1u));
        pos = step2(pos);
        let w0 = row0.base / 2u;
        var acc0 = acc_new();
        var acc1 = acc_new();
        for (var c = 0u; c < params.classes; c++) {
            let x = raw_pair(w0 + c * stride);
            let i = row0.base + c * params.inner;
            acc0 = accumulate(acc0, c, capped(x.x), i, row0);
            acc1 = accumulate(acc1, c, capped(x.y), i + 1u, row1);
        }
        let st0 = finish(acc0);
        let st1 = finish(acc1);
        var co0 = Coef(0.0, 0.0, 0.0, 0.0);
        var co1 = co0;
        var l = vec2<f32>(0.0);
        if (!row0.skip) {
            co0 = coefficients(row0, st0, scale);
            l.x = row_loss(row0, st0);
        }
        if (!row1.skip) {
            co1 = coefficients(row1, st1, scale);
            l.y = row_loss(row1, st1);
        }
        for (var c = 0u; c < params.classes; c++) {
            let x = raw_pair(w0 + c * stride);
            let i = row0.base + c * params.inner;
            var g = vec2<f32>(0.0);
            if (!row0.skip) {
                g.x = class_gradient(c, capped(x.x), i, row0, st0, co0);
            }
            if (!row1.skip) {
                g.y = class_gradient(c, capped(x.y), i + 1u, row1, st1, co1);
            }
            grad[w0 + c * stride] = pack_pair(g);
        }
        if (params.per_row != 0u) {
            loss[params.row_lead + r] = l.x;
            loss[params.row_lead + r + 1u] = l.y;
        } else {
            total += l.x + l.y;
        }
    }
    store_total(lid.x, wid.x, total);
}
