// style (Gatys et al.): Gram matrices of feature maps F [B, C, S] (S = H·W) and the backward of
// a loss of them.
//   gram:          G[b, i, j] = Σ_s F[b, i, s] F[b, j, s] / (C·S)     one invocation per (b, i, j)
//   gram_backward: dF[b, i, s] = scale · Σ_j dG[b, i, j] F[b, j, s]    one invocation per (b, i, s)
// with scale = 2 / (C·S) for a symmetric dG (dG + dGᵀ = 2 dG). G[b, i, j] and G[b, j, i] sum the
// same products in the same order: the Gram matrix is exactly symmetric.

struct Params {
    b: u32,
    c: u32,
    s: u32,
    pad: u32,
    inv_cs: f32,   // 1 / (C·S)
    scale: f32,    // 2 / (C·S)
    pad1: f32,
    pad2: f32,
}

@group(0) @binding(0) var<storage, read> feats: array<f32>;
@group(0) @binding(1) var<storage, read> dgram: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256)
fn gram(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = gid.x + gid.y * nwg.x * WG;
    let c = params.c;
    if (k >= params.b * c * c) {
        return;
    }
    let b = k / (c * c);
    let i = (k / c) % c;
    let j = k % c;
    let fi = (b * c + i) * params.s;
    let fj = (b * c + j) * params.s;
    var acc = 0.0;
    for (var s = 0u; s < params.s; s++) {
        acc += feats[fi + s] * feats[fj + s];
    }
    out[k] = acc * params.inv_cs;
}

@compute @workgroup_size(256)
fn gram_backward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = gid.x + gid.y * nwg.x * WG;
    let c = params.c;
    if (k >= params.b * c * params.s) {
        return;
    }
    let s = k % params.s;
    let bi = k / params.s;
    let b = bi / c;
    var acc = 0.0;
    for (var j = 0u; j < c; j++) {
        acc += dgram[bi * c + j] * feats[(b * c + j) * params.s + s];
    }
    out[k] = acc * params.scale;
}
