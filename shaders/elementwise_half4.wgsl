// Element-wise driver, four 16-bit floats per step: bindings 0-2 as arrays of vec2<u32> (8-byte
// loads and stores), each word holding two values (`util/half.wgsl`); `steps`, the accessors of
// a step that `elementwise_quads.wgsl`'s walk goes through, and `elem_inputs`. The host gives
// these passes the multiple-of-four prefix of the input and runs the remaining elements through
// `elementwise_half.wgsl` (two per step). params.n counts elements (a multiple of 4 here).

@group(0) @binding(0) var<storage, read> pred: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> targ: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> grad: array<vec2<u32>>;

// Elements per step.
const STEP: u32 = 4u;

// Steps of a walk over the segment: its quads.
fn steps() -> u32 {
    return params.n / 4u;
}

// The four values of the two words w.
fn unpack_quad(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack_pair(w.x), unpack_pair(w.y));
}

// The two words of the four values v (as `pack_pair`).
fn pack_quad(v: vec4<f32>) -> vec2<u32> {
    return vec2<u32>(pack_pair(v.xy), pack_pair(v.zw));
}

// Predictions and targets of step s.
fn step_inputs(s: u32) -> mat2x4<f32> {
    return mat2x4<f32>(unpack_quad(pred[s]), unpack_quad(targ[s]));
}

// Stores the gradients of step s; under ROOT none (`scale_grad` writes them).
fn store_grads(s: u32, g: vec4<f32>) {
    if (!ROOT) {
        grad[s] = pack_quad(g);
    }
}

// The gradients of step s times c (`apply`), recomputed from the inputs: the gradient of the
// mean square rounded to 16 bits could overflow where the scaled one does not.
fn scale_grad(s: u32, c: f32) {
    let v = loss_quad(s, row_col(params.elem_base + 4u * s), row_col(1u));
    grad[s] = pack_quad(v[1] * (params.grad_scale * c));
}

// Prediction and target of element j of the segment.
fn elem_inputs(j: u32) -> vec2<f32> {
    return vec2<f32>(unpack_quad(pred[j / 4u])[j % 4u], unpack_quad(targ[j / 4u])[j % 4u]);
}
