//! Generative (F6) cases the registry's generated inputs do not reach: diffusion_mse with
//! per-sample weights (a third input, also beside f16 inputs) and its typed errors, kl_div at
//! targets of exactly 0 and near 1, the WGAN-GP interpolation kernel, cycle consistency over
//! domains of different shapes, the GAN losses over sets of logits of different sizes,
//! perceptual and style over layers of different shapes.

use wgloss::{DType, DiffusionMse, KlDiv, KlReduction, Loss, Reduction, Tensor};
use wgloss_suite::check::{
    assert_like_f32_call, compare, compare_output, to_f64, Rng, Tolerance, ELEMENTWISE, REDUCED,
    SINKHORN,
};
use wgloss_suite::registry::IntoRef;
use wgloss_suite::shared_gpu;

/// Compares a GPU loss and gradient with the reference's.
fn compare_out(
    what: &str,
    gpu: &wgloss::Gpu,
    out: &wgloss::LossOutput,
    want: &wgloss_ref::LossGrad,
) {
    let tolerance = if want.loss.ndim() == 0 {
        REDUCED
    } else {
        ELEMENTWISE
    };
    let failures = compare_output(gpu, what, out, want, tolerance, ELEMENTWISE);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diffusion_mse_weights_match_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(6);
    // Samples of 1, 5 and 3·4·4 elements; 9 samples of 20,000 (the vec4 path, several
    // workgroups per sample); f32 inputs, and f16 ones (rows of odd length across words).
    let shapes = [vec![7, 1], vec![3, 5], vec![4, 3, 4, 4], vec![9, 20_000]];
    for (shape, dtype) in shapes
        .into_iter()
        .flat_map(|s| [(s.clone(), DType::F32), (s, DType::F16)])
    {
        let len: usize = shape.iter().product();
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| dtype.round(x)).collect() };
        let pred = round(rng.uniform(len, -2.0, 2.0));
        let noise = round(rng.uniform(len, -2.0, 2.0));
        let weights = rng.uniform(shape[0], 0.0, 5.0);
        let p = Tensor::from_slice_as(gpu, &pred, &shape, dtype).unwrap();
        let t = Tensor::from_slice_as(gpu, &noise, &shape, dtype).unwrap();
        let w = Tensor::from_slice(gpu, &weights, &[shape[0]]).unwrap();
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let loss = DiffusionMse {
                weights: Some(&w),
                reduction,
                grad_scale: 0.5,
            };
            let out = loss.compute(gpu, &p, &t).unwrap();
            let w64 = to_f64(&weights, &[shape[0]]);
            let want = wgloss_ref::diffusion_mse(
                to_f64(&pred, &shape).view(),
                to_f64(&noise, &shape).view(),
                Some(w64.view()),
                reduction.into_ref(),
                0.5,
            );
            compare_out(
                &format!("diffusion_mse {shape:?} {dtype:?} {reduction:?}"),
                gpu,
                &out,
                &want,
            );
        }
    }
}

#[test]
fn diffusion_mse_rejects_bad_weights() {
    let Some(gpu) = shared_gpu() else { return };
    let p = Tensor::from_slice(gpu, &[0.5f32; 12], &[3, 4]).unwrap();
    let wrong_len = Tensor::from_slice(gpu, &[1.0f32; 4], &[4]).unwrap();
    let wrong_type = Tensor::from_labels(gpu, &[1, 1, 1], &[3]).unwrap();
    for (what, w) in [("length", &wrong_len), ("dtype", &wrong_type)] {
        let loss = DiffusionMse {
            weights: Some(w),
            ..Default::default()
        };
        let err = loss.compute(gpu, &p, &p).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                err,
                wgloss::Error::ShapeMismatch { .. } | wgloss::Error::DTypeMismatch { .. }
            ),
            "{what}: {err}"
        );
    }
}

#[test]
fn kl_div_at_zero_targets_matches_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let shape = [4, 6];
    let input = Rng::new(8).uniform(24, -5.0, 0.0);
    // Every other target exactly 0: torch's xlogy gives those terms 0.
    let target: Vec<f32> = (0..24)
        .map(|i| {
            if i % 2 == 0 {
                0.0
            } else {
                0.1 * (i % 7) as f32
            }
        })
        .collect();
    let x = Tensor::from_slice(gpu, &input, &shape).unwrap();
    let y = Tensor::from_slice(gpu, &target, &shape).unwrap();
    for (gpu_reduction, ref_reduction) in [
        (KlReduction::BatchMean, wgloss_ref::KlReduction::BatchMean),
        (KlReduction::None, wgloss_ref::KlReduction::None),
    ] {
        let loss = KlDiv {
            reduction: gpu_reduction,
            ..Default::default()
        };
        let out = loss.compute(gpu, &x, &y).unwrap();
        let want = wgloss_ref::kl_div(
            to_f64(&input, &shape).view(),
            to_f64(&target, &shape).view(),
            ref_reduction,
            false,
            1.0,
        );
        compare_out(&format!("kl_div zeros {gpu_reduction:?}"), gpu, &out, &want);
    }
}

/// kl_div's pointwise `t log t − t p` for targets near 1 (p = 0): `t log t ≈ t − 1` keeps its
/// relative precision, element by element with no absolute slack (2e-6 relative), which the
/// logarithm's absolute bound near 1 (2^-21 on Vulkan) would not give.
#[test]
fn kl_div_keeps_relative_precision_for_targets_near_one() {
    let Some(gpu) = shared_gpu() else { return };
    let target: Vec<f32> = (1..=7)
        .flat_map(|k| {
            let h = 10f32.powi(-k);
            [1.0 + h, 1.0 - h, 1.0 + 3.0 * h, 1.0 - 3.0 * h]
        })
        .chain([0.5, 0.75, 1.5, 2.0, 0.3, 2.5])
        .collect();
    let n = target.len();
    let input = vec![0.0f32; n];
    let x = Tensor::from_slice(gpu, &input, &[n]).unwrap();
    let y = Tensor::from_slice(gpu, &target, &[n]).unwrap();
    let loss = KlDiv {
        reduction: KlReduction::None,
        ..Default::default()
    };
    let out = loss.compute(gpu, &x, &y).unwrap();
    let want = wgloss_ref::kl_div(
        to_f64(&input, &[n]).view(),
        to_f64(&target, &[n]).view(),
        wgloss_ref::KlReduction::None,
        false,
        1.0,
    );
    let tight = Tolerance {
        rtol: 2e-6,
        atol_frac: 0.0,
    };
    let got = out.loss.to_vec(gpu).unwrap();
    compare("kl_div near 1 loss", &got, want.loss.view(), tight).unwrap();
}

/// WGAN-GP's interpolates against the reference, and its typed errors.
#[test]
fn gan_interpolate_matches_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(9);
    for shape in [vec![5, 3], vec![3, 2, 4, 4], vec![2, 70_001]] {
        let len: usize = shape.iter().product();
        let real = rng.uniform(len, -2.0, 2.0);
        let fake = rng.uniform(len, -2.0, 2.0);
        let eps = rng.uniform(shape[0], 0.0, 1.0);
        let r = Tensor::from_slice(gpu, &real, &shape).unwrap();
        let f = Tensor::from_slice(gpu, &fake, &shape).unwrap();
        let e = Tensor::from_slice(gpu, &eps, &[shape[0]]).unwrap();
        let out = Tensor::zeros(gpu, &shape).unwrap();
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        wgloss::gan_interpolate(gpu, &mut encoder, &r, &f, &e, &out).unwrap();
        gpu.submit_and_wait(encoder).unwrap();
        let want = wgloss_ref::gan_interpolate(
            to_f64(&real, &shape).view(),
            to_f64(&fake, &shape).view(),
            to_f64(&eps, &[shape[0]]).view(),
        );
        let got = out.to_vec(gpu).unwrap();
        compare(
            &format!("interpolate {shape:?}"),
            &got,
            want.view(),
            ELEMENTWISE,
        )
        .unwrap();
    }
    let r = Tensor::zeros(gpu, &[4, 3]).unwrap();
    let wrong = Tensor::zeros(gpu, &[3, 3]).unwrap();
    let eps = Tensor::zeros(gpu, &[4]).unwrap();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    for (fake, eps) in [(&wrong, &eps), (&r, &wrong)] {
        let err = wgloss::gan_interpolate(gpu, &mut encoder, &r, fake, eps, &r).unwrap_err();
        assert!(matches!(err, wgloss::Error::ShapeMismatch { .. }), "{err}");
    }
}

/// Cycle consistency with domains of different shapes (the registry's stacked form has one
/// shape for all four inputs), against the reference.
#[test]
fn cycle_consistency_domains_of_different_shapes() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(10);
    let (sx, sy) = ([2, 3, 4, 4], [5, 7]);
    let (nx, ny) = (96, 35);
    let data: Vec<Vec<f32>> = [nx, nx, ny, ny]
        .iter()
        .map(|&n| rng.uniform(n, -2.0, 2.0))
        .collect();
    let shapes: [&[usize]; 4] = [&sx, &sx, &sy, &sy];
    let tensors: Vec<Tensor> = data
        .iter()
        .zip(shapes)
        .map(|(v, s)| Tensor::from_slice(gpu, v, s).unwrap())
        .collect();
    let views: Vec<&Tensor> = tensors.iter().collect();
    let loss = wgloss::CycleConsistency {
        lambda: 10.0,
        grad_scale: 0.5,
    };
    let out = wgloss::TupleLoss::compute(&loss, gpu, &views, None).unwrap();
    let arrays: Vec<_> = data.iter().zip(shapes).map(|(v, s)| to_f64(v, s)).collect();
    let want = wgloss_ref::cycle_consistency(
        arrays[0].view(),
        arrays[1].view(),
        arrays[2].view(),
        arrays[3].view(),
        10.0,
        0.5,
    );
    let got = out.loss.to_vec(gpu).unwrap();
    compare("cycle loss", &got, want.loss.view(), REDUCED).unwrap();
    for (j, g) in out.grads.iter().enumerate() {
        let reference = &want.grads[j / 2];
        let reference = if j % 2 == 0 {
            reference.clone()
        } else {
            -reference
        };
        let got = g.to_vec(gpu).unwrap();
        compare(
            &format!("cycle grad {j}"),
            &got,
            reference.view(),
            ELEMENTWISE,
        )
        .unwrap();
    }
}

/// The GAN losses where the registry's stacked form cannot go: real and fake logits of
/// different sizes, reduction none (the discriminator lists the real terms, then the fake
/// ones), logits of any shape.
#[test]
fn gan_losses_on_sets_of_different_sizes() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(12);
    let (real, fake) = (
        rng.uniform(37, -3.0, 3.0),
        rng.uniform(2 * 3 * 5, -3.0, 3.0),
    );
    let (rs, fs): (&[usize], &[usize]) = (&[37], &[2, 3, 5]);
    let r = Tensor::from_slice(gpu, &real, rs).unwrap();
    let f = Tensor::from_slice(gpu, &fake, fs).unwrap();
    let kinds = [
        (wgloss::GanKind::Minimax, wgloss_ref::GanKind::Minimax),
        (
            wgloss::GanKind::LeastSquares,
            wgloss_ref::GanKind::LeastSquares,
        ),
        (wgloss::GanKind::Hinge, wgloss_ref::GanKind::Hinge),
    ];
    for (kind, kind_ref) in kinds {
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let what = format!("{kind:?} {reduction:?}");
            let loss = wgloss::GanDiscriminator {
                kind,
                reduction,
                ..Default::default()
            };
            let out = wgloss::TupleLoss::compute(&loss, gpu, &[&r, &f], None).unwrap();
            let want = wgloss_ref::gan_discriminator(
                to_f64(&real, rs).view(),
                to_f64(&fake, fs).view(),
                kind_ref,
                0.0,
                1.0,
                reduction.into_ref(),
                1.0,
            );
            let tolerance = if reduction == Reduction::None {
                ELEMENTWISE
            } else {
                REDUCED
            };
            let got = out.loss.to_vec(gpu).unwrap();
            compare(
                &format!("discriminator {what} loss"),
                &got,
                want.loss.view(),
                tolerance,
            )
            .unwrap();
            for (j, g) in out.grads.iter().enumerate() {
                let got = g.to_vec(gpu).unwrap();
                let name = format!("discriminator {what} grad {j}");
                compare(&name, &got, want.grads[j].view(), ELEMENTWISE).unwrap();
            }
            let generator = wgloss::GanGenerator {
                kind,
                reduction,
                ..Default::default()
            };
            let out = wgloss::TupleLoss::compute(&generator, gpu, &[&f], None).unwrap();
            let want = wgloss_ref::gan_generator(
                to_f64(&fake, fs).view(),
                kind_ref,
                1.0,
                reduction.into_ref(),
                1.0,
            );
            let got = out.loss.to_vec(gpu).unwrap();
            compare(
                &format!("generator {what} loss"),
                &got,
                want.loss.view(),
                tolerance,
            )
            .unwrap();
            let got = out.grads[0].to_vec(gpu).unwrap();
            compare(
                &format!("generator {what} grad"),
                &got,
                want.grad.view(),
                ELEMENTWISE,
            )
            .unwrap();
        }
    }
}

/// Runs a layered loss (`run(pred, target, layer weights)`) over feature maps of `shapes` with
/// default and given layer weights, against its reference (`want(pred, target, weights)`).
fn check_layered(
    what: &str,
    shapes: &[&[usize]],
    run: impl Fn(&[&Tensor], &[&Tensor], &[f32]) -> wgloss::TupleOutput,
    want: impl Fn(
        &[ndarray::ArrayViewD<'_, f64>],
        &[ndarray::ArrayViewD<'_, f64>],
        &[f64],
    ) -> wgloss_ref::MultiGrad,
) {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(13);
    let data: Vec<(Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .map(|s| {
            let n = s.iter().product();
            // Targets of half the spread: Gram matrices of many pixels stay apart (equal
            // spreads leave their diagonals equal to a few digits, and a difference of
            // rounded sums no test tolerance could judge).
            (rng.uniform(n, -2.0, 2.0), rng.uniform(n, -1.0, 1.0))
        })
        .collect();
    let upload = |v: &Vec<f32>, s: &[usize]| Tensor::from_slice(gpu, v, s).unwrap();
    let pred: Vec<Tensor> = data
        .iter()
        .zip(shapes)
        .map(|(d, s)| upload(&d.0, s))
        .collect();
    let target: Vec<Tensor> = data
        .iter()
        .zip(shapes)
        .map(|(d, s)| upload(&d.1, s))
        .collect();
    let p64: Vec<_> = data
        .iter()
        .zip(shapes)
        .map(|(d, s)| to_f64(&d.0, s))
        .collect();
    let t64: Vec<_> = data
        .iter()
        .zip(shapes)
        .map(|(d, s)| to_f64(&d.1, s))
        .collect();
    let given: Vec<f32> = (0..shapes.len()).map(|l| 0.5 + l as f32).collect();
    for weights in [&[][..], &given[..]] {
        let p: Vec<&Tensor> = pred.iter().collect();
        let t: Vec<&Tensor> = target.iter().collect();
        let out = run(&p, &t, weights);
        let w: Vec<f64> = (0..shapes.len())
            .map(|l| weights.get(l).map_or(1.0, |&x| x.into()))
            .collect();
        let pv: Vec<_> = p64.iter().map(|a| a.view()).collect();
        let tv: Vec<_> = t64.iter().map(|a| a.view()).collect();
        let expected = want(&pv, &tv, &w);
        let got = out.loss.to_vec(gpu).unwrap();
        let name = format!("{what} {weights:?} loss");
        compare(&name, &got, expected.loss.view(), REDUCED).unwrap();
        for (l, g) in out.grads.iter().enumerate() {
            let got = g.to_vec(gpu).unwrap();
            let name = format!("{what} {weights:?} grad {l}");
            compare(&name, &got, expected.grads[l].view(), ELEMENTWISE).unwrap();
        }
    }
}

/// Perceptual loss over feature maps of three different shapes (the registry's stacked form
/// splits one batch), both distances.
#[test]
fn perceptual_layers_of_different_shapes() {
    let shapes: [&[usize]; 3] = [&[2, 8, 4, 4], &[2, 16, 2, 2], &[3]];
    let distances = [
        (
            wgloss::PerceptualDistance::Mse,
            wgloss_ref::PerceptualDistance::Mse,
        ),
        (
            wgloss::PerceptualDistance::L1,
            wgloss_ref::PerceptualDistance::L1,
        ),
    ];
    for (distance, distance_ref) in distances {
        check_layered(
            &format!("perceptual {distance:?}"),
            &shapes,
            |p, t, layer_weights| {
                let loss = wgloss::Perceptual {
                    layer_weights,
                    distance,
                    grad_scale: 1.0,
                };
                loss.compute(shared_gpu().unwrap(), p, t).unwrap()
            },
            |p, t, w| wgloss_ref::perceptual(p, t, w, distance_ref, 1.0),
        );
    }
}

/// Style loss over feature maps of different shapes: batches of 1 to 3, C from 2 to 130 and H·W
/// from 9 to 16,400. C of 16 and more takes the tiled kernels: Gram matrices and gradients of
/// one to three tiles a side with ragged edges, inner sums of one to five chunks with a partial
/// last one. Fewer channels take one invocation per output, but past 16,384 pixels (the last
/// layer: a single tile over 513 chunks).
#[test]
fn style_layers_of_different_shapes() {
    let shapes: [&[usize]; 6] = [
        &[3, 8, 6, 5],
        &[3, 40, 3, 3],
        &[3, 5, 17],
        &[2, 70, 5, 7],
        &[1, 130, 20],
        &[1, 2, 16_400],
    ];
    check_layered(
        "style",
        &shapes,
        |p, t, layer_weights| {
            let loss = wgloss::Style {
                layer_weights,
                grad_scale: 1.0,
            };
            loss.compute(shared_gpu().unwrap(), p, t).unwrap()
        },
        |p, t, w| wgloss_ref::style(p, t, w, 1.0),
    );
}

/// Perceptual and style losses take 16-bit feature maps through f32 copies: the loss of the f32
/// call on the rounded maps bit for bit, each layer's gradient its rounding (layers of odd
/// sizes: the last word's padding).
#[test]
fn perceptual_and_style_take_16_bit_maps_through_copies() {
    let Some(gpu) = shared_gpu() else { return };
    let shapes: [&[usize]; 2] = [&[2, 5, 3, 3], &[2, 4, 7]];
    let weights = [0.5f32, 2.0];
    let perceptual = wgloss::Perceptual {
        layer_weights: &weights,
        ..Default::default()
    };
    let style = wgloss::Style {
        layer_weights: &weights,
        grad_scale: 1.0,
    };
    let mut rng = Rng::new(31);
    for dtype in [DType::F16, DType::BF16] {
        // Per layer, its prediction and target maps.
        let maps: Vec<[Vec<f32>; 2]> = shapes
            .iter()
            .map(|s| {
                let n = s.iter().product();
                let mut draw = || -> Vec<f32> {
                    let v = rng.uniform(n, -1.0, 1.0);
                    v.into_iter().map(|x| dtype.round(x)).collect()
                };
                [draw(), draw()]
            })
            .collect();
        let upload = |dtype: DType, k: usize| {
            (maps.iter().zip(shapes))
                .map(|(m, s)| Tensor::from_slice_as(gpu, &m[k], s, dtype).unwrap())
                .collect::<Vec<_>>()
        };
        let (p32, t32) = (upload(DType::F32, 0), upload(DType::F32, 1));
        let (p16, t16) = (upload(dtype, 0), upload(dtype, 1));
        let [p32, t32, p16, t16] = [&p32, &t32, &p16, &t16].map(|v| v.iter().collect::<Vec<_>>());
        for (name, want, got) in [
            (
                "perceptual",
                perceptual.compute(gpu, &p32, &t32).unwrap(),
                perceptual.compute(gpu, &p16, &t16).unwrap(),
            ),
            (
                "style",
                style.compute(gpu, &p32, &t32).unwrap(),
                style.compute(gpu, &p16, &t16).unwrap(),
            ),
        ] {
            assert_like_f32_call(
                gpu,
                &format!("{name} {dtype:?}"),
                (&got.loss, &got.grads.iter().collect::<Vec<_>>()),
                (&want.loss, &want.grads.iter().collect::<Vec<_>>()),
                dtype,
            );
        }
    }
}

/// Sinkhorn takes 16-bit clouds through f32 copies, through `compute` (which reads the
/// schedule's length back) and `encode` alike: the f32 call's loss on the rounded clouds bit for
/// bit, both gradients rounded (odd element counts).
#[test]
fn sinkhorn_takes_16_bit_clouds_through_copies() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(41);
    let ((n, m, d), loss) = ((5, 7, 3), wgloss::Sinkhorn::default());
    for dtype in [DType::F16, DType::BF16] {
        let mut draw = |rows: usize| -> Vec<f32> {
            let v = rng.uniform(rows * d, -1.0, 1.0);
            v.into_iter().map(|x| dtype.round(x)).collect()
        };
        let (x, y) = (draw(n), draw(m));
        let up = |v: &[f32], rows: usize, t: DType| Tensor::from_slice_as(gpu, v, &[rows, d], t);
        let (x32, y32) = (
            up(&x, n, DType::F32).unwrap(),
            up(&y, m, DType::F32).unwrap(),
        );
        let (x16, y16) = (up(&x, n, dtype).unwrap(), up(&y, m, dtype).unwrap());
        let outputs = |t: DType| wgloss::TupleOutput {
            loss: Tensor::zeros(gpu, &[]).unwrap(),
            grads: vec![
                Tensor::zeros_typed(gpu, &[n, d], t).unwrap(),
                Tensor::zeros_typed(gpu, &[m, d], t).unwrap(),
            ],
        };
        let (encoded32, encoded16) = (outputs(DType::F32), outputs(dtype));
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        loss.encode(gpu, &mut encoder, &x32, &y32, None, &encoded32)
            .unwrap();
        loss.encode(gpu, &mut encoder, &x16, &y16, None, &encoded16)
            .unwrap();
        gpu.submit_and_wait(encoder).unwrap();
        let computed32 = loss.compute(gpu, &x32, &y32, None).unwrap();
        let computed16 = loss.compute(gpu, &x16, &y16, None).unwrap();
        for (how, got, want) in [
            ("compute", &computed16, &computed32),
            ("encode", &encoded16, &encoded32),
        ] {
            assert_like_f32_call(
                gpu,
                &format!("sinkhorn {how} {dtype:?}"),
                (&got.loss, &got.grads.iter().collect::<Vec<_>>()),
                (&want.loss, &want.grads.iter().collect::<Vec<_>>()),
                dtype,
            );
        }
    }
}

/// Sinkhorn: GPU against the f64 reference over clouds of different sizes, dimensions (past 64:
/// the bounding box runs one workgroup per dimension) and weights (one in five 0), every option;
/// `compute` and `encode` (which records the longest schedule possible, its steps past the end
/// copying the potentials), and a given diameter equal to the bounding box's.
#[test]
fn sinkhorn_matches_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(21);
    let configs = [
        (wgloss::Sinkhorn::default(), 1.0),
        (
            wgloss::Sinkhorn {
                p: 1,
                blur: 0.1,
                scaling: 0.7,
                ..Default::default()
            },
            0.5,
        ),
        (
            wgloss::Sinkhorn {
                debias: false,
                blur: 0.2,
                ..Default::default()
            },
            2.0,
        ),
    ];
    for (n, m, d, weighted) in [
        (1, 1, 1, false),
        (5, 7, 2, true),
        (40, 33, 3, true),
        (300, 200, 3, false),
        (64, 50, 9, true),
        (40, 30, 70, true),
    ] {
        let x = rng.uniform(n * d, -1.0, 1.0);
        let y = rng.uniform(m * d, -1.0, 1.0);
        let mut weights = |len: usize| {
            let mut w = rng.uniform(len, 0.0, 1.0);
            w.iter_mut().skip(1).step_by(5).for_each(|v| *v = 0.0);
            let sum: f32 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            w
        };
        let (a, b) = (weights(n), weights(m));
        let xt = Tensor::from_slice(gpu, &x, &[n, d]).unwrap();
        let yt = Tensor::from_slice(gpu, &y, &[m, d]).unwrap();
        let at = Tensor::from_slice(gpu, &a, &[n]).unwrap();
        let bt = Tensor::from_slice(gpu, &b, &[m]).unwrap();
        for (config, grad_scale) in configs {
            let loss = wgloss::Sinkhorn {
                grad_scale,
                ..config
            };
            let reference = wgloss_ref::SinkhornConfig {
                p: config.p,
                blur: config.blur.into(),
                scaling: config.scaling.into(),
                debias: config.debias,
            };
            let (a64, b64) = (to_f64(&a, &[n]), to_f64(&b, &[m]));
            let want = wgloss_ref::sinkhorn(
                to_f64(&x, &[n, d]).view(),
                to_f64(&y, &[m, d]).view(),
                weighted.then(|| a64.view()),
                weighted.then(|| b64.view()),
                &reference,
                grad_scale.into(),
            );
            let w = weighted.then_some((&at, &bt));
            let what = format!("sinkhorn {n}x{m}x{d} {config:?}");
            let computed = loss.compute(gpu, &xt, &yt, w).unwrap();
            let diameter = wgloss_ref::sinkhorn_max_diameter(
                to_f64(&x, &[n, d]).view(),
                to_f64(&y, &[m, d]).view(),
            );
            let given = wgloss::Sinkhorn {
                diameter: (diameter > 0.0).then_some(diameter as f32),
                ..loss
            }
            .compute(gpu, &xt, &yt, w)
            .unwrap();
            let encoded = wgloss::TupleOutput {
                loss: Tensor::zeros(gpu, &[]).unwrap(),
                grads: vec![
                    Tensor::zeros(gpu, &[n, d]).unwrap(),
                    Tensor::zeros(gpu, &[m, d]).unwrap(),
                ],
            };
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            loss.encode(gpu, &mut encoder, &xt, &yt, w, &encoded)
                .unwrap();
            gpu.submit_and_wait(encoder).unwrap();
            for (out, how) in [
                (&computed, "compute"),
                (&encoded, "encode"),
                (&given, "given diameter"),
            ] {
                let loss = out.loss.to_vec(gpu).unwrap();
                compare(
                    &format!("{what} {how} loss"),
                    &loss,
                    want.loss.view(),
                    SINKHORN,
                )
                .unwrap();
                for (g, want_g) in out.grads.iter().zip(&want.grads) {
                    let g = g.to_vec(gpu).unwrap();
                    compare(&format!("{what} {how} grad"), &g, want_g.view(), SINKHORN).unwrap();
                }
            }
        }
    }
}

/// Sinkhorn's typed errors, before anything is written.
#[test]
fn sinkhorn_rejects_bad_inputs() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice(gpu, &[0.5f32; 12], &[4, 3]).unwrap();
    let y = Tensor::from_slice(gpu, &[0.25f32; 6], &[2, 3]).unwrap();
    let y2 = Tensor::from_slice(gpu, &[0.25f32; 6], &[3, 2]).unwrap();
    let empty = Tensor::from_slice(gpu, &[], &[0, 3]).unwrap();
    let a = Tensor::from_slice(gpu, &[0.25f32; 4], &[4]).unwrap();
    let b = Tensor::from_slice(gpu, &[0.5f32; 2], &[2]).unwrap();
    let labels = Tensor::from_labels(gpu, &[1, 1], &[2]).unwrap();
    let loss = wgloss::Sinkhorn::default();
    let err = |r: wgloss::Result<wgloss::TupleOutput>| r.err().map(|e| e.to_string());
    let cases = [
        (err(loss.compute(gpu, &x, &y2, None)), "`y`"),
        (err(loss.compute(gpu, &empty, &y, None)), "`x`"),
        (err(loss.compute(gpu, &x, &empty, None)), "`y`"),
        (err(loss.compute(gpu, &x, &y, Some((&b, &b)))), "`a`"),
        (err(loss.compute(gpu, &x, &y, Some((&a, &labels)))), "`b`"),
        (
            err(wgloss::Sinkhorn {
                scaling: 0.0,
                ..loss
            }
            .compute(gpu, &x, &y, None)),
            "`scaling`",
        ),
        (
            err(wgloss::Sinkhorn {
                grad_scale: f32::INFINITY,
                ..loss
            }
            .compute(gpu, &x, &y, None)),
            "`grad_scale`",
        ),
    ];
    for (got, name) in cases {
        let msg = got.unwrap_or_else(|| panic!("expected an error naming {name}"));
        assert!(msg.contains(name), "{msg} does not name {name}");
    }
}

/// A cloud and its translate by `s`: the debiased divergence is ½‖s‖² whatever ε (the cost's
/// cross term integrates to 0 under both marginals), and at convergence the gradient rows are
/// ∓ a_i·s. geomloss's schedule stops short of convergence; 1 % bounds the gap here.
fn sinkhorn_translate(n: usize) {
    let Some(gpu) = shared_gpu() else { return };
    let d = 3;
    let mut rng = Rng::new(77);
    let x = rng.uniform(n * d, 0.0, 1.0);
    let shift = [0.3f32, -0.2, 0.1];
    let y: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + shift[i % d])
        .collect();
    let xt = Tensor::from_slice(gpu, &x, &[n, d]).unwrap();
    let yt = Tensor::from_slice(gpu, &y, &[n, d]).unwrap();
    let out = wgloss::Sinkhorn::default()
        .compute(gpu, &xt, &yt, None)
        .unwrap();
    let half_sq: f32 = shift.iter().map(|s| 0.5 * s * s).sum();
    let loss = out.loss.to_vec(gpu).unwrap()[0];
    assert!(
        (loss - half_sq).abs() <= 0.01 * half_sq,
        "{loss} vs {half_sq}"
    );
    let a = 1.0 / n as f32;
    for (g, sign) in out.grads.iter().zip([-1.0f32, 1.0]) {
        let g = g.to_vec(gpu).unwrap();
        for (i, &v) in g.iter().enumerate() {
            let want = sign * a * shift[i % d];
            assert!(
                (v - want).abs() <= 0.01 * a * 0.3,
                "row {} coordinate {}: {v} vs {want}",
                i / d,
                i % d
            );
        }
    }
}

#[test]
fn sinkhorn_translate_2000() {
    sinkhorn_translate(2000);
}

/// The size: two clouds of 20,000 points in 3-d (94 s on lavapipe, two cores).
#[test]
#[ignore = "94 s on a software adapter"]
fn sinkhorn_translate_20000() {
    sinkhorn_translate(20_000);
}

/// Sinkhorn of a cloud with itself is 0 with a zero gradient (debiased), also when every point
/// sits at one place (a zero diameter: the schedule is blur^p alone).
#[test]
fn sinkhorn_of_a_cloud_with_itself() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(31);
    for (n, d, spread) in [(50, 3, true), (7, 2, false)] {
        let x = if spread {
            rng.uniform(n * d, -1.0, 1.0)
        } else {
            vec![0.5; n * d]
        };
        let xt = Tensor::from_slice(gpu, &x, &[n, d]).unwrap();
        let out = wgloss::Sinkhorn::default()
            .compute(gpu, &xt, &xt, None)
            .unwrap();
        let loss = out.loss.to_vec(gpu).unwrap()[0];
        assert!(loss.abs() < 1e-5, "{n}x{d}: loss {loss}");
        for g in &out.grads {
            let g = g.to_vec(gpu).unwrap();
            assert!(g.iter().all(|v| v.abs() < 1e-5), "{n}x{d}: gradient {g:?}");
        }
    }
}
