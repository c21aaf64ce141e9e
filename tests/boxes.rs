//! Box losses on the cases the registry's random boxes never produce: degenerate boxes (zero
//! width or height, zero area, identical, touching, disjoint, nested), in both formats, against
//! the f64 reference, plus values worked by hand.

use wgloss::{BoxFormat, Ciou, Diou, Eiou, Giou, Iou, Loss, Reduction, Siou, Tensor};
use wgloss_suite::check::{compare, to_f64, Tolerance};
use wgloss_suite::shared_gpu;

/// Degenerate pairs, `(pred, target)` in xyxy.
const CASES: &[([f32; 4], [f32; 4])] = &[
    ([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]), // identical
    ([0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]), // zero-width prediction
    ([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]), // zero-height prediction
    ([0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 2.0]), // zero-width target
    ([2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]), // identical points
    ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 3.0, 3.0]), // a point inside a box
    ([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]), // touching along an edge
    ([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]), // touching at a corner
    ([0.0, 0.0, 1.0, 1.0], [5.0, 7.0, 6.0, 9.0]), // far apart
    ([0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 2.0, 3.0]), // nested
    ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]), // both empty at the origin
];

fn losses(format: BoxFormat) -> Vec<(&'static str, wgloss_ref::BoxKind, Box<dyn Loss>)> {
    use wgloss_ref::BoxKind as K;
    let r = Reduction::None;
    let (eps, grad_scale) = (1e-7, 1.0);
    vec![
        (
            "iou",
            K::Iou,
            Box::new(Iou {
                format,
                eps,
                reduction: r,
                grad_scale,
            }),
        ),
        (
            "giou",
            K::Giou,
            Box::new(Giou {
                format,
                eps,
                reduction: r,
                grad_scale,
            }),
        ),
        (
            "diou",
            K::Diou,
            Box::new(Diou {
                format,
                eps,
                reduction: r,
                grad_scale,
            }),
        ),
        (
            "ciou",
            K::Ciou,
            Box::new(Ciou {
                format,
                eps,
                reduction: r,
                grad_scale,
            }),
        ),
        (
            "eiou",
            K::Eiou,
            Box::new(Eiou {
                format,
                eps,
                reduction: r,
                grad_scale,
            }),
        ),
        (
            "siou",
            K::Siou,
            Box::new(Siou {
                format,
                eps,
                reduction: r,
                grad_scale,
            }),
        ),
    ]
}

/// Every degenerate pair gives a finite loss and gradient equal to the reference's. Gradients
/// of degenerate pairs can reach 1/eps; f32 carries them to about 1e-6 relative of the largest.
#[test]
fn degenerate_boxes_are_finite_and_match_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let tol = Tolerance {
        rtol: 1e-3,
        atol_frac: 1e-5,
    };
    for format in [BoxFormat::Xyxy, BoxFormat::Cxcywh] {
        let pred: Vec<f32> = CASES.iter().flat_map(|c| c.0).collect();
        let target: Vec<f32> = CASES.iter().flat_map(|c| c.1).collect();
        let shape = [CASES.len(), 4];
        let (p, t) = (
            Tensor::from_slice(gpu, &pred, &shape).unwrap(),
            Tensor::from_slice(gpu, &target, &shape).unwrap(),
        );
        let fmt = match format {
            BoxFormat::Xyxy => wgloss_ref::BoxFormat::Xyxy,
            BoxFormat::Cxcywh => wgloss_ref::BoxFormat::Cxcywh,
        };
        for (name, kind, loss) in losses(format) {
            let out = loss.compute(gpu, &p, &t).unwrap();
            let (l, g) = (out.loss.to_vec(gpu).unwrap(), out.grad.to_vec(gpu).unwrap());
            let what = format!("{name} {format:?}");
            assert!(
                l.iter().chain(&g).all(|x| x.is_finite()),
                "{what}: non-finite output {l:?} {g:?}"
            );
            let want = wgloss_ref::box_loss(
                kind,
                to_f64(&pred, &shape).view(),
                to_f64(&target, &shape).view(),
                fmt,
                1e-7,
                wgloss_ref::Reduction::None,
                1.0,
            );
            compare(&format!("{what} loss"), &l, want.loss.view(), tol).unwrap();
            compare(&format!("{what} grad"), &g, want.grad.view(), tol).unwrap();
        }
    }
}

/// Values worked by hand: two disjoint unit squares one apart (GIoU 1 + 1/3, DIoU 1 + 4/10),
/// and nested squares (IoU loss 1 − 1/4).
#[test]
fn hand_computed_values() {
    let Some(gpu) = shared_gpu() else { return };
    let boxes = |b: &[f32]| Tensor::from_slice(gpu, b, &[b.len() / 4, 4]).unwrap();
    let (p, t) = (
        boxes(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0]),
        boxes(&[2.0, 0.0, 3.0, 1.0, 0.5, 0.5, 1.5, 1.5]),
    );
    let none = Reduction::None;
    let giou = Giou {
        reduction: none,
        ..Default::default()
    }
    .compute(gpu, &p, &t)
    .unwrap();
    let diou = Diou {
        reduction: none,
        ..Default::default()
    }
    .compute(gpu, &p, &t)
    .unwrap();
    let iou = Iou {
        reduction: none,
        ..Default::default()
    }
    .compute(gpu, &p, &t)
    .unwrap();
    let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-5;
    // Disjoint: C = 3 x 1, union 2; centres 2 apart, enclosing diagonal^2 = 9 + 1.
    let g = giou.loss.to_vec(gpu).unwrap();
    assert!(close(g[0], 1.0 + 1.0 / 3.0), "giou {g:?}");
    let d = diou.loss.to_vec(gpu).unwrap();
    assert!(close(d[0], 1.0 + 4.0 / 10.0), "diou {d:?}");
    // Nested: the 1 x 1 target inside the 2 x 2 prediction, IoU = 1 / 4.
    let i = iou.loss.to_vec(gpu).unwrap();
    assert!(close(i[1], 0.75), "iou {i:?}");
    // d(1 − IoU)/dx2 of the nested pair: IoU = 1 / ((x2 − x1)(y2 − y1)), so +1/8 at x2.
    let gi = iou.grad.to_vec(gpu).unwrap();
    assert!(close(gi[6], 0.125), "iou grad {gi:?}");
}

/// Boxes must be `[N, 4]`.
#[test]
fn boxes_of_the_wrong_rank_are_rejected() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice(gpu, &[0.0; 12], &[4, 3]).unwrap();
    let r = Giou::default().compute(gpu, &x, &x);
    assert!(
        matches!(r, Err(wgloss::Error::InvalidShape { name: "pred", .. })),
        "{r:?}"
    );
}

/// 16-bit boxes across 1 MiB bindings (four segments and a tail): the six losses in both
/// formats against the reference on the rounded coordinates, the gradient in the boxes' type.
#[test]
fn half_boxes_split_across_bindings() {
    for gpu in wgloss_suite::small_binding_gpus() {
        let n = 300_001;
        let mut rng = wgloss_suite::check::Rng::new(11);
        for (format, dtype) in [
            (BoxFormat::Xyxy, wgloss::DType::F16),
            (BoxFormat::Cxcywh, wgloss::DType::BF16),
        ] {
            // Positive coordinates, valid as corners and as centre and size: an overlapping pair
            // in most rows.
            let target: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let u = rng.uniform(4, 0.0, 1.0);
                    [4.0 * u[0], 4.0 * u[1], 4.5 + 3.0 * u[2], 4.5 + 3.0 * u[3]]
                })
                .map(|x| dtype.round(x))
                .collect();
            let pred: Vec<f32> = target
                .iter()
                .zip(rng.uniform(4 * n, -0.4, 0.4))
                .map(|(&t, d)| dtype.round(t + d))
                .collect();
            let p = Tensor::from_slice_as(gpu, &pred, &[n, 4], dtype).unwrap();
            let t = Tensor::from_slice_as(gpu, &target, &[n, 4], dtype).unwrap();
            let fmt = match format {
                BoxFormat::Xyxy => wgloss_ref::BoxFormat::Xyxy,
                BoxFormat::Cxcywh => wgloss_ref::BoxFormat::Cxcywh,
            };
            for (name, kind, loss) in losses(format) {
                let out = loss.compute(gpu, &p, &t).unwrap();
                let want = wgloss_ref::box_loss(
                    kind,
                    to_f64(&pred, &[n, 4]).view(),
                    to_f64(&target, &[n, 4]).view(),
                    fmt,
                    1e-7,
                    wgloss_ref::Reduction::None,
                    1.0,
                );
                let what = format!("{name} {format:?} {dtype:?}");
                let failures = wgloss_suite::check::compare_output(
                    gpu,
                    &what,
                    &out,
                    &want,
                    wgloss_suite::check::ELEMENTWISE,
                    wgloss_suite::check::ELEMENTWISE,
                );
                assert!(failures.is_empty(), "{}", failures.join("\n"));
            }
        }
    }
}
