// Helpers shared by the metric-learning kernels (in-batch losses, margin heads).

// torch F.normalize's eps: x / max(‖x‖, eps).
const NORM_EPS: f32 = 1e-12;

// Euclidean norm accumulated without overflow or underflow (LAPACK's nrm2): (scale, ssq) with
// norm = scale * sqrt(ssq). Start from vec2(0.0, 1.0); a NaN element makes the norm NaN.
fn nrm2_add(acc: vec2<f32>, x: f32) -> vec2<f32> {
    let a = abs(x);
    if (a == 0.0) {
        return acc;
    }
    if (acc.x < a) {
        let r = acc.x / a;
        return vec2<f32>(a, 1.0 + acc.y * r * r);
    }
    let r = a / acc.x;
    return vec2<f32>(acc.x, acc.y + r * r);
}

fn nrm2_value(acc: vec2<f32>) -> f32 {
    return acc.x * sqrt(acc.y);
}

// x / max(norm, eps) (one element of F.normalize), NaN for a NaN norm. An element as large as
// a finite norm (a one-dimensional row, or one whose other elements are 0) is exactly ±1, as
// torch's correctly rounded division gives it: Vulkan lets a division be 2.5 ulp off, and a
// cosine a hair under 1 leaves the normalisation's backward a residue where it is 0, which
// ArcFace's 1/sin θ amplifies.
fn normalized(x: f32, norm: f32) -> f32 {
    if (is_nan(norm)) {
        return norm;
    }
    let m = max(norm, NORM_EPS);
    return select(x / m, sign(x), abs(x) == m && m <= BIG);
}

// `normalized` of four elements of one row.
fn normalized4(v: vec4<f32>, norm: f32) -> vec4<f32> {
    if (is_nan(norm)) {
        return vec4<f32>(norm);
    }
    let m = max(norm, NORM_EPS);
    return select(v / m, sign(v), abs(v) == vec4<f32>(m) & vec4<bool>(m <= BIG));
}

// The backward of x̂ = x / max(‖x‖, eps) for one element: g_c - [‖x‖ ≥ eps] (g·x̂) x̂_c, over
// max(‖x‖, eps).
fn normalize_backward(g: f32, xhat: f32, dot: f32, norm: f32) -> f32 {
    if (norm >= NORM_EPS) {
        return (g - xhat * dot) / norm;
    }
    return g / NORM_EPS;
}

// ---- Tiles -------------------------------------------------------------------------------------
// Workgroups of 256 invocations work on 16 × 16 tiles: of dot products (or distances) between 16
// rows of one matrix (`a_tile`) and 16 of another (`k_tile`), or of coefficients (`s_tile`)
// times 16 rows. Rows pass through workgroup memory SPAN columns at a time, four adjacent
// columns an invocation as one vec4: a quarter of the barriers and of the workgroup-memory
// accesses of one column each. For the dot products each invocation takes a 2 × 2 block of the
// tile over a quarter of the staged columns (`block_dot`), one vec4 read per four products
// instead of two, and the quarters are added once per tile (`tile_entry`); every other step has
// invocation lid at row lid / 16 and column lid % 16.
const TILE: u32 = 16u;
const SPAN: u32 = 4u * TILE;
// Tile rows in workgroup memory are one vec4 longer than the staged columns, so that the
// invocations reading the same column of different rows meet different memory banks.
const STRIDE: u32 = TILE + 1u;

var<workgroup> a_tile: array<vec4<f32>, 272>;
var<workgroup> k_tile: array<vec4<f32>, 272>;
var<workgroup> s_tile: array<f32, 256>;

// v with its components at columns c, c + 1, c + 2, c + 3 from d on set to 0. Loaders return
// zeros without loading for c >= d: no dot product reads a vec4 there.
fn within4(v: vec4<f32>, c: u32, d: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), v, vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(d));
}

// Stores invocation lid's four columns of a row: row lid / 16, columns 4 (lid % 16) ...
fn stage_a(lid: u32, v: vec4<f32>) {
    a_tile[lid / TILE * STRIDE + lid % TILE] = v;
}

fn stage_k(lid: u32, v: vec4<f32>) {
    k_tile[lid / TILE * STRIDE + lid % TILE] = v;
}

// The vec4s of a row staged for columns d0 .. of rows of d: at most TILE, fewer at the end.
fn staged(d0: u32, d: u32) -> u32 {
    return min(TILE, (d - d0 + 3u) / 4u);
}

// Invocation lid's block: rows r0, r0 + 1 and columns c0, c0 + 1 of the tile (x, y), and its
// quarter of the staged vec4s (z).
fn block_of(lid: u32) -> vec3<u32> {
    let b = lid % 64u;
    return vec3<u32>(b / 8u * 2u, b % 8u * 2u, lid / 64u);
}

// `acc` plus the staged columns' share (the first `cols` vec4s) of invocation lid's block of
// a_tile rows · k_tile rows, or (`distance`) of their squared distances, as
// (r0 c0, r0 c1, r1 c0, r1 c1).
fn block_dot(lid: u32, cols: u32, distance: bool, acc: vec4<f32>) -> vec4<f32> {
    let blk = block_of(lid);
    let a0 = blk.x * STRIDE;
    let k0 = blk.y * STRIDE;
    var out = acc;
    for (var j = 4u * blk.z; j < min(4u * blk.z + 4u, cols); j++) {
        let x0 = a_tile[a0 + j];
        let x1 = a_tile[a0 + STRIDE + j];
        let y0 = k_tile[k0 + j];
        let y1 = k_tile[k0 + STRIDE + j];
        if (distance) {
            let t00 = x0 - y0;
            let t01 = x0 - y1;
            let t10 = x1 - y0;
            let t11 = x1 - y1;
            out += vec4<f32>(dot(t00, t00), dot(t01, t01), dot(t10, t10), dot(t11, t11));
        } else {
            out += vec4<f32>(dot(x0, y0), dot(x0, y1), dot(x1, y0), dot(x1, y1));
        }
    }
    return out;
}

// The tile entry of invocation lid (row lid / 16, column lid % 16): the sum of the four quarters'
// `block_dot` totals. Uses a_tile: call it after the barrier that closes the last stage, in
// uniform control flow.
fn tile_entry(lid: u32, acc: vec4<f32>) -> f32 {
    // Slot q * 64 + b holds quarter q of block b: lid's own.
    a_tile[lid] = acc;
    workgroupBarrier();
    let r = lid / TILE;
    let c = lid % TILE;
    let b = r / 2u * 8u + c / 2u;
    let at = r % 2u * 2u + c % 2u;
    let total = (a_tile[b][at] + a_tile[64u + b][at]) + (a_tile[128u + b][at] + a_tile[192u + b][at]);
    workgroupBarrier();
    return total;
}

// Σ_j s_tile[r * 16 + j] k_tile[j] over the staged columns 4c .. 4c + 3 of the k rows, or
// (`transposed`) with s_tile[j * 16 + r].
fn tile_combine(r: u32, c: u32, transposed: bool) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < TILE; j++) {
        let s = s_tile[select(r * TILE + j, j * TILE + r, transposed)];
        acc += s * k_tile[j * STRIDE + c];
    }
    return acc;
}

var<workgroup> row_tile: array<vec4<f32>, 256>;

// The sum of `mine` over each tile row's 16 invocations, in column order; the result for row r
// is valid in invocation r. Call in uniform control flow.
fn merge_row_sums(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    row_tile[lid] = mine;
    workgroupBarrier();
    var acc = vec4<f32>(0.0);
    if (lid < TILE) {
        for (var c = 0u; c < TILE; c++) {
            acc += row_tile[lid * TILE + c];
        }
    }
    workgroupBarrier();
    return acc;
}

// Two running log-sum-exps (m1, t1, m2, t2), each kept by the 16 invocations of a tile row over
// their own entries, merged per row in column order; a NaN t (a NaN term) makes the row's t
// NaN. The result for row r is valid in invocation r. Call in uniform control flow.
fn merge_row_lse2(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    row_tile[lid] = mine;
    workgroupBarrier();
    var a = LSE_EMPTY;
    var b = LSE_EMPTY;
    var nan_a = false;
    var nan_b = false;
    if (lid < TILE) {
        for (var c = 0u; c < TILE; c++) {
            let part = row_tile[lid * TILE + c];
            nan_a = nan_a || is_nan(part.y);
            nan_b = nan_b || is_nan(part.w);
            if (part.y >= 0.0) {
                a = lse_merge(a, part.xy);
            }
            if (part.w >= 0.0) {
                b = lse_merge(b, part.zw);
            }
        }
    }
    workgroupBarrier();
    let nan = bitcast<f32>(0x7fc00000u);
    return vec4<f32>(a.x, select(a.y, nan, nan_a), b.x, select(b.y, nan, nan_b));
}
