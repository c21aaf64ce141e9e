// Boxes of 16-bit coordinates (`util/half.wgsl`): two words per box, (x1, y1) then (x2, y2)
// (or the cxcywh pairs), the gradient likewise.

@group(0) @binding(0) var<storage, read> pred: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> targ: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec2<u32>>;

fn unpack_box(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack_pair(w.x), unpack_pair(w.y));
}

fn pack_box(b: vec4<f32>) -> vec2<u32> {
    return vec2<u32>(pack_pair(b.xy), pack_pair(b.zw));
}

fn load_pred(i: u32) -> vec4<f32> {
    return unpack_box(pred[i]);
}

fn load_targ(i: u32) -> vec4<f32> {
    return unpack_box(targ[i]);
}

fn store_grad(i: u32, g: vec4<f32>) {
    grad[i] = pack_box(g);
}

// Scales the gradient of step s (a box) by c (the driver's `apply`).
fn scale_grad(s: u32, c: f32) {
    grad[s] = pack_box(unpack_box(grad[s]) * c);
}
