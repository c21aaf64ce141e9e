//! Margin heads through their own two-input API, for what the registry's stacked form does not
//! reach: class weights past one storage binding (the segmented class loop), ArcFace past
//! θ + m > π, zero vectors, AdaFace's running statistics, and the shape and label errors.

use wgloss::{
    AdaFace, AdaFaceConfig, ArcFace, CosFace, Error, Gpu, HeadOutput, MarginHead, SphereFace,
    Tensor,
};
use wgloss_ref::MultiGrad;
use wgloss_suite::check::{compare, to_f64, Rng, Tolerance, REDUCED};
use wgloss_suite::shared_gpu;

/// Gradients sum C (or N) terms of both signs, each with the cosine's rounding times the scale
/// (64) in its softmax weight.
const GRAD: Tolerance = Tolerance {
    rtol: 1e-4,
    atol_frac: 1e-4,
};

struct Case {
    emb: Vec<f32>,
    weight: Vec<f32>,
    labels: Vec<i32>,
    n: usize,
    d: usize,
    classes: usize,
}

impl Case {
    fn random(n: usize, d: usize, classes: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let emb = rng.uniform(n * d, -1.0, 1.0);
        let weight = rng.uniform(classes * d, -1.0, 1.0);
        let labels = rng
            .uniform(n, 0.0, 1.0)
            .iter()
            .map(|&u| ((u * classes as f32) as i32).min(classes as i32 - 1))
            .collect();
        Self {
            emb,
            weight,
            labels,
            n,
            d,
            classes,
        }
    }

    fn upload(&self, gpu: &Gpu) -> (Tensor, Tensor, Tensor) {
        (
            Tensor::from_slice(gpu, &self.emb, &[self.n, self.d]).unwrap(),
            Tensor::from_slice(gpu, &self.weight, &[self.classes, self.d]).unwrap(),
            Tensor::from_labels(gpu, &self.labels, &[self.n]).unwrap(),
        )
    }

    /// Runs `head` and compares loss and both gradients with `reference`.
    fn check(
        &self,
        what: &str,
        head: &dyn MarginHead,
        reference: impl FnOnce(
            ndarray::ArrayViewD<'_, f64>,
            ndarray::ArrayViewD<'_, f64>,
            ndarray::ArrayViewD<'_, f64>,
        ) -> MultiGrad,
    ) {
        let gpu = shared_gpu().expect("an adapter");
        let (e, w, y) = self.upload(gpu);
        let out = head.compute(gpu, &e, &w, &y).unwrap();
        let labels: Vec<f32> = self.labels.iter().map(|&l| l as f32).collect();
        let want = reference(
            to_f64(&self.emb, &[self.n, self.d]).view(),
            to_f64(&self.weight, &[self.classes, self.d]).view(),
            to_f64(&labels, &[self.n]).view(),
        );
        let got = [
            out.out.loss.to_vec(gpu).unwrap(),
            out.out.grad.to_vec(gpu).unwrap(),
            out.grad_weight.to_vec(gpu).unwrap(),
        ];
        assert!(
            got.iter().flatten().all(|x| x.is_finite()),
            "{what}: non-finite output"
        );
        compare(&format!("{what} loss"), &got[0], want.loss.view(), REDUCED).unwrap();
        compare(&format!("{what} grad"), &got[1], want.grads[0].view(), GRAD).unwrap();
        compare(
            &format!("{what} grad_weight"),
            &got[2],
            want.grads[1].view(),
            GRAD,
        )
        .unwrap();
    }
}

/// Class weights larger than one storage binding (on lavapipe's 128 MiB: 8256 rows of 4096) run
/// in segments, each bound on its own.
#[test]
fn class_weights_beyond_one_binding_are_split() {
    let Some(gpu) = shared_gpu() else { return };
    let d = 4096;
    let max_rows = (gpu.limits().max_storage_buffer_binding_size / 4) as usize / d;
    let classes = (max_rows + 64).min(20_000);
    if classes <= max_rows {
        eprintln!("note: this adapter binds {classes} class rows at once; no split to check");
    }
    let case = Case::random(2, d, classes, 41);
    case.check("cosface split", &CosFace::default(), |e, w, y| {
        wgloss_ref::cosface(e, w, y, 64.0, 0.35, 1.0)
    });
}

/// Rows pass through workgroup memory 64 columns at a time: rows of exactly one span, and of two
/// spans and a partial third whose width is not a multiple of four.
#[test]
fn wide_rows_cross_the_staging_spans() {
    if shared_gpu().is_none() {
        return;
    }
    for (n, d, classes) in [(20, 64, 17), (19, 133, 21)] {
        let case = Case::random(n, d, classes, 50 + d as u64);
        case.check(&format!("cosface d={d}"), &CosFace::default(), |e, w, y| {
            wgloss_ref::cosface(e, w, y, 64.0, 0.35, 1.0)
        });
        case.check(&format!("arcface d={d}"), &ArcFace::default(), |e, w, y| {
            wgloss_ref::arcface(e, w, y, 64.0, 0.5, 1.0)
        });
        case.check(
            &format!("sphereface d={d}"),
            &SphereFace::default(),
            |e, w, y| wgloss_ref::sphereface(e, w, y, 4, 1.0),
        );
    }
}

/// Many classes (segments of 16,384) and many rows (row groups of 16,384 in the class
/// gradient): every walk is cut short and the pieces add up.
#[test]
fn many_classes_and_rows_match_reference() {
    if shared_gpu().is_none() {
        return;
    }
    let case = Case::random(5, 16, 40_000, 3);
    case.check("cosface C=40000", &CosFace::default(), |e, w, y| {
        wgloss_ref::cosface(e, w, y, 64.0, 0.35, 1.0)
    });
    let case = Case::random(16_400, 3, 20, 4);
    case.check("arcface N=16400", &ArcFace::default(), |e, w, y| {
        wgloss_ref::arcface(e, w, y, 64.0, 0.5, 1.0)
    });
}

/// ArcFace targets at θ > π − m take insightface's fallback logit, and all other heads agree on
/// a batch with a single class and a batch with a single row.
#[test]
fn arcface_past_pi_and_degenerate_batches_match_reference() {
    if shared_gpu().is_none() {
        return;
    }
    // Targets almost opposite their class weights: θ ≈ 2.5–3.1 rad.
    let mut case = Case::random(6, 4, 3, 5);
    for i in 0..case.n {
        let y = case.labels[i] as usize;
        for j in 0..case.d {
            case.emb[i * case.d + j] = -case.weight[y * case.d + j] + 0.05 * (i + j) as f32;
        }
    }
    for margin in [0.5f32, 1.0, 2.0] {
        let head = ArcFace {
            margin,
            ..Default::default()
        };
        case.check(&format!("arcface margin {margin}"), &head, |e, w, y| {
            wgloss_ref::arcface(e, w, y, 64.0, margin.into(), 1.0)
        });
    }
    for (n, classes) in [(1, 5), (7, 1)] {
        let case = Case::random(n, 5, classes, 9);
        let what = format!("N={n} C={classes}");
        case.check(
            &format!("cosface {what}"),
            &CosFace::default(),
            |e, w, y| wgloss_ref::cosface(e, w, y, 64.0, 0.35, 1.0),
        );
        case.check(
            &format!("sphereface {what}"),
            &SphereFace::default(),
            |e, w, y| wgloss_ref::sphereface(e, w, y, 4, 1.0),
        );
    }
}

/// Zero embeddings and zero class weights give finite results (the clamped norm), as torch.
#[test]
fn zero_vectors_are_finite() {
    if shared_gpu().is_none() {
        return;
    }
    let mut case = Case::random(5, 3, 4, 13);
    case.emb[3..6].fill(0.0);
    case.weight[6..9].fill(0.0);
    case.check("cosface zeros", &CosFace::default(), |e, w, y| {
        wgloss_ref::cosface(e, w, y, 64.0, 0.35, 1.0)
    });
    case.check("arcface zeros", &ArcFace::default(), |e, w, y| {
        wgloss_ref::arcface(e, w, y, 64.0, 0.5, 1.0)
    });
    case.check("sphereface zeros", &SphereFace::default(), |e, w, y| {
        wgloss_ref::sphereface(e, w, y, 4, 1.0)
    });
}

/// AdaFace's running statistics advance on the GPU exactly as head.py's buffers, call after
/// call, and each call's loss and gradients use the updated ones; one row has std 0.
#[test]
fn adaface_state_follows_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let config = AdaFaceConfig::default();
    let head = AdaFace::new(gpu, config).unwrap();
    let mut state = wgloss_ref::AdaFaceState::default();
    for (step, n) in [(0u64, 9usize), (1, 1), (2, 40)] {
        // Norms spread over [0, 6]: some margins clip at ±1.
        let mut case = Case::random(n, 8, 5, 100 + step);
        for (i, x) in case.emb.iter_mut().enumerate() {
            *x *= 1.0 + (i / 8) as f32 * 0.7;
        }
        case.check(&format!("adaface step {step}"), &head, |e, w, y| {
            wgloss_ref::adaface(e, w, y, &mut state, 0.4, 0.333, 64.0, 0.01, 1.0)
        });
        let [mean, std] = head.running_stats(gpu).unwrap();
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-5 * b.abs().max(1.0);
        assert!(
            close(mean, state.batch_mean) && close(std, state.batch_std),
            "step {step}: state ({mean}, {std}), reference {state:?}"
        );
    }
}

/// Mismatched N or D, empty inputs and bad labels get typed errors; nothing is written.
#[test]
fn bad_inputs_are_rejected() {
    let Some(gpu) = shared_gpu() else { return };
    let case = Case::random(4, 3, 5, 1);
    let (e, w, y) = case.upload(gpu);
    let head = CosFace::default();
    let y5 = Tensor::from_labels(gpu, &[0; 5], &[5]).unwrap();
    let w4 = Tensor::from_slice(gpu, &[0.5; 20], &[5, 4]).unwrap();
    let e0 = Tensor::from_slice(gpu, &[], &[0, 3]).unwrap();
    let y0 = Tensor::from_labels(gpu, &[], &[0]).unwrap();
    let out = HeadOutput::new(gpu, 4, 3, 5).unwrap();
    let encode = |e: &Tensor, w: &Tensor, y: &Tensor| {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let r = head.encode(gpu, &mut encoder, e, w, y, &out);
        gpu.submit_and_wait(encoder).unwrap();
        r
    };
    assert!(matches!(
        encode(&e, &w, &y5),
        Err(Error::ShapeMismatch { name: "target", .. })
    ));
    assert!(matches!(
        encode(&e, &w4, &y),
        Err(Error::ShapeMismatch { name: "weight", .. })
    ));
    assert!(matches!(
        encode(&e0, &w, &y0),
        Err(Error::Empty { name: "embeddings" })
    ));
    let temperature = CosFace {
        scale: f32::INFINITY,
        ..Default::default()
    };
    assert!(matches!(
        temperature.compute(gpu, &e, &w, &y),
        Err(Error::InvalidParameter { name: "scale", .. })
    ));
    assert!(out
        .out
        .grad
        .to_vec(gpu)
        .unwrap()
        .iter()
        .chain(&out.grad_weight.to_vec(gpu).unwrap())
        .all(|&x| x == 0.0));
    let bad = Tensor::from_labels(gpu, &[0, 1, 5, -1], &[4]).unwrap();
    match head.compute(gpu, &e, &w, &bad) {
        Err(Error::LabelOutOfRange {
            position: 2,
            label: 5,
            classes: 5,
        }) => {}
        other => panic!("expected the label at 2 to be reported, got {other:?}"),
    }
}
