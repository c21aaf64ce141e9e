//! Classification beyond the registry's generic sweep: cross-entropy at the class counts that
//! matter in practice (binary, ImageNet, GPT-2's vocabulary and 2^18 classes in one call, rows
//! longer than a workgroup streamed), with weights, label smoothing, ignored rows, logits of
//! ±1e4, trailing spatial dimensions, probability targets and the in-place gradient; the other
//! class-row losses on the workgroup-per-row path; GHM-C with a validity mask. The class-row
//! cases run at both step widths (four logits per step serves contiguous rows of a multiple of
//! four classes: 1000, 300, 2^18 here; 50,257 and trailing dims take one per step either way);
//! 16-bit logits.

use ndarray::ArrayViewD;
use wgloss::{CrossEntropy, DType, Gpu, Loss, Poly1, Reduction, Tensor};
use wgloss_suite::check::{
    assert_output, compare, compare_output, loss_tolerance, to_f64, Rng, Tolerance, ELEMENTWISE,
    REDUCED,
};
use wgloss_suite::{shared_gpu, small_binding_gpus};

struct Case {
    shape: &'static [usize],
    weighted: bool,
    smoothing: f32,
    reduction: Reduction,
    extreme: bool,
    /// Run poly1 with this epsilon instead (no weight, no smoothing).
    poly: Option<f32>,
    /// z-loss and logit soft cap of cross-entropy.
    extras: (f32, Option<f32>),
}

/// The shared GPU at one and at four logits per step, on both row paths.
fn widths() -> Vec<Gpu> {
    shared_gpu().map_or_else(Vec::new, |gpu| {
        [gpu.with_vec4(true), gpu.with_vec4(false)]
            .iter()
            .flat_map(row_paths)
            .collect()
    })
}

/// `gpu` as it is and, where it differs, with a GPU adapter's row paths: rows of more than
/// `Gpu::GPU_WHOLE_ROW_CLASSES` classes take a workgroup each there, where a CPU adapter gives
/// rows of up to 8,191 classes an invocation.
fn row_paths(gpu: &Gpu) -> Vec<Gpu> {
    let mut paths = vec![gpu.clone()];
    if gpu.whole_row_classes() != Gpu::GPU_WHOLE_ROW_CLASSES {
        paths.push(gpu.with_whole_row_classes(Gpu::GPU_WHOLE_ROW_CLASSES));
    }
    paths
}

fn check(case: &Case) {
    for gpu in widths() {
        check_on(&gpu, case);
    }
}

fn check_on(gpu: &Gpu, case: &Case) {
    let shape = case.shape;
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let mut rng = Rng::new((n * c) as u64);
    let mut logits = rng.uniform(n * c * inner, -8.0, 8.0);
    if case.extreme {
        for (i, x) in logits.iter_mut().enumerate() {
            *x = if i % 3 == 0 { 1e4 } else { -1e4 } * (1.0 + (i % 7) as f32 / 7.0);
        }
    }
    let labels: Vec<i32> = (0..n * inner)
        .map(|r| {
            if r % 5 == 4 {
                -100
            } else {
                (rng.unit() * c as f64) as i32
            }
        })
        .collect();
    let weight: Option<Vec<f32>> = case.weighted.then(|| rng.uniform(c, 0.1, 2.0));
    let loss = CrossEntropy {
        weight: weight.clone(),
        label_smoothing: case.smoothing,
        z_loss: case.extras.0,
        logit_softcap: case.extras.1,
        reduction: case.reduction,
        ..Default::default()
    };
    let label_shape: Vec<usize> = [n].into_iter().chain(shape[2..].iter().copied()).collect();
    let x = Tensor::from_slice(gpu, &logits, shape).unwrap();
    let y = Tensor::from_labels(gpu, &labels, &label_shape).unwrap();
    let out = match case.poly {
        None => loss.compute(gpu, &x, &y).unwrap(),
        Some(epsilon) => {
            let poly = Poly1 {
                epsilon,
                reduction: case.reduction,
                ..Default::default()
            };
            poly.compute(gpu, &x, &y).unwrap()
        }
    };
    let w64: Option<Vec<f64>> = weight.map(|w| w.iter().map(|&v| f64::from(v)).collect());
    let labels64: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let (x64, y64) = (to_f64(&logits, shape), to_f64(&labels64, &label_shape));
    let reduction = match case.reduction {
        Reduction::None => wgloss_ref::Reduction::None,
        Reduction::Mean => wgloss_ref::Reduction::Mean,
        Reduction::Sum => wgloss_ref::Reduction::Sum,
    };
    let want = match case.poly {
        None => wgloss_ref::cross_entropy_extras(
            x64.view(),
            y64.view(),
            w64.as_deref(),
            -100,
            case.smoothing.into(),
            case.extras.0.into(),
            case.extras.1.map(f64::from),
            reduction,
            1.0,
        ),
        Some(epsilon) => {
            wgloss_ref::poly1(x64.view(), y64.view(), epsilon.into(), -100, reduction, 1.0)
        }
    };
    let what = format!(
        "cross_entropy {shape:?} weighted={} eps={} {:?} poly={:?} vec4={}",
        case.weighted,
        case.smoothing,
        case.reduction,
        case.poly,
        gpu.vec4()
    );
    let got_loss = out.loss.to_vec(gpu).unwrap();
    let got_grad = out.grad.to_vec(gpu).unwrap();
    if case.extreme {
        assert!(
            got_loss.iter().chain(&got_grad).all(|v| v.is_finite()),
            "{what}: non-finite output"
        );
    }
    let tol = if case.reduction == Reduction::None {
        ELEMENTWISE
    } else {
        REDUCED
    };
    // Logits near 1e4 are spaced 1e-3 apart in f32, so the log-sum-exp, and every probability
    // through it, carries about that relative error.
    let (tol, grad_tol) = if case.extreme {
        let t = Tolerance {
            rtol: 4e-3,
            atol_frac: 1e-6,
        };
        (t, t)
    } else {
        (tol, ELEMENTWISE)
    };
    compare(&format!("{what} loss"), &got_loss, want.loss.view(), tol).unwrap();
    compare(
        &format!("{what} grad"),
        &got_grad,
        want.grad.view(),
        grad_tol,
    )
    .unwrap();
}

macro_rules! cases {
    ($($name:ident: $case:expr;)*) => {
        $(#[test]
        fn $name() {
            check(&$case);
        })*
    };
}

cases! {
    binary_matches_reference: Case { shape: &[513, 2], weighted: true, smoothing: 0.1, reduction: Reduction::Mean, extreme: false, poly: None, extras: (0.0, None) };
    imagenet_matches_reference: Case { shape: &[9, 1000], weighted: true, smoothing: 0.0, reduction: Reduction::Mean, extreme: false, poly: None, extras: (0.0, None) };
    imagenet_per_row_matches_reference: Case { shape: &[9, 1000], weighted: false, smoothing: 0.2, reduction: Reduction::None, extreme: false, poly: None, extras: (0.0, None) };
    gpt2_vocabulary_matches_reference: Case { shape: &[5, 50_257], weighted: false, smoothing: 0.1, reduction: Reduction::Sum, extreme: false, poly: None, extras: (0.0, None) };
    classes_2_pow_18_match_reference: Case { shape: &[3, 262_144], weighted: true, smoothing: 0.05, reduction: Reduction::Mean, extreme: false, poly: None, extras: (0.0, None) };
    logits_of_1e4_are_finite_with_many_classes: Case { shape: &[6, 1000], weighted: false, smoothing: 0.1, reduction: Reduction::Mean, extreme: true, poly: None, extras: (0.0, None) };
    logits_of_1e4_are_finite_with_few_classes: Case { shape: &[64, 5], weighted: true, smoothing: 0.0, reduction: Reduction::None, extreme: true, poly: None, extras: (0.0, None) };
    spatial_dims_match_reference: Case { shape: &[2, 21, 17, 13], weighted: true, smoothing: 0.1, reduction: Reduction::Mean, extreme: false, poly: None, extras: (0.0, None) };
    poly1_with_many_classes_matches_reference: Case { shape: &[9, 1000], weighted: false, smoothing: 0.0, reduction: Reduction::Mean, extreme: false, poly: Some(1.0), extras: (0.0, None) };
    poly1_with_a_vocabulary_matches_reference: Case { shape: &[4, 50_257], weighted: false, smoothing: 0.0, reduction: Reduction::None, extreme: false, poly: Some(2.0), extras: (0.0, None) };
    z_loss_and_softcap_with_many_classes_match_reference: Case { shape: &[5, 1000], weighted: true, smoothing: 0.1, reduction: Reduction::Mean, extreme: false, poly: None, extras: (1e-3, Some(30.0)) };
    softcap_tames_logits_of_1e4: Case { shape: &[6, 300], weighted: false, smoothing: 0.0, reduction: Reduction::Sum, extreme: true, poly: None, extras: (1e-4, Some(50.0)) };
    spatial_dims_with_many_classes_match_reference: Case { shape: &[2, 40, 5, 3], weighted: false, smoothing: 0.0, reduction: Reduction::None, extreme: false, poly: None, extras: (0.0, None) };
}

/// A device with wgpu's default limits (eight storage buffers per stage, as a caller's engine
/// may create it) runs the class-row kernels: weighted and smoothed rows of 1,000 classes and
/// rows with trailing dims, on both row paths.
#[test]
fn class_rows_run_under_default_limits() {
    let Some(gpu) = wgloss_suite::default_limits_gpu() else {
        return;
    };
    for case in [
        Case {
            shape: &[9, 1000],
            weighted: true,
            smoothing: 0.1,
            reduction: Reduction::Mean,
            extreme: false,
            poly: None,
            extras: (0.0, None),
        },
        Case {
            shape: &[2, 40, 5, 3],
            weighted: false,
            smoothing: 0.0,
            reduction: Reduction::None,
            extreme: false,
            poly: Some(1.0),
            extras: (0.0, None),
        },
    ] {
        for gpu in row_paths(gpu) {
            check_on(&gpu, &case);
        }
    }
}

/// A batch whose every row is ignored has loss 0 and a zero gradient under mean (torch: NaN).
#[test]
fn all_ignored_batch_gives_zero() {
    let Some(gpu) = shared_gpu() else { return };
    for (gpu, c) in row_paths(gpu).iter().flat_map(|g| [(g, 3), (g, 300)]) {
        let logits = Rng::new(3).uniform(4 * c, -1.0, 1.0);
        let x = Tensor::from_slice(gpu, &logits, &[4, c]).unwrap();
        let y = Tensor::from_labels(gpu, &[-100; 4], &[4]).unwrap();
        let out = CrossEntropy::default().compute(gpu, &x, &y).unwrap();
        assert_eq!(out.loss.to_vec(gpu).unwrap(), [0.0]);
        assert!(out.grad.to_vec(gpu).unwrap().iter().all(|&g| g == 0.0));
    }
}

/// Random probability targets of `shape`: each row's classes sum to 1.
fn probabilities(rng: &mut Rng, shape: &[usize]) -> Vec<f32> {
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let mut t = rng.uniform(n * c * inner, 0.0, 1.0);
    for r in 0..n * inner {
        let at = |k: usize| (r / inner) * c * inner + k * inner + r % inner;
        let sum: f32 = (0..c).map(|k| t[at(k)]).sum();
        for k in 0..c {
            t[at(k)] /= sum;
        }
    }
    t
}

struct ProbCase {
    shape: &'static [usize],
    weighted: bool,
    smoothing: f32,
    extras: (f32, Option<f32>),
    reduction: Reduction,
}

fn reduction_ref(r: Reduction) -> wgloss_ref::Reduction {
    match r {
        Reduction::None => wgloss_ref::Reduction::None,
        Reduction::Mean => wgloss_ref::Reduction::Mean,
        Reduction::Sum => wgloss_ref::Reduction::Sum,
    }
}

/// Probability targets (f32, the logits' shape): torch's soft-label cross-entropy, its mean over
/// rows, on both row paths and with trailing dims.
fn check_probabilities(case: &ProbCase) {
    for gpu in widths() {
        check_probabilities_on(&gpu, case, DType::F32);
    }
}

/// `case` with logits of `dtype` (the reference on the rounded logits).
fn check_probabilities_on(gpu: &Gpu, case: &ProbCase, dtype: DType) {
    let shape = case.shape;
    let c = shape[1];
    let mut rng = Rng::new(shape.iter().product::<usize>() as u64);
    let len: usize = shape.iter().product();
    let logits: Vec<f32> = (rng.uniform(len, -8.0, 8.0).into_iter())
        .map(|x| dtype.round(x))
        .collect();
    let targets = probabilities(&mut rng, shape);
    let weight: Option<Vec<f32>> = case.weighted.then(|| rng.uniform(c, 0.1, 2.0));
    let loss = CrossEntropy {
        weight: weight.clone(),
        label_smoothing: case.smoothing,
        z_loss: case.extras.0,
        logit_softcap: case.extras.1,
        reduction: case.reduction,
        ..Default::default()
    };
    let x = Tensor::from_slice_as(gpu, &logits, shape, dtype).unwrap();
    let t = Tensor::from_slice(gpu, &targets, shape).unwrap();
    let out = loss.compute(gpu, &x, &t).unwrap();
    let w64: Option<Vec<f64>> = weight.map(|w| w.iter().map(|&v| f64::from(v)).collect());
    let want = wgloss_ref::cross_entropy_probs(
        to_f64(&logits, shape).view(),
        to_f64(&targets, shape).view(),
        w64.as_deref(),
        case.smoothing.into(),
        case.extras.0.into(),
        case.extras.1.map(f64::from),
        reduction_ref(case.reduction),
        1.0,
    );
    let what = format!(
        "cross_entropy probabilities {shape:?} {dtype:?} {:?} vec4={}",
        case.reduction,
        gpu.vec4()
    );
    let tol = if case.reduction == Reduction::None {
        ELEMENTWISE
    } else {
        REDUCED
    };
    assert_output(gpu, &what, &out, &want, tol, ELEMENTWISE);
}

macro_rules! probability_cases {
    ($($name:ident: $case:expr;)*) => {
        $(#[test]
        fn $name() {
            check_probabilities(&$case);
        })*
    };
}

probability_cases! {
    probability_targets_with_few_classes_match_reference: ProbCase { shape: &[513, 5], weighted: true, smoothing: 0.1, extras: (0.0, None), reduction: Reduction::Mean };
    probability_targets_with_many_classes_match_reference: ProbCase { shape: &[9, 1000], weighted: false, smoothing: 0.0, extras: (0.0, None), reduction: Reduction::None };
    probability_targets_with_spatial_dims_match_reference: ProbCase { shape: &[2, 21, 17, 13], weighted: true, smoothing: 0.0, extras: (0.0, None), reduction: Reduction::Sum };
    probability_targets_with_extras_match_reference: ProbCase { shape: &[7, 300], weighted: true, smoothing: 0.2, extras: (1e-3, Some(5.0)), reduction: Reduction::Mean };
}

/// Under 256-byte view alignment (wgpu's default limits) and 1 MiB bindings, batches whose
/// samples end off the alignment run in segments that start at any sample, their views bound
/// from the alignment before it: labels and probability targets (whose lead differs from 16-bit
/// logits'), per-row and reduced losses, both widths and both row paths; rows with trailing
/// dims ([700, 7, 13, 11]: 1,001 logits a sample, 261 to a segment), contiguous rows of an odd
/// class count and of a multiple of four (the four-per-step width: leads of whole vec4s); and
/// the in-place gradient of each 16-bit layout against the out-of-place call.
#[test]
fn unaligned_segments_match_reference() {
    let Some(gpu) = wgloss_suite::wide_alignment_gpu() else {
        return;
    };
    let label_case = |shape, reduction| Case {
        shape,
        weighted: true,
        smoothing: 0.1,
        reduction,
        extreme: false,
        poly: None,
        extras: (1e-3, None),
    };
    let prob_case = |shape, reduction| ProbCase {
        shape,
        weighted: true,
        smoothing: 0.1,
        extras: (1e-3, None),
        reduction,
    };
    for gpu in [gpu.with_vec4(true), gpu.with_vec4(false)]
        .iter()
        .flat_map(row_paths)
    {
        check_on(&gpu, &label_case(&[700, 7, 13, 11], Reduction::None));
        check_on(&gpu, &label_case(&[300, 1028], Reduction::Mean));
        check_on(&gpu, &label_case(&[40_001, 11], Reduction::None));
        check_probabilities_on(
            &gpu,
            &prob_case(&[300, 5, 7, 29], Reduction::None),
            DType::F32,
        );
        check_probabilities_on(&gpu, &prob_case(&[20_001, 17], Reduction::Sum), DType::F32);
        for dtype in [DType::F16, DType::BF16] {
            let case = prob_case(&[600, 5, 7, 29], Reduction::None);
            check_probabilities_on(&gpu, &case, dtype);
        }
        // In place: the next segment's views begin in the words this one's gradient overwrote.
        in_place_cases_on(
            &gpu,
            &[
                (vec![300, 1028], DType::F32),
                (vec![40_001, 11], DType::F16),
                (vec![301, 5, 6, 30], DType::F16),
                (vec![600, 5, 7, 29], DType::BF16),
            ],
        );
    }
}

/// The probability-target reference's gradient equals central finite differences.
#[test]
fn probability_reference_grad_matches_finite_differences() {
    let shape = [3, 4, 2];
    let mut rng = Rng::new(5);
    let x = to_f64(&rng.uniform(24, -3.0, 3.0), &shape);
    let t = to_f64(&probabilities(&mut rng, &shape), &shape);
    let w = [0.5, 2.0, 1.0, 1.5];
    let f = |x: &ndarray::ArrayD<f64>| {
        wgloss_ref::cross_entropy_probs(
            x.view(),
            t.view(),
            Some(&w),
            0.1,
            0.01,
            Some(2.0),
            wgloss_ref::Reduction::Mean,
            1.0,
        )
    };
    let analytic = f(&x).grad;
    for i in 0..x.len() {
        let h = 1e-6;
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        let fd = (f(&plus).loss.sum() - f(&minus).loss.sum()) / (2.0 * h);
        let a = analytic.as_slice().unwrap()[i];
        assert!(
            (a - fd).abs() < 1e-7 + 1e-6 * fd.abs(),
            "grad[{i}] = {a}, fd {fd}"
        );
    }
}

/// In place, the gradient overwrites the logits and equals the out-of-place result exactly, on
/// both row paths, with labels and with probabilities.
#[test]
fn in_place_gradient_overwrites_the_logits() {
    for gpu in widths() {
        in_place_on(&gpu);
    }
}

fn in_place_on(gpu: &Gpu) {
    // f32 logits, and 16-bit ones: rows of an even class count, and of an odd one (sharing
    // words with their neighbours; an odd row count ends in half a word of padding), and rows
    // with trailing dims of an even size (pairs of rows sharing words) and of an odd one (the
    // gradient staged in f32, packed over the logits once every row has read them).
    let cases: Vec<(Vec<usize>, DType)> = [
        ([64usize, 5], DType::F32),
        ([9, 1000], DType::F32),
        ([64, 6], DType::F16),
        ([9, 1000], DType::BF16),
        ([63, 5], DType::F16),
        ([9, 999], DType::BF16),
    ]
    .map(|(s, d)| (s.to_vec(), d))
    .into_iter()
    .chain([
        (vec![3, 5, 6], DType::F16),
        (vec![2, 40, 4], DType::BF16),
        (vec![3, 5, 7], DType::BF16),
        (vec![2, 40, 3, 3], DType::F16),
    ])
    .collect();
    in_place_cases_on(gpu, &cases);
}

/// Each case's in-place call against the out-of-place one: the same loss, bit for bit, and the
/// same gradient, in the logits' buffer.
fn in_place_cases_on(gpu: &Gpu, cases: &[(Vec<usize>, DType)]) {
    for (shape, dtype) in cases.iter().cloned() {
        let (n, c) = (shape[0], shape[1]);
        let rows = n * shape[2..].iter().product::<usize>();
        let label_shape: Vec<usize> = [n].into_iter().chain(shape[2..].to_vec()).collect();
        let mut rng = Rng::new(c as u64);
        let logits = rng.uniform(rows * c, -6.0, 6.0);
        let labels: Vec<i32> = (0..rows)
            .map(|r| {
                if r % 7 == 3 {
                    -100
                } else {
                    (r * 31 % c) as i32
                }
            })
            .collect();
        let y = Tensor::from_labels(gpu, &labels, &label_shape).unwrap();
        let probs = Tensor::from_slice(gpu, &probabilities(&mut rng, &shape), &shape).unwrap();
        for target in [&y, &probs] {
            let loss = CrossEntropy {
                label_smoothing: 0.1,
                logit_softcap: Some(10.0),
                ..Default::default()
            };
            let x = Tensor::from_slice_as(gpu, &logits, &shape, dtype).unwrap();
            let want = loss.compute(gpu, &x, target).unwrap();
            let got = loss.compute_in_place(gpu, x.clone(), target).unwrap();
            assert_eq!(
                got.grad.buffer(),
                x.buffer(),
                "the gradient is not in the logits"
            );
            assert_eq!(
                x.to_vec(gpu).unwrap(),
                want.grad.to_vec(gpu).unwrap(),
                "{shape:?} {dtype:?}: in-place gradient differs"
            );
            assert_eq!(
                got.loss.to_vec(gpu).unwrap(),
                want.loss.to_vec(gpu).unwrap()
            );
        }
    }
}

/// 16-bit logits against the reference on the rounded logits, in segments of 1 MiB bindings
/// through a GPU's walks: rows of 1,030 and 1,031 classes (a workgroup per row on a GPU adapter's
/// row paths, an invocation per row on a CPU adapter's; both run) and of 10 and 11 (an
/// invocation per row), and rows with trailing dims (an invocation per pair of rows; of an
/// odd size, or rows of 40,000 classes, too long for one invocation's loop budget, the gradient
/// staged and packed per segment, the last word half padding), with
/// weights, label smoothing, z-loss, a soft cap and ignored rows; the gradient in the logits'
/// type within one step of it. The odd counts share words between rows, and their segments hold
/// a multiple of 128 rows but the last (odd here).
#[test]
fn half_logits_match_reference_in_segments() {
    for device in small_binding_gpus() {
        for gpu in &row_paths(device) {
            half_logits_in_segments_on(gpu);
        }
    }
}

fn half_logits_in_segments_on(gpu: &Gpu) {
    for (shape, dtype) in [
        (vec![700usize, 1030], DType::F16),
        (vec![40_000, 10], DType::BF16),
        (vec![701, 1031], DType::BF16),
        (vec![40_001, 11], DType::F16),
        (vec![1500, 5, 64], DType::F16),
        (vec![400, 40, 20], DType::BF16),
        (vec![1501, 5, 63], DType::BF16),
        (vec![301, 40, 21], DType::F16),
        (vec![2, 40_000, 2], DType::F16),
    ] {
        let (n, c) = (shape[0], shape[1]);
        let rows = n * shape[2..].iter().product::<usize>();
        let label_shape: Vec<usize> = [n].into_iter().chain(shape[2..].to_vec()).collect();
        let mut rng = Rng::new(c as u64);
        let logits: Vec<f32> = rng
            .uniform(rows * c, -8.0, 8.0)
            .into_iter()
            .map(|x| dtype.round(x))
            .collect();
        let labels: Vec<i32> = (0..rows)
            .map(|r| {
                if r % 9 == 2 {
                    -100
                } else {
                    (r * 37 % c) as i32
                }
            })
            .collect();
        let weight = rng.uniform(c, 0.1, 2.0);
        for reduction in [Reduction::None, Reduction::Mean] {
            let loss = CrossEntropy {
                weight: Some(weight.clone()),
                label_smoothing: 0.1,
                z_loss: 1e-3,
                logit_softcap: Some(30.0),
                reduction,
                ..Default::default()
            };
            let x = Tensor::from_slice_as(gpu, &logits, &shape, dtype).unwrap();
            let y = Tensor::from_labels(gpu, &labels, &label_shape).unwrap();
            let out = loss.compute(gpu, &x, &y).unwrap();
            let labels64: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let w64: Vec<f64> = weight.iter().map(|&w| f64::from(w)).collect();
            let want = wgloss_ref::cross_entropy_extras(
                to_f64(&logits, &shape).view(),
                to_f64(&labels64, &label_shape).view(),
                Some(&w64),
                -100,
                0.1,
                1e-3,
                Some(30.0),
                reduction_ref(reduction),
                1.0,
            );
            let what = format!("cross_entropy {shape:?} {dtype:?} {reduction:?}");
            let tol = loss_tolerance(reduction);
            let failures = compare_output(gpu, &what, &out, &want, tol, ELEMENTWISE);
            assert!(failures.is_empty(), "{}", failures.join("\n"));
        }
    }
}

/// 16-bit logits need a gradient of their own type: f32 or the other 16-bit type is a dtype
/// error.
#[test]
fn half_logits_need_a_gradient_of_their_type() {
    let Some(gpu) = shared_gpu() else { return };
    let ce = CrossEntropy::default();
    let x = Tensor::from_slice_as(gpu, &[0.5; 8], &[2, 4], DType::BF16).unwrap();
    let y = Tensor::from_labels(gpu, &[1, 2], &[2]).unwrap();
    let mut out = ce.output(gpu, &[2, 4], &[2]).unwrap();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let r = ce.encode(gpu, &mut encoder, &x, &y, &out);
    assert!(
        matches!(r, Err(wgloss::Error::DTypeMismatch { name: "grad", .. })),
        "{r:?}"
    );
    out.grad = Tensor::zeros_typed(gpu, &[2, 4], DType::F16).unwrap();
    let r = ce.encode(gpu, &mut encoder, &x, &y, &out);
    assert!(
        matches!(r, Err(wgloss::Error::DTypeMismatch { name: "grad", .. })),
        "{r:?}"
    );
}

/// A bad label is still reported in place, and the logits are then left as they were: f32
/// logits, and 16-bit ones of an odd class count (whose shared words are packed by a pass of
/// their own), on both row paths, and with trailing dims of an odd size (staged and packed).
#[test]
fn in_place_with_a_bad_label_keeps_the_logits() {
    let Some(gpu) = shared_gpu() else { return };
    for gpu in &row_paths(gpu) {
        in_place_bad_label_on(gpu);
    }
}

fn in_place_bad_label_on(gpu: &Gpu) {
    for (c, inner, dtype) in [
        (5, 1, DType::F32),
        (5, 1, DType::F16),
        (45, 1, DType::BF16),
        (5, 3, DType::F16),
        (45, 3, DType::BF16),
    ] {
        let logits: Vec<f32> = Rng::new(9)
            .uniform(8 * c * inner, -1.0, 1.0)
            .into_iter()
            .map(|x| dtype.round(x))
            .collect();
        let (shape, label_shape) = if inner == 1 {
            (vec![8, c], vec![8])
        } else {
            (vec![8, c, inner], vec![8, inner])
        };
        let x = Tensor::from_slice_as(gpu, &logits, &shape, dtype).unwrap();
        let mut labels = vec![1; 8 * inner];
        labels[3] = 90;
        let y = Tensor::from_labels(gpu, &labels, &label_shape).unwrap();
        let r = CrossEntropy::default().compute_in_place(gpu, x.clone(), &y);
        assert!(
            matches!(
                r,
                Err(wgloss::Error::LabelOutOfRange {
                    position: 3,
                    label: 90,
                    classes,
                }) if classes == c
            ),
            "{shape:?} {dtype:?}: {r:?}"
        );
        assert_eq!(x.to_vec(gpu).unwrap(), logits, "{shape:?} {dtype:?}");
    }
}

/// A 16-bit gradient view of an odd length with trailing dims of an odd size (staged, then
/// packed): the high half of its last word belongs to the buffer's next value, which keeps its
/// bits, and the view gets the gradient of the logits' own call.
#[test]
fn staged_half_gradient_keeps_the_half_word_past_its_view() {
    let Some(gpu) = shared_gpu() else { return };
    for dtype in [DType::F16, DType::BF16] {
        let shape = [3, 5, 7];
        let n = 3 * 5 * 7;
        let logits: Vec<f32> = Rng::new(11).uniform(n, -2.0, 2.0);
        let x = Tensor::from_slice_as(gpu, &logits, &shape, dtype).unwrap();
        let y = Tensor::from_labels(gpu, &[2; 21], &[3, 7]).unwrap();
        let ce = CrossEntropy::default();
        let want = ce.compute(gpu, &x, &y).unwrap();
        let mut out = ce.output_for(gpu, &x, &y).unwrap();
        let backing = Tensor::from_slice_as(gpu, &vec![7.5; n + 1], &[n + 1], dtype).unwrap();
        out.grad = Tensor::new_typed(backing.buffer().clone(), 0, &shape, dtype).unwrap();
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        ce.encode(gpu, &mut encoder, &x, &y, &out).unwrap();
        gpu.submit_and_wait(encoder).unwrap();
        let all = backing.to_vec(gpu).unwrap();
        assert_eq!(all[n], 7.5, "{dtype:?}: the value past the view");
        assert_eq!(all[..n], want.grad.to_vec(gpu).unwrap()[..], "{dtype:?}");
    }
}

/// Targets must be i32 labels `[N, d...]` or f32 probabilities of the logits' shape; the other
/// class losses take labels only.
#[test]
fn mistyped_targets_are_rejected() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice(gpu, &[0.0; 12], &[4, 3]).unwrap();
    let float_labels = Tensor::from_slice(gpu, &[0.0; 4], &[4]).unwrap();
    let short_probs = Tensor::from_slice(gpu, &[0.0; 9], &[3, 3]).unwrap();
    let probs = Tensor::from_slice(gpu, &[0.25; 12], &[4, 3]).unwrap();
    let ce = CrossEntropy::default();
    let r = ce.compute(gpu, &x, &float_labels);
    assert!(
        matches!(r, Err(wgloss::Error::DTypeMismatch { name: "target", .. })),
        "{r:?}"
    );
    let r = ce.compute(gpu, &x, &short_probs);
    assert!(
        matches!(r, Err(wgloss::Error::ShapeMismatch { name: "target", .. })),
        "{r:?}"
    );
    let r = wgloss::SoftmaxFocal::default().compute(gpu, &x, &probs);
    assert!(
        matches!(r, Err(wgloss::Error::DTypeMismatch { name: "target", .. })),
        "{r:?}"
    );
}

/// softmax_focal and multiclass_hinge on the workgroup-per-row path (C > 32) and with trailing
/// dims, against the reference.
#[test]
fn focal_and_multiclass_hinge_with_many_classes_match_reference() {
    for gpu in widths() {
        focal_and_hinge_on(&gpu);
    }
}

fn focal_and_hinge_on(gpu: &Gpu) {
    for shape in [&[9usize, 1000][..], &[3, 40, 5, 2], &[4, 50_257]] {
        let (n, c) = (shape[0], shape[1]);
        let inner: usize = shape[2..].iter().product();
        let mut rng = Rng::new(c as u64 + 1);
        // Logits on a 1/64 grid offset by class keep hinge kinks away from rounding.
        let logits: Vec<f32> = rng
            .uniform(n * c * inner, -4.0, 4.0)
            .iter()
            .enumerate()
            .map(|(i, &x)| (x * 64.0).round() / 64.0 + ((i / inner) % c) as f32 / (128 * c) as f32)
            .collect();
        let labels: Vec<i32> = (0..n * inner).map(|r| (r * 37 % c) as i32).collect();
        let weight = rng.uniform(c, 0.1, 2.0);
        let w64: Vec<f64> = weight.iter().map(|&v| v.into()).collect();
        let label_shape: Vec<usize> = [n].into_iter().chain(shape[2..].iter().copied()).collect();
        let x = Tensor::from_slice(gpu, &logits, shape).unwrap();
        let y = Tensor::from_labels(gpu, &labels, &label_shape).unwrap();
        let labels64: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let (x64, y64) = (to_f64(&logits, shape), to_f64(&labels64, &label_shape));
        for reduction in [Reduction::Mean, Reduction::None] {
            let r = reduction_ref(reduction);
            let cases: [(&str, Box<dyn Loss>, wgloss_ref::LossGrad); 3] = [
                (
                    "softmax_focal gamma=0.5",
                    Box::new(wgloss::SoftmaxFocal {
                        gamma: 0.5,
                        alpha: Some(weight.clone()),
                        reduction,
                        ..Default::default()
                    }),
                    wgloss_ref::softmax_focal(
                        x64.view(),
                        y64.view(),
                        0.5,
                        Some(&w64),
                        -100,
                        r,
                        1.0,
                    ),
                ),
                (
                    "multiclass_hinge p=1",
                    Box::new(wgloss::MulticlassHinge {
                        reduction,
                        ..Default::default()
                    }),
                    wgloss_ref::multiclass_hinge(x64.view(), y64.view(), 1, 1.0, None, r, 1.0),
                ),
                (
                    "multiclass_hinge p=2 weighted",
                    Box::new(wgloss::MulticlassHinge {
                        p: 2,
                        margin: 0.5,
                        weight: Some(weight.clone()),
                        reduction,
                        ..Default::default()
                    }),
                    wgloss_ref::multiclass_hinge(
                        x64.view(),
                        y64.view(),
                        2,
                        0.5,
                        Some(&w64),
                        r,
                        1.0,
                    ),
                ),
            ];
            for (name, loss, want) in cases {
                let what = format!("{name} {shape:?} {reduction:?} vec4={}", gpu.vec4());
                let out = loss.compute(gpu, &x, &y).unwrap();
                let tol = if reduction == Reduction::None {
                    ELEMENTWISE
                } else {
                    REDUCED
                };
                assert_output(gpu, &what, &out, &want, tol, ELEMENTWISE);
            }
        }
    }
}

/// GHM-C bins gradient norms that lie exactly on an edge as mmdet does (g >= k / bins opens bin k,
/// the edge rounded as f32 division rounds it): logits 0 give g = |1/2 - t|, so targets 0, 1, 1/2,
/// 1/4, 3/4 and 1/8 put g on the edges 1/2, 0, 1/4 and 3/8 of 4, 8 and 10 bins; 0.9 puts it an
/// ulp under the rounded edge 4/10; logits of ±30 with targets 0 and 1 put it at 0 and 1 (in
/// f32; within 1e-13 of them in f64, in the same bins). (A target of 0.2 would not do: 1/2 - 0.2
/// rounds up onto the edge 3/10 in f32, as in mmdet, and stays under it in the f64 reference.)
#[test]
fn ghm_c_bins_norms_on_the_edges_as_the_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let pairs = [
        (0.0f32, 0.0f32),
        (0.0, 1.0),
        (0.0, 0.5),
        (0.0, 0.25),
        (0.0, 0.75),
        (0.0, 0.125),
        (0.0, 0.9),
        (30.0, 0.0),
        (30.0, 1.0),
        (-30.0, 0.0),
        (-30.0, 1.0),
    ];
    // Pair j 3 + 7 j times, so that the bins' counts (and weights) differ.
    let (x, t): (Vec<f32>, Vec<f32>) = (pairs.iter().enumerate())
        .flat_map(|(j, &pair)| std::iter::repeat_n(pair, 3 + 7 * j))
        .unzip();
    let n = x.len();
    for bins in [4, 8, 10] {
        for reduction in [Reduction::None, Reduction::Mean] {
            let config = wgloss::GhmCConfig {
                bins,
                reduction,
                ..Default::default()
            };
            let loss = wgloss::GhmC::new(gpu, config).unwrap();
            let out = loss
                .compute(
                    gpu,
                    &Tensor::from_slice(gpu, &x, &[n]).unwrap(),
                    &Tensor::from_slice(gpu, &t, &[n]).unwrap(),
                )
                .unwrap();
            let want = wgloss_ref::ghm_c(
                to_f64(&x, &[n]).view(),
                to_f64(&t, &[n]).view(),
                None,
                bins,
                0.0,
                &mut vec![0.0; bins],
                reduction_ref(reduction),
                1.0,
            );
            let what = format!("ghm_c on the edges, {bins} bins {reduction:?}");
            let tol = loss_tolerance(reduction);
            assert_output(gpu, &what, &out, &want, tol, ELEMENTWISE);
        }
    }
}

/// GHM-C with mmdet's `label_weight` mask: masked elements get weight 0 and are not counted, and
/// the running counts evolve on the GPU exactly as in the reference, call after call; with f32
/// inputs and with 16-bit ones of an odd length (the last word's padding half is no element);
/// and on a GPU's walk with 1,280 workgroups, more than the update pass has invocations per bin
/// (each then totals several workgroups' counts).
#[test]
fn ghm_c_with_a_mask_matches_reference_across_calls() {
    let Some(shared) = shared_gpu() else { return };
    let cases = [
        (DType::F32, [1000, 7], shared.clone()),
        (DType::F16, [999, 7], shared.clone()),
        (
            DType::F32,
            [65_536, 5],
            shared
                .with_vec4(false)
                .with_lanes(256)
                .with_max_workgroups(4096),
        ),
    ];
    for &(dtype, shape, ref gpu) in &cases {
        let len = shape[0] * shape[1];
        let (bins, momentum) = (10, 0.75f32);
        let loss = wgloss::GhmC::new(
            gpu,
            wgloss::GhmCConfig {
                bins,
                momentum,
                ..Default::default()
            },
        )
        .unwrap();
        let mut acc = vec![0.0; bins];
        for step in 0..3u64 {
            let mut rng = Rng::new(40 + step);
            let mut x: Vec<f32> = rng
                .uniform(len, -5.0, 5.0)
                .into_iter()
                .map(|v| dtype.round(v))
                .collect();
            let t: Vec<f32> = rng
                .uniform(len, 0.0, 2.0)
                .iter()
                .map(|v| v.floor())
                .collect();
            let m: Vec<f32> = rng
                .uniform(len, 0.0, 1.0)
                .iter()
                .map(|&u| if u < 0.3 { 0.0 } else { 1.0 })
                .collect();
            // Off the bin edges, where f32 and f64 may bin differently.
            for (x, &t) in x.iter_mut().zip(&t) {
                let near_edge = |x: f32| {
                    let g = (1.0 / (1.0 + (-f64::from(x)).exp()) - f64::from(t)).abs();
                    ((g * 10.0).round() - g * 10.0).abs() < 2e-4
                };
                while near_edge(*x) {
                    *x = dtype.round(*x + 1e-2);
                }
            }
            let (px, pt, pm) = (
                Tensor::from_slice_as(gpu, &x, &shape, dtype).unwrap(),
                Tensor::from_slice_as(gpu, &t, &shape, dtype).unwrap(),
                Tensor::from_slice(gpu, &m, &shape).unwrap(),
            );
            let out = loss.compute_masked(gpu, &px, &pt, &pm).unwrap();
            let want = wgloss_ref::ghm_c(
                to_f64(&x, &shape).view(),
                to_f64(&t, &shape).view(),
                Some(to_f64(&m, &shape).view()),
                bins,
                momentum.into(),
                &mut acc,
                wgloss_ref::Reduction::Mean,
                1.0,
            );
            let what = format!("ghm_c masked {dtype:?} step {step}");
            assert_eq!(out.grad.dtype(), dtype, "{what}: gradient type");
            let failures = compare_output(gpu, &what, &out, &want, REDUCED, ELEMENTWISE);
            assert!(failures.is_empty(), "{}", failures.join("\n"));
            let grad = out.grad.to_vec(gpu).unwrap();
            assert!(
                m.iter().zip(&grad).all(|(&m, &g)| m > 0.0 || g == 0.0),
                "{what}: a masked element has a gradient"
            );
            let counts = loss.running_counts(gpu).unwrap();
            let acc64 =
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[bins]), acc.clone()).unwrap();
            compare(
                &format!("{what} running counts"),
                &counts,
                acc64.view(),
                ELEMENTWISE,
            )
            .unwrap();
        }
    }
    let gpu = shared;
    let loss = wgloss::GhmC::new(gpu, wgloss::GhmCConfig::default()).unwrap();
    let wrong = Tensor::from_slice(gpu, &[1.0; 7], &[7]).unwrap();
    let x = Tensor::from_slice(gpu, &[0.0; 7000], &[1000, 7]).unwrap();
    let r = loss.compute_masked(gpu, &x, &x, &wrong);
    assert!(
        matches!(r, Err(wgloss::Error::ShapeMismatch { name: "mask", .. })),
        "{r:?}"
    );
}

/// Confident predictions keep their small losses and gradients (about e^{−|x|}): torch's
/// `(1 − t)·x + softplus(−x)` rounds them to 0 for x ≪ 0 with t = 0, as `(1 − t) − σ(−x)` does
/// the gradient. Logits of both signs with magnitudes from 1e-3 to `max`, three in four on the
/// side of their 0/1 target; element by element, no absolute slack. The relative tolerance
/// covers the exponential's own error, which grows with |x| (the range reduction of x·log2 e).
#[test]
fn confident_binary_predictions_keep_their_small_losses() {
    let n = 2_051;
    let data = |max: f64| {
        let logits: Vec<f32> = (0..n)
            .map(|i| {
                let m = 10f64.powf(-3.0 + (3.0 + max.log10()) * i as f64 / (n - 1) as f64);
                (if i % 2 == 0 { m } else { -m }) as f32
            })
            .collect();
        let targets: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(i, &x)| f32::from((x > 0.0) != (i % 4 == 3)))
            .collect();
        (logits, targets)
    };
    let tol = Tolerance {
        rtol: 2e-5,
        atol_frac: 0.0,
    };
    let pos_weight: Vec<f32> = vec![1.7];
    let cases: [(&str, f64, Box<dyn Loss>, RefFn); 3] = [
        (
            "bce_with_logits",
            80.0,
            Box::new(wgloss::BceWithLogits {
                reduction: Reduction::None,
                ..Default::default()
            }),
            Box::new(|x, t| {
                wgloss_ref::bce_with_logits(x, t, None, None, wgloss_ref::Reduction::None, 1.0)
            }),
        ),
        (
            "bce_with_logits pos_weight=1.7",
            80.0,
            Box::new(wgloss::BceWithLogits {
                pos_weight: Some(pos_weight),
                reduction: Reduction::None,
                ..Default::default()
            }),
            Box::new(|x, t| {
                wgloss_ref::bce_with_logits(
                    x,
                    t,
                    Some(&[1.7]),
                    None,
                    wgloss_ref::Reduction::None,
                    1.0,
                )
            }),
        ),
        (
            // ce q^γ is about e^{−3|x|} at γ = 2: |x| ≤ 25 keeps it a normal f32.
            "sigmoid_focal",
            25.0,
            Box::new(wgloss::SigmoidFocal {
                reduction: Reduction::None,
                ..Default::default()
            }),
            Box::new(|x, t| {
                wgloss_ref::sigmoid_focal(x, t, 0.25, 2.0, wgloss_ref::Reduction::None, 1.0)
            }),
        ),
    ];
    let mut failures = Vec::new();
    for gpu in widths() {
        for (name, max, loss, reference) in &cases {
            let (logits, targets) = data(*max);
            let shape = [n, 1];
            let want = reference(
                to_f64(&logits, &shape).view(),
                to_f64(&targets, &shape).view(),
            );
            let x = Tensor::from_slice(&gpu, &logits, &shape).unwrap();
            let t = Tensor::from_slice(&gpu, &targets, &shape).unwrap();
            let out = loss.compute(&gpu, &x, &t).unwrap();
            let what = format!("{name} vec4={}", gpu.vec4());
            failures.extend(compare_output(&gpu, &what, &out, &want, tol, tol));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

type RefFn = Box<dyn Fn(ArrayViewD<'_, f64>, ArrayViewD<'_, f64>) -> wgloss_ref::LossGrad>;

/// Confident class rows keep their small losses and gradients (about the sum t of e^{x_c − x_y}
/// over the other classes): torch's `LSE − x_y` and `p_y − 1` round them to 0 once t falls below
/// LSE's last bit. Margins between the label's logit and the others from 1e-3 to `max`, one row
/// in four with its label below another class; every class-row path (one invocation per row for
/// few classes, a workgroup per row at one and four logits per step); row by row, no absolute
/// slack. The relative tolerance covers the exponential's own error, which grows with |x|.
#[test]
fn confident_class_rows_keep_their_small_losses() {
    let data = |n: usize, c: usize, max: f64| {
        let mut logits = vec![0f32; n * c];
        let mut labels = vec![0i32; n];
        for r in 0..n {
            let margin = 10f64.powf(-3.0 + (3.0 + max.log10()) * r as f64 / (n - 1) as f64);
            let y = (r * 7 + 3) % c;
            labels[r] = y as i32;
            for k in 0..c {
                let spread = 0.5 * ((k * 13 + r) % 11) as f64 / 11.0;
                logits[r * c + k] = if k == y {
                    2.5
                } else if r % 4 == 3 && k == (y + 1) % c {
                    2.5 + margin
                } else {
                    2.5 - margin - spread
                } as f32;
            }
        }
        (logits, labels)
    };
    let tol = Tolerance {
        rtol: 2e-5,
        atol_frac: 0.0,
    };
    let mut failures = Vec::new();
    for gpu in widths() {
        for (n, c) in [(301, 5), (37, 1000)] {
            // Margins to 40 keep every probability a normal f32 (a row whose label is beaten
            // puts the others two margins down); the focal loss is about t^3 at γ = 2, so 22.
            let cases: [(&str, f64, Box<dyn Loss>, RefFn); 3] = [
                (
                    "cross_entropy",
                    40.0,
                    Box::new(CrossEntropy {
                        reduction: Reduction::None,
                        ..Default::default()
                    }),
                    Box::new(|x, y| {
                        let none = wgloss_ref::Reduction::None;
                        wgloss_ref::cross_entropy(x, y, None, -100, 0.0, none, 1.0)
                    }),
                ),
                (
                    "poly1",
                    40.0,
                    Box::new(Poly1 {
                        reduction: Reduction::None,
                        ..Default::default()
                    }),
                    Box::new(|x, y| {
                        wgloss_ref::poly1(x, y, 1.0, -100, wgloss_ref::Reduction::None, 1.0)
                    }),
                ),
                (
                    "softmax_focal",
                    22.0,
                    Box::new(wgloss::SoftmaxFocal {
                        reduction: Reduction::None,
                        ..Default::default()
                    }),
                    Box::new(|x, y| {
                        let none = wgloss_ref::Reduction::None;
                        wgloss_ref::softmax_focal(x, y, 2.0, None, -100, none, 1.0)
                    }),
                ),
            ];
            for (name, max, loss, reference) in &cases {
                let (logits, labels) = data(n, c, *max);
                let labels64: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
                let want = reference(
                    to_f64(&logits, &[n, c]).view(),
                    to_f64(&labels64, &[n]).view(),
                );
                let x = Tensor::from_slice(&gpu, &logits, &[n, c]).unwrap();
                let y = Tensor::from_labels(&gpu, &labels, &[n]).unwrap();
                let out = loss.compute(&gpu, &x, &y).unwrap();
                let what = format!("{name} [{n}, {c}] vec4={}", gpu.vec4());
                failures.extend(compare_output(&gpu, &what, &out, &want, tol, tol));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
