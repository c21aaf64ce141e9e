// Element-wise family driver. A loss file composed after this one defines
//     fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32>
// returning (loss, d loss / d p) of element i (its global flat index), and may read `params.p`
// (hyperparameters) and `state` (loss state kept on the GPU).
//
// Bindings (group 0): 0 pred, 1 targ (the target; `target` is reserved in WGSL) (read); 2 grad,
// 3 loss (one value, or one per element under reduction none), 4 partials (`partial_slots` per
// workgroup of every segment), 5 state, 6 the parameters (`uniforms`). Bindings 0-2, `walk` and
// the other passes that read them come from `elementwise_f32.wgsl` (one element per step),
// `elementwise_vec4.wgsl` (four), `elementwise_half.wgsl` / `elementwise_half4.wgsl` (two and
// four 16-bit floats), or from a loss file of its own (boxes).
// A segment is a slice of the inputs that fits one storage binding; the host dispatches each
// segment with its own bind group, and at most `Gpu::max_workgroups` workgroups, each walking one
// contiguous block of it, so neither the binding-size limit nor the 65,535-workgroup limit is
// ever hit.
// Reductions: per-workgroup partials (a tree in workgroup memory, or per-invocation sums on a CPU
// adapter), then one `reduce` workgroup that sums them in a fixed order; results are identical
// run to run.

struct Params {
    n: u32,            // elements in this segment
    elem_base: u32,    // global index of the segment's first element
    wg_base: u32,      // workgroups of the segments before this one
    num_partials: u32, // workgroups over all segments
    coords: u32,       // size of the last dimension (per-coordinate state)
    k: u32,            // k of the k-th smallest residual (dynamic smooth L1)
    iters: u32,        // history length (dynamic smooth L1)
    total: u32,        // elements over all segments
    grad_scale: f32,   // multiplier of d loss / d p (grad_scale, divided by n under mean)
    loss_scale: f32,   // 1/n under mean, 1 under sum
    pad0: f32,
    pad1: f32,
    p: vec4<f32>,      // loss hyperparameters
    p2: vec4<f32>,     // more hyperparameters, or values derived from them on the host
}

@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<uniform> uniforms: Params;

// The parameters every function reads: a copy of `uniforms` that each entry point takes first.
// Read from the uniform block inside a loop, a parameter is loaded again after every storage
// write on lavapipe (the two could alias as far as it can tell), about a tenth of a streaming
// pass's time there; a private copy stays in registers.
var<private> params: Params;

// Reduction none: write each element's loss instead of reducing.
override PER_ELEMENT: bool = false;
// Finish as sqrt(mean) and leave the gradient's coefficient in state[0] for `apply` (rmse,
// rmsle).
override ROOT: bool = false;

// Row and column, over rows of params.coords elements, of the element `loss_elem` is called for
// (its global index i: i / coords and i % coords). The walks keep them up to date with an addition
// per element; a CPU adapter would divide lane by lane.
var<private> elem_row: u32;
var<private> elem_col: u32;

// (i / coords, i % coords).
fn row_col(i: u32) -> vec2<u32> {
    return div_mod(i, max(params.coords, 1u));
}

// (row, col) `step` = row_col(s) elements further on.
fn advance(rc: vec2<u32>, step: vec2<u32>) -> vec2<u32> {
    return advance_by(rc, step, max(params.coords, 1u));
}

// Sets the (row, col) of the next element `loss_elem` is called for.
fn at_elem(rc: vec2<u32>) {
    elem_row = rc.x;
    elem_col = rc.y;
}

// Partial slots of one workgroup of the fused pass: one, its tree sum, on a GPU; on a CPU adapter
// (LANES < WG) one per invocation, so that the pass has no barrier: lavapipe runs a kernel with a
// barrier anywhere in it as coroutines, about a tenth slower over the whole walk. The host sizes
// the partials alike (`partial_slots` in elementwise.rs).
fn partial_slots() -> u32 {
    return select(1u, WG, LANES < WG);
}

// The partial slot of invocation `lid` of workgroup `wid` on a CPU adapter (LANES < WG).
fn invocation_slot(lid: u32, wid: u32) -> u32 {
    return (params.wg_base + wid) * WG + lid;
}

// Records this workgroup's sum of `acc` in its partial slots (reductions other than none). Call
// in uniform control flow.
fn write_partial(lid: u32, wid: u32, acc: f32) {
    if (!PER_ELEMENT) {
        if (LANES < WG) {
            partials[invocation_slot(lid, wid)] = acc;
        } else {
            let s = workgroup_sum(lid, acc);
            if (lid == 0u) {
                partials[params.wg_base + wid] = s;
            }
        }
    }
}

// The fused pass: each invocation walks its elements (`walk`, from the step-width file or the
// loss file composed after this one) and the workgroup's loss sum goes to its partial slot.
@compute @workgroup_size(256)
fn fused(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    write_partial(lid.x, wid.x, walk(lid.x, wid.x, nwg.x));
}

// Second pass of ROOT losses: scales the gradient `fused` wrote (d (r^2) / dp times grad_scale)
// by the coefficient `reduce` left in state[0], once the total is known. `steps` and
// `scale_grad` come from the step-width file.
@compute @workgroup_size(256)
fn apply(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    params = uniforms;
    let b = lane_walk(block_range(steps(), wid.x, nwg.x, WG), lid.x);
    let coef = state[0];
    for (var i = b.x; i < b.y; i += LANES) {
        scale_grad(i, coef);
    }
}

@compute @workgroup_size(256)
fn reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    params = uniforms;
    var acc = 0.0;
    for (var i = lid.x; i < params.num_partials * partial_slots(); i += WG) {
        acc += partials[i];
    }
    let total = workgroup_sum(lid.x, acc);
    if (lid.x == 0u) {
        let mean = total * params.loss_scale;
        if (ROOT) {
            let root = sqrt(mean);
            loss[0] = root;
            // d sqrt(m) / dm = 1 / (2 sqrt(m)), times 1/n; the gradient is 0 where the loss is 0
            // (every residual, hence every derivative `fused` wrote, is 0 there), and a NaN total
            // stays NaN.
            state[0] = select(0.5 * params.loss_scale / root, 0.0, root == 0.0);
        } else {
            loss[0] = mean;
        }
    }
}
