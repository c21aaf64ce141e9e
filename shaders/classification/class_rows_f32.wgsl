// Class rows, one logit per step: logits and gradient as f32 arrays (any C, any trailing dims).
// Defines the element accessors and the two sweeps of the workgroup-per-row path.

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

// Logit i as stored (before any soft cap).
fn raw_logit(i: u32) -> f32 {
    if (IN_PLACE) {
        return grad[i];
    }
    return logits[i];
}

fn store_grad(i: u32, g: f32) {
    grad[i] = g;
}

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
