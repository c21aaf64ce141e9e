//! The conformance suite, generated from the loss registry: for every registered loss, the
//! reference gradient against finite differences, the GPU against the reference over shapes,
//! variants and reductions (including inputs beyond the dispatch and storage-binding limits),
//! extreme inputs, NaN propagation, empty input and every bad input.

use std::sync::{Condvar, Mutex, MutexGuard};

use ndarray::{ArrayD, IxDyn};
use wgloss::{DType, Error, Gpu, LossOutput, Reduction, Tensor};
use wgloss_suite::check::{compare, compare_output, to_f64, REDUCED};
use wgloss_suite::registry::{Inputs, Layout, Targets, EMBEDDING_SHAPES};
use wgloss_suite::{shared_gpu, Entry, REGISTRY};

/// Sizes straddling workgroup boundaries, then one past a single binding's worth of workgroups.
const SHAPES: &[usize] = &[1, 7, 255, 256, 257, 100_003];
/// More than 65,535 workgroups of 256 elements.
const BEYOND_DISPATCH: usize = 65_535 * 256 + 257;
/// More than lavapipe's 128 MiB storage binding in one f32 tensor.
const BEYOND_BINDING: usize = (1 << 25) + 257;

/// Cases of hundreds of MiB (up to about 2.7 GB of host memory each on a CPU adapter) run at
/// most `LARGE_AT_ONCE` at a time, whatever the number of test threads.
const LARGE_AT_ONCE: usize = 2;
static LARGE_RUNNING: Mutex<usize> = Mutex::new(0);
static LARGE_DONE: Condvar = Condvar::new();

/// A place among the large cases running, held until dropped.
struct LargeCase;

impl LargeCase {
    fn enter() -> Self {
        let mut running = lock(&LARGE_RUNNING);
        while *running >= LARGE_AT_ONCE {
            running = LARGE_DONE.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        LargeCase
    }
}

impl Drop for LargeCase {
    fn drop(&mut self) {
        *lock(&LARGE_RUNNING) -= 1;
        LARGE_DONE.notify_one();
    }
}

/// The lock, also after a failed test panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn entry(name: &str) -> &'static Entry {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"))
}

fn inputs(entry: &Entry, n: usize, seed: u64) -> Inputs {
    entry.inputs(n, seed)
}

fn tolerance(reduction: Reduction) -> wgloss_suite::check::Tolerance {
    wgloss_suite::check::loss_tolerance(reduction)
}

/// The reference on `inputs` (and `pred` in place of its predictions).
fn reference(
    instance: &mut wgloss_suite::Instance,
    inputs: &Inputs,
    pred: &[f32],
) -> wgloss_ref::LossGrad {
    let p = to_f64(pred, &inputs.pred_shape);
    let t = to_f64(&inputs.target, &inputs.target_shape);
    (instance.reference)(p.view(), t.view())
}

/// Runs one call on the GPU and the reference; returns an error message on mismatch.
fn run_and_compare(
    entry: &Entry,
    gpu: &Gpu,
    instance: &mut wgloss_suite::Instance,
    reduction: Reduction,
    inputs: &Inputs,
    what: &str,
) -> Result<(), String> {
    let want = reference(instance, inputs, &inputs.pred);
    run_against(entry, gpu, instance, reduction, inputs, &want, what)
}

/// Runs one call on the GPU and compares it with `want`, the reference on `inputs`.
fn run_against(
    entry: &Entry,
    gpu: &Gpu,
    instance: &wgloss_suite::Instance,
    reduction: Reduction,
    inputs: &Inputs,
    want: &wgloss_ref::LossGrad,
    what: &str,
) -> Result<(), String> {
    let (p, t) = inputs.upload(gpu).map_err(|e| format!("{what}: {e}"))?;
    let out = instance
        .loss
        .compute(gpu, &p, &t)
        .map_err(|e| format!("{what}: {e}"))?;
    drop((p, t));
    let failures = compare_output(gpu, what, &out, want, tolerance(reduction), entry.tolerance);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// The shared GPU with one and with four elements per step: both paths are checked on every
/// adapter, whichever the adapter would pick (one width for losses with a single path).
fn widths(gpu: &Gpu, entry: &Entry) -> Vec<Gpu> {
    if entry.vec4 {
        vec![gpu.with_vec4(false), gpu.with_vec4(true)]
    } else {
        vec![gpu.with_vec4(false)]
    }
}

/// Every way a workgroup's invocations can walk its block, beyond the adapter's own
/// ([`Gpu::lanes`]: 2 on CPU adapters, 256 on GPUs): one invocation per run, a CPU's SIMD width and
/// the whole workgroup.
fn other_walks(gpu: &Gpu) -> impl Iterator<Item = Gpu> + '_ {
    [1, 2, 8, 256]
        .into_iter()
        .filter(move |&lanes| lanes != gpu.lanes())
        .map(move |lanes| gpu.with_lanes(lanes))
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The reference gradient equals central finite differences of the reference loss (f64).
fn reference_grad_matches_finite_differences(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for n in [1, 7, 33] {
        for (v, label) in entry.variants.iter().enumerate() {
            for &reduction in entry.reductions {
                let what = format!("{} {label} {reduction:?} n={n}", entry.name);
                let mut inst = (entry.make)(gpu, v, reduction).expect("valid variant");
                let inputs = inputs(entry, n, 11 + n as u64);
                let analytic = reference(&mut inst, &inputs, &inputs.pred);
                let p = to_f64(&inputs.pred, &inputs.pred_shape);
                let t = to_f64(&inputs.target, &inputs.target_shape);
                let frozen = (inst.freeze)(&p, &t);
                let value = |p: &ArrayD<f64>| frozen(p.view()).loss.sum() * inst.grad_scale;
                let mut fd = ArrayD::zeros(IxDyn(&inputs.pred_shape));
                for i in 0..p.len() {
                    let h = 1e-6 * p.as_slice().unwrap()[i].abs().max(1.0);
                    let mut plus = p.clone();
                    plus.as_slice_mut().unwrap()[i] += h;
                    let mut minus = p.clone();
                    minus.as_slice_mut().unwrap()[i] -= h;
                    fd.as_slice_mut().unwrap()[i] = (value(&plus) - value(&minus)) / (2.0 * h);
                }
                let scale = fd
                    .iter()
                    .fold(0.0f64, |m: f64, x: &f64| m.max(x.abs()))
                    .max(1e-12);
                for (i, (a, f)) in analytic.grad.iter().zip(fd.iter()).enumerate() {
                    if (a - f).abs() > 1e-6 * scale + 1e-5 * f.abs() {
                        failures.push(format!(
                            "{what}: grad[{i}] = {a:e}, finite differences {f:e}"
                        ));
                    }
                }
            }
        }
    }
    report(failures);
}

/// GPU loss and gradient equal the reference over shapes, variants and reductions; stateful
/// losses run three consecutive calls so that their GPU state is checked as it evolves.
/// Whether the suite runs `entry` on the (N, D) grid [`EMBEDDING_SHAPES`] (losses over the
/// batch's pairs, or a batch against its classes) rather than on element counts.
fn on_grid(entry: &Entry) -> bool {
    entry.layout.on_grid()
}

fn matches_reference(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    let shapes: Vec<Vec<usize>> = match entry.layout {
        Layout::Heads { classes, .. } => EMBEDDING_SHAPES
            .iter()
            .map(|&[n, d]| vec![n, d, classes])
            .collect(),
        _ if on_grid(entry) => EMBEDDING_SHAPES.iter().map(|s| s.to_vec()).collect(),
        _ => SHAPES.iter().map(|&n| entry.shape(n)).collect(),
    };
    for (gpu, shape) in widths(gpu, entry)
        .iter()
        .flat_map(|g| shapes.iter().map(move |s| (g, s)))
    {
        let n: usize = shape.iter().product();
        for (v, label) in entry.variants.iter().enumerate() {
            for &reduction in entry.reductions {
                let mut inst = (entry.make)(gpu, v, reduction).expect("valid variant");
                // Three calls where each advances a GPU state, but one for the largest
                // all-pairs batch (N² work on a software adapter); one for a stateless loss.
                let steps = if !inst.stateful || (on_grid(entry) && shape[0] >= 4096) {
                    1
                } else {
                    3
                };
                for step in 0..steps {
                    let inputs = entry.inputs_shaped(shape, 1000 * n as u64 + step);
                    let what = format!(
                        "{} {label} {reduction:?} {:?} step {step} vec4={}",
                        entry.name,
                        inputs.pred_shape,
                        gpu.vec4()
                    );
                    if let Err(e) =
                        run_and_compare(entry, gpu, &mut inst, reduction, &inputs, &what)
                    {
                        failures.push(e);
                    }
                }
            }
        }
    }
    report(failures);
}

/// A prediction shape for `entry`: row `k` of the (N, D) grid for the losses on it (with the
/// heads' class count), else `n` elements in the entry's layout.
fn shape_of(entry: &Entry, k: usize, n: usize) -> Vec<usize> {
    match entry.layout {
        Layout::Heads { classes, .. } => {
            let [rows, d] = EMBEDDING_SHAPES[k];
            vec![rows, d, classes]
        }
        _ if on_grid(entry) => EMBEDDING_SHAPES[k].to_vec(),
        _ => entry.shape(n),
    }
}

/// The other walks of a workgroup's block (see [`other_walks`]) give the same values, at both
/// step widths: one shape spanning many workgroups, the first variant, every reduction.
fn every_walk_matches_reference(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let shape = shape_of(entry, 2, 100_003);
    let inputs = entry.inputs_shaped(&shape, 11);
    let mut failures = Vec::new();
    for &reduction in entry.reductions {
        // One reference serves every walk (stateful losses start afresh in each instance).
        let mut want = None;
        for gpu in other_walks(gpu).flat_map(|g| widths(&g, entry)) {
            let mut inst = (entry.make)(&gpu, 0, reduction).expect("valid variant");
            let want = want.get_or_insert_with(|| reference(&mut inst, &inputs, &inputs.pred));
            let what = format!(
                "{} {reduction:?} {:?} lanes={} vec4={}",
                entry.name,
                inputs.pred_shape,
                gpu.lanes(),
                gpu.vec4()
            );
            if let Err(e) = run_against(entry, &gpu, &inst, reduction, &inputs, want, &what) {
                failures.push(e);
            }
        }
    }
    report(failures);
}

/// On a device with wgpu's default limits (eight storage buffers per stage, 256-byte view
/// alignment, as a caller's engine may hand to `Gpu::from_wgpu`) a small input matches the
/// reference, the first variant and reduction.
fn runs_under_default_limits(entry: &Entry) {
    let Some(gpu) = wgloss_suite::default_limits_gpu() else {
        return;
    };
    let shape = shape_of(entry, 0, 257);
    let inputs = entry.inputs_shaped(&shape, 13);
    let reduction = entry.reductions[0];
    let mut inst = (entry.make)(gpu, 0, reduction).expect("valid variant");
    let what = format!(
        "{} {:?} under default limits",
        entry.name, inputs.pred_shape
    );
    let want = reference(&mut inst, &inputs, &inputs.pred);
    if let Err(e) = run_against(entry, gpu, &inst, reduction, &inputs, &want, &what) {
        panic!("{e}");
    }
}

/// On a device with one storage buffer per stage fewer than the kernels may bind, a call is
/// `Error::StorageBindings` naming both counts, with nothing written (or the stateful loss's
/// construction is).
fn few_storage_buffers_is_a_typed_error(entry: &Entry) {
    let Some(gpu) = wgloss_suite::few_storage_buffers_gpu() else {
        return;
    };
    let needed = Gpu::STORAGE_BUFFERS;
    let expected = |r: &wgloss::Result<()>| matches!(r, Err(Error::StorageBindings { needed: k, got }) if *k == needed && *got == needed - 1);
    let reduction = entry.reductions[0];
    let inst = match (entry.make)(gpu, 0, reduction) {
        Ok(inst) => inst,
        Err(e) => {
            let r = Err(e);
            assert!(expected(&r), "{}: {r:?}", entry.name);
            return;
        }
    };
    let inputs = inputs(entry, 40, 5);
    let (p, t) = inputs.upload(gpu).expect("uploads");
    let out = sentinel_output(gpu, &inputs.pred_shape, &inputs.loss_shape(reduction));
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let r = inst.loss.encode(gpu, &mut encoder, &p, &t, &out);
    gpu.submit_and_wait(encoder).expect("submits");
    assert!(expected(&r), "{}: {r:?}", entry.name);
    assert!(
        untouched(gpu, &out),
        "{}: a rejected call wrote",
        entry.name
    );
}

/// Inputs needing more than 65,535 workgroups, and inputs larger than one storage binding
/// (128 MiB on lavapipe): split, not rejected, and still equal to the reference.
fn matches_reference_beyond_limits(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    if on_grid(entry) {
        return in_batch_limits_are_typed_errors(gpu, entry);
    }
    let _large = LargeCase::enter();
    let max_binding = gpu.limits().max_storage_buffer_binding_size;
    let mut failures = Vec::new();
    for n in [BEYOND_DISPATCH, BEYOND_BINDING] {
        let inputs = inputs(entry, n, 7 + n as u64);
        // Every reduction past the binding limit; the default one past the dispatch limit.
        let reductions = if n == BEYOND_BINDING {
            entry.reductions
        } else {
            &entry.reductions[..1]
        };
        for &reduction in reductions {
            // One reference serves both widths (it is the costly half on a CPU).
            let mut want = None;
            for gpu in &widths(gpu, entry) {
                let mut inst = (entry.make)(gpu, entry.limits_variant, reduction).expect("variant");
                let want = want.get_or_insert_with(|| reference(&mut inst, &inputs, &inputs.pred));
                let what = format!(
                    "{} {reduction:?} {:?} vec4={}",
                    entry.name,
                    inputs.pred_shape,
                    gpu.vec4()
                );
                if let Err(e) = run_against(entry, gpu, &inst, reduction, &inputs, want, &what) {
                    failures.push(e);
                }
            }
        }
    }
    if 4 * BEYOND_BINDING as u64 <= max_binding {
        eprintln!("note: this adapter binds {max_binding} bytes at once; the split path is exercised on lavapipe");
    }
    report(failures);
}

/// Losses over all pairs of a batch cost N² per call, so batches past the dispatch limit
/// (N / 16 > 65,535 anchor blocks) or past one binding (the embeddings and their normalised copy)
/// are rejected with a typed error, before anything is written.
fn in_batch_limits_are_typed_errors(gpu: &Gpu, entry: &Entry) {
    let _large = LargeCase::enter();
    let max_floats = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
    let mut failures = Vec::new();
    let shapes = match entry.layout {
        // Heads: the class weights past one binding are split, not rejected (tests/metric.rs).
        Layout::Heads { classes, .. } => vec![vec![65_535 * 16 + 1, 1, classes]],
        _ => vec![vec![65_535 * 16 + 1, 1], vec![2, max_floats / 2]],
    };
    for shape in shapes {
        let inputs = entry.inputs_shaped(&shape, 3);
        failures.extend(rejected_with_nothing_written(gpu, entry, &inputs));
    }
    report(failures);
}

/// `inputs` are rejected by the default variant with `Error::InvalidShape` and nothing written.
/// On a device whose `max_buffer_size` is under the stacked inputs (an H100: 2 GiB bindings, and
/// info_nce's three inputs), the upload itself is refused with that typed error.
fn rejected_with_nothing_written(gpu: &Gpu, entry: &Entry, inputs: &Inputs) -> Option<String> {
    let (p, t) = match inputs.upload(gpu) {
        Err(Error::InvalidShape { why, .. }) if why.contains("max_buffer_size") => return None,
        r => r.unwrap(),
    };
    let reduction = entry.reductions[0];
    let out = sentinel_output(gpu, &inputs.pred_shape, &inputs.loss_shape(reduction));
    let inst = (entry.make)(gpu, 0, reduction).expect("default variant");
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let r = inst.loss.encode(gpu, &mut encoder, &p, &t, &out);
    gpu.submit_and_wait(encoder).unwrap();
    let shape = &inputs.pred_shape;
    if !matches!(r, Err(Error::InvalidShape { .. })) {
        return Some(format!(
            "{} {shape:?}: expected InvalidShape, got {r:?}",
            entry.name
        ));
    }
    (!untouched(gpu, &out)).then(|| format!("{} {shape:?}: a rejected call wrote", entry.name))
}

/// Caller-owned outputs and inputs at non-zero offsets of shared buffers, through `encode`.
/// 16-bit inputs (F16 and BF16): the losses that take them match the reference evaluated on the
/// rounded inputs, their gradient (of the inputs' type) within one step of the type of the
/// reference's, over odd and even lengths (rows of few and of many classes), every reduction,
/// both step widths, the first variant; every other loss rejects them with a dtype error.
fn half_inputs_match_reference(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for dtype in [DType::F16, DType::BF16] {
        let shapes: Vec<Vec<usize>> = match entry.layout {
            // Contiguous rows: one invocation per row for few classes, a workgroup per row
            // beyond (labels from the entry's seven classes); odd class counts share words
            // between rows (an odd row count leaves the last row's word half padding). Trailing
            // dims of an even size: an invocation per pair of rows, of few or many classes; of
            // an odd size: the gradient staged in f32 and packed after the rows (an odd total
            // leaves the last word's high half padding).
            // The segmentation losses (multiclass, the entry's five classes): trailing dims of
            // an even size, one image or several, with segments of whole images; of an odd
            // size (the gradient staged in f32 and packed).
            Layout::Classes { .. } if entry.half && entry.family.starts_with("F4") => vec![
                vec![1, 5, 2],
                vec![3, 5, 12],
                vec![2, 8, 64],
                vec![5, 6, 1, 10],
                vec![3, 5, 7],
                vec![2, 5, 3, 3],
            ],
            Layout::Classes { .. } if entry.half => vec![
                vec![1, 8],
                vec![257, 8],
                vec![3, 64],
                vec![40, 1030],
                vec![1, 7],
                vec![257, 9],
                vec![3, 65],
                vec![40, 1031],
                vec![1, 7, 2],
                vec![3, 8, 6],
                vec![2, 45, 4, 3],
                vec![3, 7, 5],
                vec![2, 8, 3, 3],
                vec![1, 40, 1, 3],
            ],
            // The in-batch losses (all pairs of rows): a few rows and a few dozen (even, for
            // views mode).
            Layout::Embeddings { dim, .. } if entry.half => vec![vec![8, dim], vec![34, dim]],
            _ => [1, 7, 257, 100_003].map(|n| entry.shape(n)).to_vec(),
        };
        for (seed, shape) in shapes.iter().enumerate() {
            let mut inputs = entry.inputs_shaped(shape, 5 + seed as u64);
            let round = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = dtype.round(*x));
            round(&mut inputs.pred);
            let labels = inputs.labels && !inputs.values;
            if !labels {
                round(&mut inputs.target);
            }
            let (p32, t32) = inputs.upload(gpu).expect("upload");
            let p = Tensor::from_slice_as(gpu, &inputs.pred, &inputs.pred_shape, dtype)
                .expect("upload");
            let t = if labels {
                t32
            } else {
                Tensor::from_slice_as(gpu, &inputs.target, &inputs.target_shape, dtype)
                    .expect("upload")
            };
            drop(p32);
            // Both widths whatever the entry's generic shapes take: the class rows of a multiple
            // of four classes have a four-per-step path here.
            let runs = [gpu.with_vec4(false), gpu.with_vec4(true)]
                .into_iter()
                .flat_map(|g| entry.reductions.iter().map(move |&r| (g.clone(), r)));
            for (gpu, reduction) in runs {
                let gpu = &gpu;
                let what = format!(
                    "{} {dtype:?} {reduction:?} {:?} vec4={}",
                    entry.name,
                    inputs.pred_shape,
                    gpu.vec4()
                );
                let mut inst = (entry.make)(gpu, 0, reduction).expect("valid variant");
                if !entry.half {
                    match inst.loss.compute(gpu, &p, &t) {
                        Err(Error::DTypeMismatch { got, .. }) if got == dtype => {}
                        other => failures.push(format!("{what}: not rejected: {other:?}")),
                    }
                    continue;
                }
                // A stateful loss (dynamic smooth L1's β history) for three consecutive calls,
                // its state advancing on the GPU and in the reference alike.
                let calls = if inst.stateful { 3 } else { 1 };
                for call in 0..calls {
                    let what = format!("{what} call {call}");
                    let want = reference(&mut inst, &inputs, &inputs.pred);
                    let out = match inst.loss.compute(gpu, &p, &t) {
                        Ok(out) => out,
                        Err(e) => {
                            failures.push(format!("{what}: {e}"));
                            break;
                        }
                    };
                    if out.grad.dtype() != dtype {
                        failures.push(format!("{what}: gradient of {:?}", out.grad.dtype()));
                    }
                    let (loss_tol, grad_tol) = (tolerance(reduction), entry.tolerance);
                    failures.extend(compare_output(gpu, &what, &out, &want, loss_tol, grad_tol));
                }
            }
            if !entry.half {
                break;
            }
        }
    }
    report(failures);
}

fn encode_into_views_matches_reference(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let mut failures = Vec::new();
    let cases = widths(gpu, entry)
        .into_iter()
        .flat_map(|g| entry.reductions.iter().map(move |&r| (g.clone(), r)));
    for (gpu, reduction) in cases {
        let gpu = &gpu;
        let mut inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let inputs = inputs(entry, 1001, 5);
        let slot = |len: usize| len.div_ceil(align) * align;
        let (np, nt) = (inputs.pred.len(), inputs.target.len());
        // One buffer: [pad | pred | target], one for outputs: [pad | grad | loss].
        let mut host = vec![0.0f32; align + slot(np) + slot(nt)];
        host[align..align + np].copy_from_slice(&inputs.pred);
        for (i, &t) in inputs.target.iter().enumerate() {
            host[align + slot(np) + i] = if inputs.labels && !inputs.values {
                f32::from_bits(t as i32 as u32)
            } else {
                t
            };
        }
        let packed = Tensor::from_slice(gpu, &host, &[host.len()]).unwrap();
        let outputs = Tensor::zeros(gpu, &[align + slot(np) + slot(np.max(nt))]).unwrap();
        let view = |t: &Tensor, at: usize, shape: &[usize], dtype| {
            Tensor::new_typed(t.buffer().clone(), 4 * at as u64, shape, dtype).unwrap()
        };
        let out = LossOutput {
            grad: view(&outputs, align, &inputs.pred_shape, DType::F32),
            loss: view(
                &outputs,
                align + slot(np),
                &inputs.loss_shape(reduction),
                DType::F32,
            ),
            status: Tensor::zeros_typed(gpu, &[1], DType::U32).unwrap(),
        };
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let pv = view(&packed, align, &inputs.pred_shape, DType::F32);
        let tv = view(
            &packed,
            align + slot(np),
            &inputs.target_shape,
            inputs.target_dtype(),
        );
        inst.loss.encode(gpu, &mut encoder, &pv, &tv, &out).unwrap();
        gpu.submit_and_wait(encoder).unwrap();
        let want = reference(&mut inst, &inputs, &inputs.pred);
        let what = format!("{} {reduction:?} encode vec4={}", entry.name, gpu.vec4());
        failures.extend(compare_output(
            gpu,
            &what,
            &out,
            &want,
            tolerance(reduction),
            entry.tolerance,
        ));
        let all = outputs.to_vec(gpu).unwrap();
        if all[..align].iter().any(|&x| x != 0.0) {
            failures.push(format!("{what}: wrote before the grad view"));
        }
    }
    report(failures);
}

/// Inputs of ±1e4 give finite loss and gradients (where the math is finite) that equal the
/// reference.
fn extreme_inputs_are_finite(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for &reduction in entry.reductions {
        let mut inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let mut inputs = inputs(entry, 64, 4);
        let len = inputs.pred.len();
        inputs.pred = (0..len)
            .map(|i| if entry.domain.0 >= 0.0 || i % 2 == 0 { 1e4 } else { -1e4 } * (1.0 + i as f32 / 64.0))
            .collect();
        if entry.targets == Targets::Uniform && !inputs.labels {
            inputs.target = (0..len).map(|i| (i % 3) as f32).collect();
        }
        let what = format!("{} {reduction:?} inputs of 1e4", entry.name);
        let (p, t) = inputs.upload(gpu).unwrap();
        let out = inst.loss.compute(gpu, &p, &t).unwrap();
        let (loss, grad) = (out.loss.to_vec(gpu).unwrap(), out.grad.to_vec(gpu).unwrap());
        if entry.extreme_finite && !loss.iter().chain(&grad).all(|x| x.is_finite()) {
            failures.push(format!("{what}: non-finite loss or gradient"));
        }
        let want = reference(&mut inst, &inputs, &inputs.pred);
        let checks = [
            compare(
                &format!("{what} loss"),
                &loss,
                want.loss.view(),
                tolerance(reduction),
            ),
            compare(
                &format!("{what} grad"),
                &grad,
                want.grad.view(),
                entry.extreme_tolerance,
            ),
        ];
        failures.extend(checks.into_iter().filter_map(Result::err));
    }
    report(failures);
}

/// A NaN input element makes the loss NaN (the loss it feeds under reduction none).
fn nan_propagates(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for &reduction in entry.reductions {
        let inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let mut inputs = inputs(entry, 64, 3);
        inputs.pred[5] = f32::NAN;
        if inputs.labels && !inputs.values && !inputs.sequences {
            // The row of element 5 must not be ignored.
            let row = inputs.loss_index(5);
            inputs.target[row] = 0.0;
        }
        let (p, t) = inputs.upload(gpu).unwrap();
        let out = inst.loss.compute(gpu, &p, &t).unwrap();
        let loss = out.loss.to_vec(gpu).unwrap();
        let at = if reduction == Reduction::None {
            inputs.loss_index(5)
        } else {
            0
        };
        if !loss[at].is_nan() {
            failures.push(format!(
                "{} {reduction:?}: loss[{at}] = {} for a NaN input",
                entry.name, loss[at]
            ));
        }
    }
    report(failures);
}

/// An empty input gives loss 0 and no gradient where the loss allows it, else `Error::Empty`.
fn empty_input(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    for &reduction in entry.reductions {
        let mut inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let inputs = inputs(entry, 0, 1);
        let (p, t) = inputs.upload(gpu).unwrap();
        let result = inst.loss.compute(gpu, &p, &t);
        if entry.allows_empty {
            let out = result.unwrap_or_else(|e| panic!("{} {reduction:?}: {e}", entry.name));
            assert!(out.grad.is_empty());
            let want = reference(&mut inst, &inputs, &inputs.pred);
            compare(
                "empty loss",
                &out.loss.to_vec(gpu).unwrap(),
                want.loss.view(),
                REDUCED,
            )
            .unwrap();
        } else {
            assert!(
                matches!(result, Err(Error::Empty { .. })),
                "{}: {result:?}",
                entry.name
            );
        }
    }
}

/// Outputs filled with a sentinel, for checking that a rejected call writes nothing.
fn sentinel_output(gpu: &Gpu, grad_shape: &[usize], loss_shape: &[usize]) -> LossOutput {
    let sentinel = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_slice(gpu, &vec![7.0; n], shape).unwrap()
    };
    LossOutput {
        loss: sentinel(loss_shape),
        grad: sentinel(grad_shape),
        status: Tensor::zeros_typed(gpu, &[1], DType::U32).unwrap(),
    }
}

fn untouched(gpu: &Gpu, out: &LossOutput) -> bool {
    [&out.loss, &out.grad]
        .iter()
        .all(|t| t.to_vec(gpu).unwrap().iter().all(|&x| x == 7.0))
}

/// Each bad input gets its typed error before anything is written: the outputs keep the
/// sentinel they were filled with.
fn bad_input_is_rejected_and_nothing_written(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let reduction = entry.reductions[0];
    let inputs = inputs(entry, 40, 9);
    let (pred, target) = inputs.upload(gpu).unwrap();
    let out = sentinel_output(gpu, &inputs.pred_shape, &inputs.loss_shape(reduction));
    let mut longer = inputs.clone();
    longer.target_shape[0] += 1;
    longer.target = vec![0.0; longer.target_shape.iter().product()];
    let (_, other) = longer.upload(gpu).unwrap();
    let mut wrong = inputs.pred_shape.clone();
    wrong[0] += 1;
    let wrong_grad = sentinel_output(gpu, &wrong, &inputs.loss_shape(reduction));

    let inst = (entry.make)(gpu, 0, reduction).expect("default variant");
    let mut cases: Vec<(String, wgloss::Result<()>, &'static str)> = Vec::new();
    let encode = |loss: &dyn wgloss::Loss, t: &Tensor, out: &LossOutput| {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let r = loss.encode(gpu, &mut encoder, &pred, t, out);
        gpu.submit_and_wait(encoder).unwrap();
        r
    };
    // (A stacked margin head takes its N from the labels: the heads' own check of the label
    // count is in tests/heads.rs. A triplet has no target.)
    let reads_target = !matches!(
        entry.layout,
        Layout::Heads { .. } | Layout::Tuples { target: false, .. }
    );
    if reads_target {
        cases.push((
            "target shape".into(),
            encode(&*inst.loss, &other, &out),
            "target",
        ));
    }
    cases.push((
        "grad shape".into(),
        encode(&*inst.loss, &target, &wrong_grad),
        "grad",
    ));
    for bad in entry.bad_params {
        let r = (bad.build)(gpu).and_then(|loss| encode(&*loss, &target, &out));
        cases.push((format!("parameter {}", bad.param), r, bad.param));
    }
    let mut failures = Vec::new();
    for (what, result, name) in cases {
        let ok = match &result {
            Err(Error::ShapeMismatch { name: n, .. })
            | Err(Error::InvalidParameter { name: n, .. }) => *n == name,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} {what}: expected a typed error naming `{name}`, got {result:?}",
                entry.name
            ));
        }
    }
    if !untouched(gpu, &out) || !untouched(gpu, &wrong_grad) {
        failures.push(format!(
            "{}: an output was written by a rejected call",
            entry.name
        ));
    }
    report(failures);
}

/// A label outside [0, C) that is not the ignore index is reported with its position, by
/// `compute` as `Error::LabelOutOfRange` and by `encode` in the status word, and the kernel
/// writes no output.
fn out_of_range_label_is_reported(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let (Layout::Classes { classes, .. } | Layout::Heads { classes, .. }) = entry.layout else {
        panic!("{} has no labels", entry.name)
    };
    // Each bad value under one of the loss's reductions in turn.
    let bad_values = [classes as f32, -1.0, 1e6];
    for (k, bad) in bad_values.into_iter().enumerate() {
        let reduction = entry.reductions[k % entry.reductions.len()];
        let inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let mut inputs = inputs(entry, 700, 2);
        inputs.target[40] = bad;
        inputs.target[90] = bad;
        let (p, t) = inputs.upload(gpu).unwrap();
        match inst.loss.compute(gpu, &p, &t) {
            Err(Error::LabelOutOfRange {
                position: 40,
                label,
                classes: c,
            }) => {
                assert_eq!((label, c), (bad as i64, classes));
            }
            other => panic!(
                "{} {reduction:?}: expected the label at 40 to be reported, got {other:?}",
                entry.name
            ),
        }
        let out = sentinel_output(gpu, &inputs.pred_shape, &inputs.loss_shape(reduction));
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        inst.loss.encode(gpu, &mut encoder, &p, &t, &out).unwrap();
        gpu.submit_and_wait(encoder).unwrap();
        assert_eq!(out.first_bad_label(gpu).unwrap(), Some(40));
        let grad_kept = out.grad.to_vec(gpu).unwrap().iter().all(|&x| x == 7.0);
        assert!(
            grad_kept,
            "{} {reduction:?}: the gradient was written despite a bad label",
            entry.name
        );
    }
}

macro_rules! conformance {
    (losses: [$($name:ident),* $(,)?] label_losses: [$($lname:ident),* $(,)?]) => {
        $(conformance!(@module $name {});)*
        $(conformance!(@module $lname {
            #[test]
            fn out_of_range_label_is_reported() {
                super::out_of_range_label_is_reported(entry());
            }
        });)*

        /// Every registered loss has its conformance tests, and nothing else is listed.
        #[test]
        fn every_registered_loss_is_tested() {
            let mut tested = vec![$(stringify!($name),)* $(stringify!($lname),)*];
            let mut registered: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
            tested.sort_unstable();
            registered.sort_unstable();
            assert_eq!(registered, tested);
        }
    };
    (@module $name:ident { $($extra:item)* }) => {
        mod $name {
            fn entry() -> &'static wgloss_suite::Entry {
                super::entry(stringify!($name))
            }
            #[test]
            fn reference_grad_matches_finite_differences() {
                super::reference_grad_matches_finite_differences(entry());
            }
            #[test]
            fn matches_reference() {
                super::matches_reference(entry());
            }
            #[test]
            fn every_walk_matches_reference() {
                super::every_walk_matches_reference(entry());
            }
            #[test]
            fn matches_reference_beyond_limits() {
                super::matches_reference_beyond_limits(entry());
            }
            #[test]
            fn runs_under_default_limits() {
                super::runs_under_default_limits(entry());
            }
            #[test]
            fn few_storage_buffers_is_a_typed_error() {
                super::few_storage_buffers_is_a_typed_error(entry());
            }
            #[test]
            fn encode_into_views_matches_reference() {
                super::encode_into_views_matches_reference(entry());
            }
            #[test]
            fn half_inputs_match_reference() {
                super::half_inputs_match_reference(entry());
            }
            #[test]
            fn extreme_inputs_are_finite() {
                super::extreme_inputs_are_finite(entry());
            }
            #[test]
            fn nan_propagates() {
                super::nan_propagates(entry());
            }
            #[test]
            fn empty_input() {
                super::empty_input(entry());
            }
            #[test]
            fn bad_input_is_rejected_and_nothing_written() {
                super::bad_input_is_rejected_and_nothing_written(entry());
            }
            $($extra)*
        }
    };
}

conformance! {
    losses: [
        mae,
        mse,
        rmse,
        rmsle,
        log_cosh,
        huber,
        smooth_l1,
        quantile,
        balanced_l1,
        dynamic_smooth_l1,
        self_adjusting_smooth_l1,
        iou,
        giou,
        diou,
        ciou,
        eiou,
        siou,
        bce_with_logits,
        sigmoid_focal,
        hinge,
        squared_hinge,
        smoothed_hinge,
        ramp,
        exponential,
        ghm_c,
        ssim,
        lovasz_hinge,
        supcon,
        nt_xent,
        cosine_embedding,
        contrastive,
        triplet,
        info_nce,
        contrastive_batch,
        triplet_batch_hard,
        triplet_semi_hard,
        ctc,
        cycle_consistency,
        diffusion_mse,
        gan_generator,
        gan_discriminator,
        gaussian_kl,
        gradient_penalty,
        kl_div,
        perceptual,
        score_matching,
        sinkhorn,
        style,
    ]
    label_losses: [
        cross_entropy,
        poly1,
        softmax_focal,
        multiclass_hinge,
        dice,
        jaccard,
        tversky,
        combo,
        sensitivity_specificity,
        lovasz_softmax,
        cosface,
        arcface,
        sphereface,
        adaface,
    ]
}
