//! Cross-entropy at the class counts that matter in practice, beyond the registry's generic
//! sweep: binary, ImageNet, GPT-2's vocabulary and 2^18 classes in one call (rows longer than a
//! workgroup are streamed), with weights, label smoothing, ignored rows, logits of ±1e4 and
//! trailing spatial dimensions.

use wgloss::{CrossEntropy, Loss, Poly1, Reduction, Tensor};
use wgloss_suite::check::{compare, to_f64, Rng, Tolerance, ELEMENTWISE, REDUCED};
use wgloss_suite::shared_gpu;

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

fn check(case: &Case) {
    let Some(gpu) = shared_gpu() else { return };
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
        "cross_entropy {shape:?} weighted={} eps={} {:?} poly={:?}",
        case.weighted, case.smoothing, case.reduction, case.poly
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

/// A batch whose every row is ignored has loss 0 and a zero gradient under mean (torch: NaN).
#[test]
fn all_ignored_batch_gives_zero() {
    let Some(gpu) = shared_gpu() else { return };
    for c in [3, 300] {
        let logits = Rng::new(3).uniform(4 * c, -1.0, 1.0);
        let x = Tensor::from_slice(gpu, &logits, &[4, c]).unwrap();
        let y = Tensor::from_labels(gpu, &[-100; 4], &[4]).unwrap();
        let out = CrossEntropy::default().compute(gpu, &x, &y).unwrap();
        assert_eq!(out.loss.to_vec(gpu).unwrap(), [0.0]);
        assert!(out.grad.to_vec(gpu).unwrap().iter().all(|&g| g == 0.0));
    }
}
