// bce_with_logits (torch binary_cross_entropy_with_logits), x = logit, t = target in [0, 1]:
//   w_c [(1 - t) x + (1 + (pw_c - 1) t) softplus(-x)],  d/dx = w_c [(1 - t) - (1 + (pw_c - 1) t) sigma(-x)]
// with c = i mod C (the last dimension: the driver's `elem_col`). state = [pos_weight (C), weight
// (C)], ones when absent; WEIGHTED is false when both are absent, and then nothing is read.
override WEIGHTED: bool = true;

fn loss_elem(x: f32, t: f32, i: u32) -> vec2<f32> {
    var pw = 1.0;
    var w = 1.0;
    if (WEIGHTED) {
        pw = state[elem_col];
        w = state[params.coords + elem_col];
    }
    let e = exp(-abs(x));
    let sp = max(-x, 0.0) + log1p(e);           // softplus(-x)
    let sm = select(1.0, e, x >= 0.0) / (1.0 + e); // sigma(-x)
    let lw = 1.0 + (pw - 1.0) * t;
    return w * vec2<f32>((1.0 - t) * x + lw * sp, (1.0 - t) - lw * sm);
}
