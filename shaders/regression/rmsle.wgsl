// rmsle: sqrt(mean (log1p p - log1p t)^2), with l = ln((1 + p) / (1 + t)): one logarithm per
// element. p or t <= -1 is outside the domain and gives NaN explicitly (log(0) would give -inf).
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let u = 1.0 + p;
    let l = log(u / (1.0 + t));
    let v = vec2<f32>(l * l, 2.0 * l / u);
    let nan = bitcast<f32>(0x7fc00000u);
    return select(v, vec2<f32>(nan, nan), p <= -1.0 || t <= -1.0);
}
