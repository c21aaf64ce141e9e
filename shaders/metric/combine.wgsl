// out = alpha a + beta b, element by element (info_nce's two directions added up); with
// per_sample > 0, alpha = weights[i / per_sample] and beta = 1 - alpha (the WGAN-GP
// interpolates eps x + (1 - eps) x~, one eps per sample).

struct Params {
    n: u32,
    per_sample: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var<storage, read> weights: array<f32>;

@compute @workgroup_size(256)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i < params.n) {
        var alpha = params.alpha;
        var beta = params.beta;
        if (params.per_sample != 0u) {
            alpha = weights[i / params.per_sample];
            beta = 1.0 - alpha;
        }
        out[i] = alpha * a[i] + beta * b[i];
    }
}
