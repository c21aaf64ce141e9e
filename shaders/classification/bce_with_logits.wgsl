// bce_with_logits (torch binary_cross_entropy_with_logits), x = logit, t = target in [0, 1]:
//   w_c [(1 - t) x + (1 + (pw_c - 1) t) softplus(-x)],  d/dx = w_c [(1 - t) - (1 + (pw_c - 1) t) sigma(-x)]
// with c = i mod C (the last dimension: the driver's `elem_col`). state = [pos_weight (C), weight
// (C)], ones when absent; WEIGHTED is false when both are absent, and then nothing is read.
// Evaluated by the prelude's `bce_logit`, which keeps the small losses and gradients of confident
// predictions.
override WEIGHTED: bool = true;

fn loss_elem(x: f32, t: f32, i: u32) -> vec2<f32> {
    var pw = 1.0;
    var w = 1.0;
    if (WEIGHTED) {
        pw = state[elem_col];
        w = state[params.coords + elem_col];
    }
    return w * bce_logit(x, t, pw, exp(-abs(x)));
}
