// rmsle: sqrt(mean (log1p p - log1p t)^2). p or t <= -1 is outside the domain and gives NaN
// explicitly (log(0) would otherwise give -inf).
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    if (p <= -1.0 || t <= -1.0) {
        let nan = bitcast<f32>(0x7fc00000u);
        return vec2<f32>(nan, nan);
    }
    let l = log1p(p) - log1p(t);
    return vec2<f32>(l * l, 2.0 * l / (1.0 + p));
}
