// The two sweeps of the workgroup-per-row path for the four-per-step widths (`class_rows_vec4.wgsl`,
// `class_rows_half4.wgsl`), through their `raw_quad` and `store_quad`.

// Sweep 1 of `fused`: this invocation's share of the row's statistics, one accumulator per
// component (four independent chains of the online log-sum-exp), combined at the end.
fn sweep_stats(row: Row, lid: u32) -> Acc {
    var a0 = acc_new();
    var a1 = acc_new();
    var a2 = acc_new();
    var a3 = acc_new();
    let q0 = row.base / 4u;
    let qw = lane_walk(vec2<u32>(0u, params.classes / 4u), lid);
    for (var q = qw.x; q < qw.y; q += LANES) {
        let x = raw_quad(q0 + q);
        let c = 4u * q;
        let i = row.base + c;
        a0 = accumulate(a0, c, capped(x.x), i, row);
        a1 = accumulate(a1, c + 1u, capped(x.y), i + 1u, row);
        a2 = accumulate(a2, c + 2u, capped(x.z), i + 2u, row);
        a3 = accumulate(a3, c + 3u, capped(x.w), i + 3u, row);
    }
    return combine(combine(a0, a1), combine(a2, a3));
}

// Sweep 2 of `fused`: this invocation's share of the row's gradient (zeros for an ignored row).
fn sweep_grad(row: Row, st: Stats, co: Coef, lid: u32) {
    let q0 = row.base / 4u;
    let qw = lane_walk(vec2<u32>(0u, params.classes / 4u), lid);
    for (var q = qw.x; q < qw.y; q += LANES) {
        var g = vec4<f32>(0.0);
        if (!row.skip) {
            let x = raw_quad(q0 + q);
            let c = 4u * q;
            let i = row.base + c;
            g = vec4<f32>(
                class_gradient(c, capped(x.x), i, row, st, co),
                class_gradient(c + 1u, capped(x.y), i + 1u, row, st, co),
                class_gradient(c + 2u, capped(x.z), i + 2u, row, st, co),
                class_gradient(c + 3u, capped(x.w), i + 3u, row, st, co),
            );
        }
        store_quad(q0 + q, g);
    }
}
