// The two sweeps of the workgroup-per-row path, one logit per step, for the widths whose
// gradient is an f32 array (`class_rows_f32.wgsl`, `class_rows_staged.wgsl`).

// Sweep 1 of `fused`: this invocation's share of the row's statistics.
fn sweep_stats(row: Row, lid: u32) -> Acc {
    var acc = acc_new();
    let cw = lane_walk(vec2<u32>(0u, params.classes), lid);
    for (var c = cw.x; c < cw.y; c += LANES) {
        let i = row.base + c * params.inner;
        acc = accumulate(acc, c, logit(i), i, row);
    }
    return acc;
}

// Sweep 2 of `fused`: this invocation's share of the row's gradient (zeros for an ignored row).
fn sweep_grad(row: Row, st: Stats, co: Coef, lid: u32) {
    let cw = lane_walk(vec2<u32>(0u, params.classes), lid);
    for (var c = cw.x; c < cw.y; c += LANES) {
        let i = row.base + c * params.inner;
        var g = 0.0;
        if (!row.skip) {
            g = class_gradient(c, logit(i), i, row, st, co);
        }
        grad[i] = g;
    }
}
