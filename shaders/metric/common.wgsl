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

// x / max(norm, eps) (one element of F.normalize), NaN for a NaN norm. A division, as torch
// does it: a one-dimensional row normalises to exactly ±1.
fn normalized(x: f32, norm: f32) -> f32 {
    if (is_nan(norm)) {
        return norm;
    }
    return x / max(norm, NORM_EPS);
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
// Workgroups of 256 invocations work on 16 × 16 tiles: invocation lid at row lid / 16 and column
// lid % 16 of a tile of dot products (or distances) between 16 rows of one matrix (`a_tile`) and
// 16 of another (`k_tile`), or of a tile of coefficients (`s_tile`) times 16 rows. Rows pass
// through workgroup memory SPAN columns at a time, four adjacent columns an invocation as one
// vec4: a quarter of the barriers and of the workgroup-memory accesses of one column each.
const TILE: u32 = 16u;
const SPAN: u32 = 4u * TILE;
// k_tile's rows are one vec4 longer than a tile row, so that the invocations reading the same
// column of different rows (`tile_dot`) meet different memory banks.
const K_STRIDE: u32 = TILE + 1u;

var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> k_tile: array<vec4<f32>, 272>;
var<workgroup> s_tile: array<f32, 256>;

// v with its components at columns c, c + 1, c + 2, c + 3 from d on set to 0. Loaders return
// zeros without loading for c >= d: `tile_dot` reads no vec4 there.
fn within4(v: vec4<f32>, c: u32, d: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), v, vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(d));
}

// Stores invocation lid's four columns of a row: row lid / 16, columns 4 (lid % 16) ...
fn stage_a(lid: u32, v: vec4<f32>) {
    a_tile[lid] = v;
}

fn stage_k(lid: u32, v: vec4<f32>) {
    k_tile[lid / TILE * K_STRIDE + lid % TILE] = v;
}

// The vec4s of a row staged for columns d0 .. of rows of d: at most TILE, fewer at the end.
fn staged(d0: u32, d: u32) -> u32 {
    return min(TILE, (d - d0 + 3u) / 4u);
}

// The share of columns d0 .. of rows of d in a_tile row r · k_tile row c, or (`distance`) in the
// squared distance between them.
fn tile_dot(r: u32, c: u32, d0: u32, d: u32, distance: bool) -> f32 {
    var acc = 0.0;
    let cols = staged(d0, d);
    if (distance) {
        for (var j = 0u; j < cols; j++) {
            let t = a_tile[r * TILE + j] - k_tile[c * K_STRIDE + j];
            acc += dot(t, t);
        }
    } else {
        for (var j = 0u; j < cols; j++) {
            acc += dot(a_tile[r * TILE + j], k_tile[c * K_STRIDE + j]);
        }
    }
    return acc;
}

// Σ_j s_tile[r * 16 + j] k_tile[j] over the staged columns 4c .. 4c + 3 of the k rows, or
// (`transposed`) with s_tile[j * 16 + r].
fn tile_combine(r: u32, c: u32, transposed: bool) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < TILE; j++) {
        let s = s_tile[select(r * TILE + j, j * TILE + r, transposed)];
        acc += s * k_tile[j * K_STRIDE + c];
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
