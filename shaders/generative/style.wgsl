// style (Gatys et al.): Gram matrices of feature maps F [B, C, S] (S = H·W) and the backward of
// a loss of them, as tiled matrix products:
//   gram:          G[b] = F[b] F[b]ᵀ / (C·S)
//   gram_backward: dF[b] = scale · dG[b] F[b]
// with scale = 2 / (C·S) for a symmetric dG (dG + dGᵀ = 2 dG).
// A workgroup computes a TILE × TILE tile of one batch entry's output (rows m, columns n), four
// by four outputs an invocation, summing over chunks of KT along the inner index staged in
// workgroup memory (zeros past the matrix's edge). The dispatch's x counts column tiles; y and z
// together count (batch entry, row tile) pairs, so that no invocation loops over entries (lavapipe
// counts every loop iteration of an invocation against one budget): an invocation iterates once
// per chunk, and the loops within a chunk have constant trip counts (unrolled).
// `gram` takes the tiles on and above the diagonal and writes each off-diagonal one mirrored too:
// G[b, i, j] and G[b, j, i] are one value, so G is exactly symmetric.
// Few channels (C < 16) would leave most of a tile idle: there `gram_small` and
// `gram_backward_small` give each output an invocation that loops over the sum's index (S, or C)
// itself; G[b, i, j] and G[b, j, i] sum the same products in the same order.

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

// Output rows and columns of a workgroup's tile, and the inner chunk staged at a time.
const TILE: u32 = 64u;
const KT: u32 = 32u;
// Invocations along a tile's rows (and its columns): TILE / 4.
const SIDE: u32 = 16u;

// The chunk's operands, k-major: tile_a[k * SIDE + m / 4][m % 4] holds A(m0 + m, k0 + k), tile_b
// likewise B(k0 + k, n0 + n).
var<workgroup> tile_a: array<vec4<f32>, 512>;
var<workgroup> tile_b: array<vec4<f32>, 512>;

// The output tile of workgroup `wid`: (batch entry, first row, first column), the entry past the
// batch for a workgroup beyond the last (y · z may exceed the pairs).
fn tile_of(wid: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let pair = wid.y + wid.z * nwg.y;
    let row_tiles = (params.c + TILE - 1u) / TILE;
    return vec3<u32>(pair / row_tiles, (pair % row_tiles) * TILE, wid.x * TILE);
}

// Element (r, k) of the row-major matrix of `rows` × `cols` at `base` of `feats` (of `dgram`
// when `from_dgram`), 0 outside it.
fn element(from_dgram: bool, base: u32, r: u32, k: u32, rows: u32, cols: u32) -> f32 {
    if (r >= rows || k >= cols) {
        return 0.0;
    }
    if (from_dgram) {
        return dgram[base + r * cols + k];
    }
    return feats[base + r * cols + k];
}

// Stores entry e (of TILE · KT) of a chunk whose operand is stored with k along its rows (row
// e / KT, k = e % KT, so that neighbouring invocations read neighbouring elements) into tile_b
// when `to_b`, else tile_a.
fn stage_rows(to_b: bool, e: u32, v: f32) {
    let at = (e % KT) * SIDE + (e / KT) / 4u;
    if (to_b) {
        tile_b[at][(e / KT) % 4u] = v;
    } else {
        tile_a[at][(e / KT) % 4u] = v;
    }
}

// The sums of an invocation's 4 × 4 outputs of the tile at rows m0, columns n0 of batch entry b:
// acc[r][q] is output (m0 + 4 ty + r, n0 + 4 tx + q), with ty, tx = lid / SIDE, lid % SIDE.
// Gram: A = F (k along its rows), B = Fᵀ (likewise); backward: A = dG, B = F, k-major (entry e
// of a chunk is (k, n) = (e / TILE, e % TILE), neighbouring invocations on neighbouring pixels).
// Call in uniform control flow.
fn tile_sums(lid: u32, b: u32, m0: u32, n0: u32, backward: bool) -> array<vec4<f32>, 4> {
    let c = params.c;
    let s = params.s;
    let fb = b * c * s;
    var acc = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < select(s, c, backward); k0 += KT) {
        for (var u = 0u; u < TILE * KT / WG; u++) {
            let e = lid + u * WG;
            let k = k0 + e % KT;
            if (backward) {
                stage_rows(false, e, element(true, b * c * c, m0 + e / KT, k, c, c));
                let n = e % TILE;
                tile_b[(e / TILE) * SIDE + n / 4u][n % 4u] = element(false, fb, k0 + e / TILE, n0 + n, c, s);
            } else {
                stage_rows(false, e, element(false, fb, m0 + e / KT, k, c, s));
                stage_rows(true, e, element(false, fb, n0 + e / KT, k, c, s));
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let a = tile_a[kk * SIDE + lid / SIDE];
            let bv = tile_b[kk * SIDE + lid % SIDE];
            acc[0] += a.x * bv;
            acc[1] += a.y * bv;
            acc[2] += a.z * bv;
            acc[3] += a.w * bv;
        }
        workgroupBarrier();
    }
    return acc;
}

// Writes an invocation's outputs of the tile at (m0, n0) of entry b, times `scale`, into the
// C × `cols` matrices of `out`; `mirror`: also at the transposed place.
fn store_tile(acc: array<vec4<f32>, 4>, lid: u32, b: u32, m0: u32, n0: u32, cols: u32, scale: f32, mirror: bool) {
    let c = params.c;
    for (var r = 0u; r < 4u; r++) {
        let i = m0 + 4u * (lid / SIDE) + r;
        for (var q = 0u; q < 4u; q++) {
            let j = n0 + 4u * (lid % SIDE) + q;
            if (i < c && j < cols) {
                let g = acc[r][q] * scale;
                out[(b * c + i) * cols + j] = g;
                if (mirror) {
                    out[(b * c + j) * c + i] = g;
                }
            }
        }
    }
}

@compute @workgroup_size(256)
fn gram(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile_of(wid, nwg);
    // Tiles below the diagonal are their mirror's (the whole workgroup leaves).
    if (t.x >= params.b || t.y > t.z) {
        return;
    }
    let acc = tile_sums(lid.x, t.x, t.y, t.z, false);
    store_tile(acc, lid.x, t.x, t.y, t.z, params.c, params.inv_cs, t.y != t.z);
}

@compute @workgroup_size(256)
fn gram_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile_of(wid, nwg);
    if (t.x >= params.b) {
        return;
    }
    let acc = tile_sums(lid.x, t.x, t.y, t.z, true);
    store_tile(acc, lid.x, t.x, t.y, t.z, params.s, params.scale, false);
}

// One invocation per G[b, i, j], the batch and both indices flattened.
@compute @workgroup_size(256)
fn gram_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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

// One invocation per dF[b, i, s], flattened likewise.
@compute @workgroup_size(256)
fn gram_backward_small(
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
