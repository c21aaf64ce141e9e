//! The conformance suite, generated from the loss registry: for every registered loss, the
//! reference gradient against finite differences, the GPU against the reference over shapes,
//! variants and reductions (including inputs beyond the dispatch and storage-binding limits),
//! extreme inputs, NaN propagation, empty input and every bad input.

use std::sync::Mutex;

use ndarray::{ArrayD, IxDyn};
use wgloss::{Error, Gpu, LossOutput, Reduction, Tensor};
use wgloss_suite::check::{compare, to_f64, ELEMENTWISE, REDUCED};
use wgloss_suite::{shared_gpu, Entry, REGISTRY};

/// Sizes straddling workgroup boundaries, then one past a single binding's worth of workgroups.
const SHAPES: &[usize] = &[1, 7, 255, 256, 257, 100_003];
/// More than 65,535 workgroups of 256 elements.
const BEYOND_DISPATCH: usize = 65_535 * 256 + 257;
/// More than lavapipe's 128 MiB storage binding in one f32 tensor.
const BEYOND_BINDING: usize = 40_000_003;

/// Cases of hundreds of MiB run one at a time.
static LARGE: Mutex<()> = Mutex::new(());

fn entry(name: &str) -> &'static Entry {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"))
}

fn inputs(entry: &Entry, n: usize, seed: u64) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    entry.inputs(n, seed)
}

/// Runs one call on the GPU and the reference; returns an error message on mismatch.
fn run_and_compare(
    gpu: &Gpu,
    instance: &mut wgloss_suite::Instance,
    reduction: Reduction,
    shape: &[usize],
    pred: &[f32],
    target: &[f32],
    what: &str,
) -> Result<(), String> {
    let up = |d: &[f32]| Tensor::from_slice(gpu, d, shape).map_err(|e| format!("{what}: {e}"));
    let (p, t) = (up(pred)?, up(target)?);
    let out = instance
        .loss
        .compute(gpu, &p, &t)
        .map_err(|e| format!("{what}: {e}"))?;
    drop((p, t));
    let want = (instance.reference)(to_f64(pred, shape).view(), to_f64(target, shape).view());
    let loss = out.loss.to_vec(gpu).map_err(|e| e.to_string())?;
    let tol = if reduction == Reduction::None {
        ELEMENTWISE
    } else {
        REDUCED
    };
    compare(&format!("{what} loss"), &loss, want.loss.view(), tol)?;
    let grad = out.grad.to_vec(gpu).map_err(|e| e.to_string())?;
    compare(
        &format!("{what} grad"),
        &grad,
        want.grad.view(),
        ELEMENTWISE,
    )
}

/// The shared GPU with one and with four elements per step: both paths are checked on every
/// adapter, whichever the adapter would pick.
fn widths(gpu: &Gpu) -> [Gpu; 2] {
    [gpu.with_vec4(false), gpu.with_vec4(true)]
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
    let mut failures = Vec::new();
    for n in [1, 7, 33] {
        for (v, label) in entry.variants.iter().enumerate() {
            for &reduction in entry.reductions {
                let what = format!("{} {label} {reduction:?} n={n}", entry.name);
                let gpu = shared_gpu();
                let Some(gpu) = gpu else { return };
                let mut inst = (entry.make)(gpu, v, reduction).expect("valid variant");
                let (shape, p, t) = inputs(entry, n, 11 + n as u64);
                let (p, t) = (to_f64(&p, &shape), to_f64(&t, &shape));
                let analytic = (inst.reference)(p.view(), t.view());
                let frozen = (inst.freeze)(&p, &t);
                let value = |p: &ArrayD<f64>| frozen(p.view()).loss.sum() * inst.grad_scale;
                let mut fd = ArrayD::zeros(IxDyn(&shape));
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
fn matches_reference(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for (gpu, &n) in widths(gpu)
        .iter()
        .flat_map(|g| SHAPES.iter().map(move |n| (g, n)))
    {
        for (v, label) in entry.variants.iter().enumerate() {
            for &reduction in entry.reductions {
                let mut inst = (entry.make)(gpu, v, reduction).expect("valid variant");
                for step in 0..3u64 {
                    let (shape, p, t) = inputs(entry, n, 1000 * n as u64 + step);
                    let what = format!(
                        "{} {label} {reduction:?} {shape:?} step {step} vec4={}",
                        entry.name,
                        gpu.vec4()
                    );
                    if let Err(e) =
                        run_and_compare(gpu, &mut inst, reduction, &shape, &p, &t, &what)
                    {
                        failures.push(e);
                    }
                }
            }
        }
    }
    report(failures);
}

/// Inputs needing more than 65,535 workgroups, and inputs larger than one storage binding
/// (128 MiB on lavapipe): split, not rejected, and still equal to the reference.
fn matches_reference_beyond_limits(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let _one_at_a_time = LARGE.lock().unwrap_or_else(|e| e.into_inner());
    let max_binding = gpu.limits().max_storage_buffer_binding_size;
    let mut failures = Vec::new();
    let cases = widths(gpu)
        .into_iter()
        .flat_map(|g| [(g.clone(), BEYOND_DISPATCH), (g, BEYOND_BINDING)]);
    for (gpu, n) in cases {
        let gpu = &gpu;
        for &reduction in entry.reductions {
            let mut inst = (entry.make)(gpu, 0, reduction).expect("default variant");
            let (shape, p, t) = inputs(entry, n, 7 + n as u64);
            let what = format!("{} {reduction:?} {shape:?} vec4={}", entry.name, gpu.vec4());
            if let Err(e) = run_and_compare(gpu, &mut inst, reduction, &shape, &p, &t, &what) {
                failures.push(e);
            }
        }
    }
    if 4 * BEYOND_BINDING as u64 <= max_binding {
        eprintln!("note: this adapter binds {max_binding} bytes at once; the split path is exercised on lavapipe");
    }
    report(failures);
}

/// Caller-owned outputs and inputs at non-zero offsets of shared buffers, through `encode`.
fn encode_into_views_matches_reference(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let mut failures = Vec::new();
    let cases = widths(gpu)
        .into_iter()
        .flat_map(|g| entry.reductions.iter().map(move |&r| (g.clone(), r)));
    for (gpu, reduction) in cases {
        let gpu = &gpu;
        let mut inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let (shape, p, t) = inputs(entry, 1001, 5);
        let len = p.len();
        let slot = len.div_ceil(align) * align;
        // One buffer: [pad | pred | target], one for outputs: [pad | grad | loss].
        let mut host = vec![0.0f32; align + 2 * slot];
        host[align..align + len].copy_from_slice(&p);
        host[align + slot..align + slot + len].copy_from_slice(&t);
        let inputs = Tensor::from_slice(gpu, &host, &[host.len()]).unwrap();
        let outputs = Tensor::zeros(gpu, &[align + 2 * slot]).unwrap();
        let view = |t: &Tensor, at: usize, shape: &[usize]| {
            Tensor::new(t.buffer().clone(), 4 * at as u64, shape).unwrap()
        };
        let loss_shape = LossOutput::loss_shape(&shape, reduction);
        let out = LossOutput {
            grad: view(&outputs, align, &shape),
            loss: view(&outputs, align + slot, &loss_shape),
        };
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let (pv, tv) = (
            view(&inputs, align, &shape),
            view(&inputs, align + slot, &shape),
        );
        inst.loss.encode(gpu, &mut encoder, &pv, &tv, &out).unwrap();
        gpu.submit_and_wait(encoder).unwrap();
        let want = (inst.reference)(to_f64(&p, &shape).view(), to_f64(&t, &shape).view());
        let what = format!("{} {reduction:?} encode vec4={}", entry.name, gpu.vec4());
        let tol = if reduction == Reduction::None {
            ELEMENTWISE
        } else {
            REDUCED
        };
        let checks = [
            compare(
                &format!("{what} loss"),
                &out.loss.to_vec(gpu).unwrap(),
                want.loss.view(),
                tol,
            ),
            compare(
                &format!("{what} grad"),
                &out.grad.to_vec(gpu).unwrap(),
                want.grad.view(),
                ELEMENTWISE,
            ),
        ];
        failures.extend(checks.into_iter().filter_map(Result::err));
        let all = outputs.to_vec(gpu).unwrap();
        if all[..align].iter().any(|&x| x != 0.0) {
            failures.push(format!("{what}: wrote before the grad view"));
        }
    }
    report(failures);
}

/// Residuals of ±1e4 give finite loss and gradients that equal the reference.
fn extreme_residuals_are_finite(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for &reduction in entry.reductions {
        let mut inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let (shape, _, target) = inputs(entry, 64, 4);
        let len: usize = shape.iter().product();
        let pred: Vec<f32> = (0..len)
            .map(|i| if entry.domain.0 >= 0.0 || i % 2 == 0 { 1e4 } else { -1e4 } * (1.0 + i as f32 / 64.0))
            .collect();
        let target: Vec<f32> = match entry.targets {
            wgloss_suite::registry::Targets::Uniform => (0..len).map(|i| (i % 3) as f32).collect(),
            _ => target,
        };
        let what = format!("{} {reduction:?} residuals 1e4", entry.name);
        let p = Tensor::from_slice(gpu, &pred, &shape).unwrap();
        let t = Tensor::from_slice(gpu, &target, &shape).unwrap();
        let out = inst.loss.compute(gpu, &p, &t).unwrap();
        let (loss, grad) = (out.loss.to_vec(gpu).unwrap(), out.grad.to_vec(gpu).unwrap());
        if entry.extreme_finite && !loss.iter().chain(&grad).all(|x| x.is_finite()) {
            failures.push(format!("{what}: non-finite loss or gradient"));
        }
        let want = (inst.reference)(to_f64(&pred, &shape).view(), to_f64(&target, &shape).view());
        let tol = if reduction == Reduction::None {
            ELEMENTWISE
        } else {
            REDUCED
        };
        let checks = [
            compare(&format!("{what} loss"), &loss, want.loss.view(), tol),
            compare(
                &format!("{what} grad"),
                &grad,
                want.grad.view(),
                ELEMENTWISE,
            ),
        ];
        failures.extend(checks.into_iter().filter_map(Result::err));
    }
    report(failures);
}

/// A NaN input element makes the loss NaN (its own element under reduction none).
fn nan_propagates(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for &reduction in entry.reductions {
        let inst = (entry.make)(gpu, 0, reduction).expect("default variant");
        let (shape, mut p, t) = inputs(entry, 64, 3);
        p[5] = f32::NAN;
        let up = |d: &[f32]| Tensor::from_slice(gpu, d, &shape).unwrap();
        let out = inst.loss.compute(gpu, &up(&p), &up(&t)).unwrap();
        let loss = out.loss.to_vec(gpu).unwrap();
        let at = if reduction == Reduction::None { 5 } else { 0 };
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
        let shape = entry.shape(0);
        let p = Tensor::from_slice(gpu, &[], &shape).unwrap();
        let result = inst.loss.compute(gpu, &p, &p.clone());
        if entry.allows_empty {
            let out = result.unwrap_or_else(|e| panic!("{} {reduction:?}: {e}", entry.name));
            assert!(out.grad.is_empty());
            let want = (inst.reference)(to_f64(&[], &shape).view(), to_f64(&[], &shape).view());
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

/// Each bad input gets its typed error before anything is written: the outputs keep the
/// sentinel they were filled with.
fn bad_input_is_rejected_and_nothing_written(entry: &Entry) {
    let Some(gpu) = shared_gpu() else { return };
    let reduction = entry.reductions[0];
    let (shape, p, t) = inputs(entry, 40, 9);
    let pred = Tensor::from_slice(gpu, &p, &shape).unwrap();
    let target = Tensor::from_slice(gpu, &t, &shape).unwrap();
    let sentinel = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_slice(gpu, &vec![7.0; n], shape).unwrap()
    };
    let loss_shape = LossOutput::loss_shape(&shape, reduction);
    let out = LossOutput {
        loss: sentinel(&loss_shape),
        grad: sentinel(&shape),
    };
    let mut longer = shape.clone();
    longer[0] += 1;
    let other = Tensor::from_slice(gpu, &vec![0.0; longer.iter().product()], &longer).unwrap();
    let wrong_grad = LossOutput {
        loss: sentinel(&loss_shape),
        grad: sentinel(&longer),
    };

    let inst = (entry.make)(gpu, 0, reduction).expect("default variant");
    let mut cases: Vec<(String, wgloss::Result<()>, &'static str)> = Vec::new();
    let encode = |loss: &dyn wgloss::ElementwiseLoss, t: &Tensor, out: &LossOutput| {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let r = loss.encode(gpu, &mut encoder, &pred, t, out);
        gpu.submit_and_wait(encoder).unwrap();
        r
    };
    cases.push((
        "target shape".into(),
        encode(&*inst.loss, &other, &out),
        "target",
    ));
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
    for t in [&out.loss, &out.grad, &wrong_grad.grad] {
        if t.to_vec(gpu).unwrap().iter().any(|&x| x != 7.0) {
            failures.push(format!(
                "{}: an output was written by a rejected call",
                entry.name
            ));
        }
    }
    report(failures);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
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
            fn matches_reference_beyond_limits() {
                super::matches_reference_beyond_limits(entry());
            }
            #[test]
            fn encode_into_views_matches_reference() {
                super::encode_into_views_matches_reference(entry());
            }
            #[test]
            fn extreme_residuals_are_finite() {
                super::extreme_residuals_are_finite(entry());
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
        })*

        /// Every registered loss has its conformance tests, and nothing else is listed.
        #[test]
        fn every_registered_loss_is_tested() {
            let tested = [$(stringify!($name)),*];
            let registered: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
            assert_eq!(registered, tested);
        }
    };
}

conformance! {
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
    bce_with_logits,
    sigmoid_focal,
    hinge,
    squared_hinge,
    smoothed_hinge,
    ramp,
    exponential,
}
