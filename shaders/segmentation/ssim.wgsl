// ssim (kornia ssim_loss): loss map clamp((1 - SSIM) / 2, 0, 1) of images [N, C, H, W], forward
// and backward. With G the separable Gaussian blur (window `win`, odd size K = 2r + 1) under
// reflect padding (torch's 'reflect', extended periodically with period 2(n - 1) so that any
// image size works; n = 1 maps every index to 0):
//   mu1 = G x1, mu2 = G x2, E11 = G x1^2, E22 = G x2^2, E12 = G x1 x2
//   SSIM = (2 mu1 mu2 + C1)(2 s12 + C2) / ((mu1^2 + mu2^2 + C1)(s11 + s22 + C2) + eps),
//   s11 = E11 - mu1^2, s22 = E22 - mu2^2, s12 = E12 - mu1 mu2.
// Under valid padding the map is cropped by r on every side. The gradient w.r.t. x1 (the
// prediction) is G^T a + 2 x1 G^T b + x2 G^T c, with a, b, c the derivatives of the loss w.r.t.
// mu1, E11, E12 at each output pixel (0 outside the crop and where the clamp is active).
//
// A segment is a run of whole planes (n, c), its views bound from the storage offset alignment
// at or before their first element (`Tensor::binding_led`; `lead` and `loss_lead` count the
// elements bound before it); `work` holds 8 planes-sized maps: [0, 5) the
// horizontally blurred quantities, later the vertically adjoined coefficients; [5, 8) a, b, c.
// Passes (each over the segment's pixels): `blur_h`, `blur_v` (SSIM, loss, coefficients),
// `adjoint_v`, `adjoint_h` (the gradient), each adjoint followed by its border pass on long lines
// (`border_v`, `border_h`: the taps of reflected positions); `reduce` finishes the loss.
// `blur_v`, and the adjoint passes on long lines, take a run of RUN outputs along their direction
// per step (2r + RUN loads of each map for RUN outputs, instead of RUN (2r + 1)).
// The radius is a pipeline constant; pixel coordinates advance without a division, and unless a
// window reaches past the far side of an image (WIDE) a position reflects at most once, without
// the periodic extension's division per tap.

struct Params {
    planes: u32,       // planes in this segment
    height: u32,
    width: u32,
    lead: u32,         // values bound before the segment's first (prediction, target, gradient)
    plane_base: u32,   // global index of the segment's first plane
    wg_base: u32,      // first partial slot of this segment
    num_partials: u32,
    per_pixel: u32,    // 1 under reduction none
    valid: u32,        // 1: valid padding (crop r per side)
    c1: f32,
    c2: f32,
    eps: f32,
    loss_scale: f32,   // 1 / (number of map elements) under mean, else 1
    grad_scale: f32,   // grad_scale times loss_scale
    loss_lead: u32,    // per-pixel losses bound before the segment's first
    pad: u32,
}

@group(0) @binding(0) var<storage, read> pred: array<f32>;
@group(0) @binding(1) var<storage, read> targ: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<storage, read_write> work: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
// The window's K <= 63 weights, four a vector: a uniform, so that a tap whose index is known
// when the shader is compiled reads it once for all invocations.
@group(0) @binding(7) var<uniform> win: array<vec4<f32>, 16>;

// Weight k of the window.
fn weight(k: u32) -> f32 {
    return win[k / 4u][k % 4u];
}

// Window radius r = K / 2.
override RADIUS: u32 = 5u;
// Whether r >= min(H, W): some padded position then reflects more than once.
override WIDE: bool = false;
// Whether the border passes add the reflected taps of the adjoint along columns (border_v) and
// rows (border_h), rather than the adjoint passes themselves (`adjoint_reflected`).
override SPLIT_V: bool = false;
override SPLIT_H: bool = false;

// Pixels in this segment.
fn pixels() -> u32 {
    return params.planes * params.height * params.width;
}

// Source index of padded position j in a line of n samples (reflect, periodic).
fn reflect(j: i32, n: u32) -> u32 {
    if (!WIDE) {
        // -r <= j <= n - 1 + r with r < n: one reflection at most.
        let m = abs(j);
        return u32(select(m, 2 * (i32(n) - 1) - m, m >= i32(n)));
    }
    if (n == 1u) {
        return 0u;
    }
    let period = 2 * (i32(n) - 1);
    var m = j % period;
    if (m < 0) {
        m += period;
    }
    if (m >= i32(n)) {
        m = period - m;
    }
    return u32(m);
}

// Map q of `work` at pixel e.
fn map_at(q: u32, e: u32) -> f32 {
    return work[q * pixels() + e];
}

// Whether output pixel (y, x) is in the loss map (valid padding crops r per side).
fn in_map(y: u32, x: u32) -> bool {
    if (params.valid == 0u) {
        return true;
    }
    let r = RADIUS;
    return y >= r && y + r < params.height && x >= r && x + r < params.width;
}

@compute @workgroup_size(256)
fn blur_h(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = params.width;
    let r = i32(RADIUS);
    let b = lane_walk(block_range(pixels(), wid.x, nwg.x, WG), lid.x);
    // (row, x) of pixel e.
    var pos = walk2(b.x, w);
    for (var e = b.x; e < b.y; e += LANES) {
        let rx = pos.at;
        pos = step2(pos);
        let row = rx.x * w;
        let x = i32(rx.y);
        var s = array<f32, 5>(0.0, 0.0, 0.0, 0.0, 0.0);
        for (var k = 0; k <= 2 * r; k++) {
            let i = row + reflect(x + k - r, w);
            let wk = weight(u32(k));
            let p = pred[params.lead + i];
            let t = targ[params.lead + i];
            s[0] += wk * p;
            s[1] += wk * t;
            s[2] += wk * p * p;
            s[3] += wk * t * t;
            s[4] += wk * p * t;
        }
        for (var q = 0u; q < 5u; q++) {
            work[q * pixels() + e] = s[q];
        }
    }
}

// Rows a vertical pass (columns a horizontal one) computes per invocation: the taps of a run
// of RUN outputs are 2r + RUN loads of each map instead of RUN (2r + 1).
const RUN: u32 = 4u;

// Source index of padded position j of a line of n samples, for a tap of a run: `reflect`,
// clamped for the taps past the far end that only outputs beyond the line would take (their
// weight for every output of the line is zero, and their value must not be read out of range).
fn run_tap(j: i32, n: u32) -> u32 {
    return min(reflect(j, n), n - 1u);
}

// Adds tap t of a run (padded position first - r + t) with the value `v` of each map into the
// run's sums: output o of the run takes it with weight(t - o) where 0 <= t - o <= 2r. Taps
// RUN - 1 ..= 2r reach every output of the run (one vector of weights); the others only some,
// under a condition uniform across invocations (t is the loop's), so that a value outside an
// output's window is never multiplied in (a NaN there would spread to its neighbours).
fn run_add(sums: ptr<function, array<vec4<f32>, 5>>, t: u32, v: array<f32, 5>, maps: u32) {
    if (t >= RUN - 1u && t <= 2u * RADIUS) {
        let wv = vec4<f32>(weight(t), weight(t - 1u), weight(t - 2u), weight(t - 3u));
        for (var q = 0u; q < maps; q++) {
            (*sums)[q] += wv * v[q];
        }
        return;
    }
    for (var o = 0u; o < RUN; o++) {
        if (t >= o && t - o <= 2u * RADIUS) {
            let wk = weight(t - o);
            for (var q = 0u; q < maps; q++) {
                (*sums)[q][o] += wk * v[q];
            }
        }
    }
}

// The SSIM of output pixel (y, x) of `plane` (index e) from its five blurred maps `m`: writes
// its loss (per pixel) and the coefficients a, b, c of the adjoint passes; returns its loss for
// the partial sum (0 outside the map or per pixel).
fn ssim_pixel(plane: u32, y: u32, x: u32, e: u32, m: array<f32, 5>) -> f32 {
    let h = params.height;
    let w = params.width;
    let mu1 = m[0];
    let mu2 = m[1];
    let a1 = 2.0 * mu1 * mu2 + params.c1;
    let a2 = 2.0 * (m[4] - mu1 * mu2) + params.c2;
    let b1 = mu1 * mu1 + mu2 * mu2 + params.c1;
    let b2 = (m[2] - mu1 * mu1) + (m[3] - mu2 * mu2) + params.c2;
    let num = a1 * a2;
    let den = b1 * b2 + params.eps;
    let ssim = num / den;
    let value = (1.0 - ssim) * 0.5;
    var ca = 0.0;
    var cb = 0.0;
    var cc = 0.0;
    var acc = 0.0;
    if (in_map(y, x)) {
        let l = clamp(value, 0.0, 1.0);
        // NaN passes through (clamp of NaN is not guaranteed to be NaN).
        let lv = select(l, value, is_nan(value));
        if (params.per_pixel != 0u) {
            let r0 = RADIUS * params.valid;
            let ow = w - 2u * r0;
            let oh = h - 2u * r0;
            loss[params.loss_lead + (plane * oh + (y - r0)) * ow + (x - r0)] = lv;
        } else {
            acc = lv;
        }
        // Where the clamp is active the gradient is 0; a NaN value passes (its coefficients are
        // NaN, and so is every gradient entry whose window holds it, as in the reference).
        if (!(value < 0.0 || value > 1.0)) {
            // d loss / d SSIM = -1/2, times the reduction's scale.
            let s = -0.5 * params.grad_scale;
            ca = s * (2.0 * mu2 * (a2 - a1) / den - 2.0 * mu1 * num * (b2 - b1) / (den * den));
            cb = s * (-num * b1 / (den * den));
            cc = s * (2.0 * a1 / den);
        }
    }
    work[5u * pixels() + e] = ca;
    work[6u * pixels() + e] = cb;
    work[7u * pixels() + e] = cc;
    return acc;
}

// The vertical blur of the five maps and the SSIM, a run of RUN rows of one column per step.
@compute @workgroup_size(256)
fn blur_v(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let h = params.height;
    let w = params.width;
    let r = i32(RADIUS);
    let runs = (h + RUN - 1u) / RUN;
    let b = lane_walk(block_range(params.planes * runs * w, wid.x, nwg.x, WG), lid.x);
    var acc = 0.0;
    // (plane, run, x) of step u.
    var pos = walk3(b.x, runs, w);
    for (var u = b.x; u < b.y; u += LANES) {
        let prx = at3(pos);
        pos = step3(pos);
        let plane = prx.x;
        let y0 = prx.y * RUN;
        let x = prx.z;
        var sums: array<vec4<f32>, 5>;
        for (var t = 0u; t < 2u * RADIUS + RUN; t++) {
            let i = (plane * h + run_tap(i32(y0 + t) - r, h)) * w + x;
            var v: array<f32, 5>;
            for (var q = 0u; q < 5u; q++) {
                v[q] = map_at(q, i);
            }
            run_add(&sums, t, v, 5u);
        }
        for (var o = 0u; o < RUN; o++) {
            let y = y0 + o;
            if (y < h) {
                let m = array<f32, 5>(sums[0][o], sums[1][o], sums[2][o], sums[3][o], sums[4][o]);
                acc += ssim_pixel(plane, y, x, (plane * h + y) * w + x, m);
            }
        }
    }
    if (params.per_pixel == 0u) {
        let total = workgroup_sum(lid.x, acc);
        if (lid.x == 0u) {
            partials[params.wg_base + wid.x] = total;
        }
    }
}

// sum over padded positions j that reflect to index i of a line of n samples, of
// sum_{o in [j - r, j + r] within [0, n)} win[j - o + r] * f(o): the adjoint of the blur along
// the line. `f(o)` reads map q at line position o via `base + o * stride`. Unless WIDE: j = i
// itself, and the two reflected positions (`adjoint_reflected`). Lines long enough for the
// border passes (SPLIT_V, SPLIT_H) take runs instead (`run_add`).
fn adjoint(q: u32, i: u32, n: u32, base: u32, stride: u32) -> f32 {
    let r = i32(RADIUS);
    if (!WIDE) {
        let ii = i32(i);
        let last = i32(n) - 1;
        var total = 0.0;
        for (var k = 0; k <= 2 * r; k++) {
            let o = ii - k + r;
            var v = 0.0;
            if (o >= 0 && o <= last) {
                v = map_at(q, base + u32(o) * stride);
            }
            total += weight(u32(k)) * v;
        }
        return total + adjoint_reflected(q, i, n, base, stride);
    }
    let lo = -r;
    let hi = i32(n) - 1 + r;
    var total = 0.0;
    if (n == 1u) {
        // Every padded position reflects to 0.
        for (var j = lo; j <= hi; j++) {
            total += weight(u32(j + r)) * map_at(q, base);
        }
        return total;
    }
    let period = 2 * (i32(n) - 1);
    let ii = i32(i);
    // The two residues i and -i modulo the period (one when i is 0 or n - 1).
    var residues = vec2<i32>(ii, period - ii);
    let count = select(2, 1, ii == 0 || ii == i32(n) - 1);
    for (var c = 0; c < count; c++) {
        let base_j = residues[c];
        // The first j >= lo in the residue class.
        var j = base_j - ((base_j - lo) / period) * period;
        for (; j <= hi; j += period) {
            let o_lo = max(j - r, 0);
            let o_hi = min(j + r, i32(n) - 1);
            for (var o = o_lo; o <= o_hi; o++) {
                total += weight(u32(j - o + r)) * map_at(q, base + u32(o) * stride);
            }
        }
    }
    return total;
}

// The rest of `adjoint` when not WIDE: the padded positions -i (0 < i <= r) and 2(n - 1) - i
// (n - 1 - r <= i < n - 1), which reflect to i; their taps o = j - k + r are those of i's own
// window that run past the line. They exist only within r of either end of a line: on lines
// of at least 4r + 4 samples (SPLIT_V, SPLIT_H) separate passes over those pixels add them, so
// that the inner pixels skip them (a CPU adapter runs the body of a branch for every pixel,
// masked, whenever any of its SIMD group takes it).
fn adjoint_reflected(q: u32, i: u32, n: u32, base: u32, stride: u32) -> f32 {
    let r = i32(RADIUS);
    let ii = i32(i);
    let last = i32(n) - 1;
    var total = 0.0;
    for (var k = 0; k <= 2 * r; k++) {
        // j = -i: o' = -i - k + r in [0, n).
        let o2 = -ii - k + r;
        if (ii > 0 && o2 >= 0 && o2 <= last) {
            total += weight(u32(k)) * map_at(q, base + u32(o2) * stride);
        }
        // j = 2(n - 1) - i: o' = 2(n - 1) - i - k + r in [0, n).
        let o3 = 2 * last - ii - k + r;
        if (ii < last && o3 >= 0 && o3 <= last) {
            total += weight(u32(k)) * map_at(q, base + u32(o3) * stride);
        }
    }
    return total;
}

// Positions of a line of n samples within r of either end: min(n, 2r + 2) of them.
fn border_count(n: u32) -> u32 {
    return min(n, 2u * RADIUS + 2u);
}

// The b-th of them: 0..=r, then n - 1 - r..n.
fn border_position(b: u32, n: u32) -> u32 {
    return select(b, n - border_count(n) + b, b > RADIUS);
}

// The adjoint of the vertical blur of a, b, c (maps 5..8 into 0..3). On long lines (SPLIT_V)
// a run of RUN rows of one column per step: the window is symmetric, so that the adjoint's taps
// of a run take the weights of the blur's (`run_add`), and positions off the line add nothing
// here (`border_v` adds their reflected taps). Short lines, whose pixels nearly all have
// reflected taps, go a pixel per step through `adjoint`.
@compute @workgroup_size(256)
fn adjoint_v(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let h = params.height;
    let w = params.width;
    if (!SPLIT_V) {
        let b = lane_walk(block_range(pixels(), wid.x, nwg.x, WG), lid.x);
        var pos = walk3(b.x, h, w);
        for (var e = b.x; e < b.y; e += LANES) {
            let pyx = at3(pos);
            pos = step3(pos);
            let base = pyx.x * h * w + pyx.z;
            for (var q = 0u; q < 3u; q++) {
                work[q * pixels() + e] = adjoint(5u + q, pyx.y, h, base, w);
            }
        }
        return;
    }
    let runs = (h + RUN - 1u) / RUN;
    let b = lane_walk(block_range(params.planes * runs * w, wid.x, nwg.x, WG), lid.x);
    // (plane, run, x) of step u.
    var pos = walk3(b.x, runs, w);
    for (var u = b.x; u < b.y; u += LANES) {
        let prx = at3(pos);
        pos = step3(pos);
        let y0 = prx.y * RUN;
        let base = prx.x * h * w + prx.z;
        var sums: array<vec4<f32>, 5>;
        for (var t = 0u; t < 2u * RADIUS + RUN; t++) {
            let src = i32(y0 + t) - i32(RADIUS);
            var v = array<f32, 5>(0.0, 0.0, 0.0, 0.0, 0.0);
            if (src >= 0 && src < i32(h)) {
                let i = base + u32(src) * w;
                for (var q = 0u; q < 3u; q++) {
                    v[q] = map_at(5u + q, i);
                }
            }
            run_add(&sums, t, v, 3u);
        }
        for (var o = 0u; o < RUN; o++) {
            let y = y0 + o;
            if (y < h) {
                for (var q = 0u; q < 3u; q++) {
                    work[q * pixels() + base + y * w] = sums[q][o];
                }
            }
        }
    }
}

// SPLIT_V, after adjoint_v: the reflected taps of the rows within r of the top and bottom.
@compute @workgroup_size(256)
fn border_v(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let h = params.height;
    let w = params.width;
    let rows = border_count(h);
    let b = lane_walk(block_range(params.planes * rows * w, wid.x, nwg.x, WG), lid.x);
    // (plane, border row, x) of step t.
    var pos = walk3(b.x, rows, w);
    for (var t = b.x; t < b.y; t += LANES) {
        let pbx = at3(pos);
        pos = step3(pos);
        let y = border_position(pbx.y, h);
        let base = pbx.x * h * w + pbx.z;
        let e = base + y * w;
        for (var q = 0u; q < 3u; q++) {
            work[q * pixels() + e] += adjoint_reflected(5u + q, y, h, base, w);
        }
    }
}

@compute @workgroup_size(256)
fn adjoint_h(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = params.width;
    if (!SPLIT_H) {
        let b = lane_walk(block_range(pixels(), wid.x, nwg.x, WG), lid.x);
        var pos = walk2(b.x, w);
        for (var e = b.x; e < b.y; e += LANES) {
            let rx = pos.at;
            pos = step2(pos);
            let row = rx.x * w;
            let x = rx.y;
            let ga = adjoint(0u, x, w, row, 1u);
            let gb = adjoint(1u, x, w, row, 1u);
            let gc = adjoint(2u, x, w, row, 1u);
            let at = params.lead + e;
            grad[at] = ga + 2.0 * pred[at] * gb + targ[at] * gc;
        }
        return;
    }
    let runs = (w + RUN - 1u) / RUN;
    let b = lane_walk(block_range(params.planes * params.height * runs, wid.x, nwg.x, WG), lid.x);
    var pos = walk2(b.x, runs);
    for (var u = b.x; u < b.y; u += LANES) {
        let rr = pos.at;
        pos = step2(pos);
        let row = rr.x * w;
        let x0 = rr.y * RUN;
        var sums: array<vec4<f32>, 5>;
        for (var t = 0u; t < 2u * RADIUS + RUN; t++) {
            let src = i32(x0 + t) - i32(RADIUS);
            var v = array<f32, 5>(0.0, 0.0, 0.0, 0.0, 0.0);
            if (src >= 0 && src < i32(w)) {
                for (var q = 0u; q < 3u; q++) {
                    v[q] = map_at(q, row + u32(src));
                }
            }
            run_add(&sums, t, v, 3u);
        }
        for (var o = 0u; o < RUN; o++) {
            let e = row + x0 + o;
            if (x0 + o < w) {
                let at = params.lead + e;
                grad[at] = sums[0][o] + 2.0 * pred[at] * sums[1][o] + targ[at] * sums[2][o];
            }
        }
    }
}

@compute @workgroup_size(256)
fn reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var i = lid.x; i < params.num_partials; i += WG) {
        acc += partials[i];
    }
    let total = workgroup_sum(lid.x, acc);
    if (lid.x == 0u) {
        loss[0] = total * params.loss_scale;
    }
}

// SPLIT_H, after adjoint_h: the reflected taps of the columns within r of the left and right.
@compute @workgroup_size(256)
fn border_h(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = params.width;
    let cols = border_count(w);
    let b = lane_walk(block_range(params.planes * params.height * cols, wid.x, nwg.x, WG), lid.x);
    // (row, border column) of step t.
    var pos = walk2(b.x, cols);
    for (var t = b.x; t < b.y; t += LANES) {
        let rb = pos.at;
        pos = step2(pos);
        let x = border_position(rb.y, w);
        let row = rb.x * w;
        let e = row + x;
        let ga = adjoint_reflected(0u, x, w, row, 1u);
        let gb = adjoint_reflected(1u, x, w, row, 1u);
        let gc = adjoint_reflected(2u, x, w, row, 1u);
        let at = params.lead + e;
        grad[at] += ga + 2.0 * pred[at] * gb + targ[at] * gc;
    }
}
