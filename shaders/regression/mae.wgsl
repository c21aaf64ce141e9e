// mae: |r|; derivative sign(r), 0 at r = 0 (torch l1_loss).
fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let r = p - t;
    return vec2<f32>(abs(r), sign(r));
}
