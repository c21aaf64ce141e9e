//! Segmentation overlap losses beyond the registry's multiclass sweep: binary and multilabel
//! masks, per-image statistics, one class, 1×1 images, images whose size no workgroup divides,
//! an all-ignored batch and out-of-range labels; 16-bit logits in every mode, across bindings.

use wgloss::{
    Combo, DType, Dice, Gpu, Jaccard, Loss, SegMode, SensitivitySpecificity, Tensor, Tversky,
};
use wgloss_ref::{Overlap, SegOptions};
use wgloss_suite::check::{
    assert_like_f32_call, assert_output, compare, compare_output, to_f64, Rng, ELEMENTWISE, REDUCED,
};
use wgloss_suite::{shared_gpu, small_binding_gpu, wide_alignment_gpu};

/// The four overlap losses in `mode` with `ignore_index` and `per_image`, with their reference
/// kinds.
fn losses(
    mode: SegMode,
    ignore_index: Option<i64>,
    per_image: bool,
    smooth: f32,
) -> Vec<(Box<dyn Loss>, Overlap, f32)> {
    vec![
        (
            Box::new(Dice {
                mode,
                smooth,
                ignore_index,
                per_image,
                ..Default::default()
            }),
            Overlap::Dice,
            1e-7,
        ),
        (
            Box::new(Jaccard {
                mode,
                smooth,
                ignore_index,
                per_image,
                ..Default::default()
            }),
            Overlap::Jaccard,
            1e-7,
        ),
        (
            Box::new(Tversky {
                mode,
                alpha: 0.7,
                beta: 0.3,
                gamma: 0.75,
                smooth,
                ignore_index,
                per_image,
                ..Default::default()
            }),
            Overlap::Tversky {
                alpha: 0.7,
                beta: 0.3,
                gamma: 0.75,
            },
            1e-7,
        ),
        (
            Box::new(SensitivitySpecificity {
                mode,
                w: 0.2,
                ignore_index,
                per_image,
                ..Default::default()
            }),
            Overlap::SensitivitySpecificity { w: 0.2 },
            1e-5,
        ),
    ]
}

fn ref_mode(mode: SegMode) -> wgloss_ref::SegMode {
    match mode {
        SegMode::Binary => wgloss_ref::SegMode::Binary,
        SegMode::Multiclass => wgloss_ref::SegMode::Multiclass,
        SegMode::Multilabel => wgloss_ref::SegMode::Multilabel,
    }
}

/// Logits of `shape` and targets for `mode`: labels (every 9th pixel `ignore`) or 0/1 masks
/// (every 9th element `ignore`).
fn inputs(
    shape: &[usize],
    mode: SegMode,
    ignore: i64,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let len: usize = shape.iter().product();
    let logits = rng.uniform(len, -3.0, 3.0);
    let c = shape[1];
    if mode == SegMode::Multiclass {
        let target_shape: Vec<usize> = [shape[0]]
            .into_iter()
            .chain(shape[2..].iter().copied())
            .collect();
        let rows: usize = target_shape.iter().product();
        // Class c − 1 never appears (when C > 1): an absent class.
        let classes = if c > 1 { c - 1 } else { 1 };
        let labels = (0..rows)
            .map(|r| {
                if r % 9 == 4 {
                    ignore as f32
                } else {
                    (rng.unit() * classes as f64).floor() as f32
                }
            })
            .collect();
        return (logits, labels, target_shape);
    }
    let masks = (0..len)
        .map(|i| {
            if i % 9 == 4 {
                ignore as f32
            } else {
                (rng.unit() < 0.3) as u8 as f32
            }
        })
        .collect();
    (logits, masks, shape.to_vec())
}

fn check(shape: &[usize], mode: SegMode, per_image: bool, smooth: f32) {
    let Some(gpu) = shared_gpu() else { return };
    check_on(gpu, shape, mode, per_image, smooth, DType::F32);
}

/// The four losses on `gpu` with logits of `dtype` (the reference on the logits as rounded to
/// it; a 16-bit gradient within one step of its type).
fn check_on(gpu: &Gpu, shape: &[usize], mode: SegMode, per_image: bool, smooth: f32, dtype: DType) {
    let ignore = if mode == SegMode::Multiclass { 255 } else { -1 };
    let (mut logits, target, target_shape) =
        inputs(shape, mode, ignore, shape.iter().product::<usize>() as u64);
    logits.iter_mut().for_each(|x| *x = dtype.round(*x));
    let x = Tensor::from_slice_as(gpu, &logits, shape, dtype).unwrap();
    let t = if mode == SegMode::Multiclass {
        let labels: Vec<i32> = target.iter().map(|&v| v as i32).collect();
        Tensor::from_labels(gpu, &labels, &target_shape).unwrap()
    } else {
        Tensor::from_slice(gpu, &target, &target_shape).unwrap()
    };
    for (loss, kind, eps) in losses(mode, Some(ignore), per_image, smooth) {
        let out = loss.compute(gpu, &x, &t).unwrap();
        let opts = SegOptions {
            mode: ref_mode(mode),
            smooth: smooth.into(),
            eps: f64::from(eps),
            ignore_index: Some(ignore),
            per_image,
        };
        let want = wgloss_ref::overlap_loss(
            kind,
            to_f64(&logits, shape).view(),
            to_f64(&target, &target_shape).view(),
            opts,
            1.0,
        );
        let what =
            format!("{kind:?} {mode:?} {shape:?} {dtype:?} per_image={per_image} smooth={smooth}");
        assert_eq!(out.grad.dtype(), dtype, "{what}: gradient type");
        let failures = compare_output(gpu, &what, &out, &want, REDUCED, ELEMENTWISE);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// 16-bit logits (F16 and BF16) in every mode against the reference, the gradient in their
/// type: binary and multilabel masks of an odd element count (the last word's padding half kept
/// and given no gradient), multiclass images of an even pixel count (two pixels per word of the
/// gradient pass) and of an odd one (the gradient staged in f32 and packed), per image or not;
/// then across 1 MiB bindings, several segments each.
#[test]
fn half_logits_match_reference() {
    let Some(gpu) = shared_gpu() else { return };
    for dtype in [DType::F16, DType::BF16] {
        check_on(gpu, &[3, 1, 7, 9], SegMode::Binary, false, 0.0, dtype);
        check_on(gpu, &[2, 4, 5, 7], SegMode::Multilabel, true, 1.0, dtype);
        check_on(gpu, &[2, 3, 16, 13], SegMode::Multiclass, false, 0.0, dtype);
        check_on(gpu, &[3, 4, 2, 1], SegMode::Multiclass, true, 1.0, dtype);
        check_on(gpu, &[2, 3, 17, 13], SegMode::Multiclass, false, 0.0, dtype);
        check_on(gpu, &[3, 5, 1, 1], SegMode::Multiclass, true, 1.0, dtype);
    }
    let Some(small) = small_binding_gpu() else {
        return;
    };
    check_on(
        small,
        &[1301, 3, 11, 13],
        SegMode::Multilabel,
        false,
        0.0,
        DType::BF16,
    );
    check_on(
        small,
        &[200, 5, 32, 30],
        SegMode::Multiclass,
        true,
        0.0,
        DType::F16,
    );
    check_on(
        small,
        &[201, 5, 31, 29],
        SegMode::Multiclass,
        false,
        1.0,
        DType::BF16,
    );
}

/// The losses that compute in f32 arrays (Lovász, SSIM) take 16-bit inputs through f32 copies:
/// the loss is that of the f32 call on the rounded inputs, bit for bit, and the gradient its
/// rounding to the inputs' type, across storage bindings of 1 MiB (conversions in runs, an odd
/// total); a gradient of another type, or a target of the other 16-bit type, is a dtype error.
#[test]
fn f32_kernels_take_16_bit_inputs_through_copies() {
    // A loss, its input's shape and values, and its target in 16 bits (or labels) and in f32.
    type Case<'a> = (&'a dyn Loss, &'a [usize], &'a [f32], Tensor, Tensor);
    let Some(gpu) = small_binding_gpu() else {
        return;
    };
    let hinge_shape = [3, 1, 300, 301];
    let hinge: &dyn Loss = &wgloss::LovaszHinge::default();
    let softmax: &dyn Loss = &wgloss::LovaszSoftmax::default();
    let ssim: &dyn Loss = &wgloss::Ssim::default();
    for dtype in [DType::F16, DType::BF16] {
        let mut rng = Rng::new(17);
        let n = hinge_shape.iter().product();
        let logits: Vec<f32> = rng
            .uniform(n, -2.0, 2.0)
            .iter()
            .map(|&x| dtype.round(x))
            .collect();
        let masks: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let labels: Vec<i32> = (0..2 * 15 * 17).map(|i| i % 4).collect();
        let images: Vec<f32> = rng
            .uniform(2 * 3 * 40 * 41, 0.0, 1.0)
            .iter()
            .map(|&x| dtype.round(x))
            .collect();
        let noisy: Vec<f32> = images
            .iter()
            .map(|&x| dtype.round(x * 0.9 + 0.05))
            .collect();
        let cases: [Case; 3] = [
            (
                hinge,
                &hinge_shape,
                &logits,
                Tensor::from_slice_as(gpu, &masks, &hinge_shape, dtype).unwrap(),
                Tensor::from_slice(gpu, &masks, &hinge_shape).unwrap(),
            ),
            (
                softmax,
                &[2, 4, 15, 17],
                &logits[..2 * 4 * 15 * 17],
                Tensor::from_labels(gpu, &labels, &[2, 15, 17]).unwrap(),
                Tensor::from_labels(gpu, &labels, &[2, 15, 17]).unwrap(),
            ),
            (
                ssim,
                &[2, 3, 40, 41],
                &images,
                Tensor::from_slice_as(gpu, &noisy, &[2, 3, 40, 41], dtype).unwrap(),
                Tensor::from_slice(gpu, &noisy, &[2, 3, 40, 41]).unwrap(),
            ),
        ];
        for (loss, shape, x, target16, target32) in cases {
            let x16 = Tensor::from_slice_as(gpu, x, shape, dtype).unwrap();
            let x32 = Tensor::from_slice(gpu, x, shape).unwrap();
            let want = loss.compute(gpu, &x32, &target32).unwrap();
            let got = loss.compute(gpu, &x16, &target16).unwrap();
            let what = format!("{shape:?} {dtype:?}");
            assert_like_f32_call(
                gpu,
                &what,
                (&got.loss, &[&got.grad]),
                (&want.loss, &[&want.grad]),
                dtype,
            );
            // An f32 gradient for 16-bit inputs, and a target of the other 16-bit type.
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            let f32_out = loss.output(gpu, shape, target32.shape()).unwrap();
            let r = loss.encode(gpu, &mut encoder, &x16, &target16, &f32_out);
            assert!(
                matches!(r, Err(wgloss::Error::DTypeMismatch { name: "grad", .. })),
                "{what}: {r:?}"
            );
            if target16.dtype().is_half() {
                let other = if dtype == DType::F16 {
                    DType::BF16
                } else {
                    DType::F16
                };
                let t = Tensor::from_slice_as(
                    gpu,
                    &target16.to_vec(gpu).unwrap(),
                    target16.shape(),
                    other,
                )
                .unwrap();
                let r = loss.compute(gpu, &x16, &t);
                assert!(
                    matches!(r, Err(wgloss::Error::DTypeMismatch { name: "target", .. })),
                    "{what}: {r:?}"
                );
            }
        }
    }
}

/// A gradient of another type than the 16-bit logits' is a dtype error.
#[test]
fn half_logits_need_a_gradient_of_their_type() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice_as(gpu, &[0.5; 2 * 3 * 4], &[2, 3, 2, 2], DType::BF16).unwrap();
    let y = Tensor::from_labels(gpu, &[1; 8], &[2, 2, 2]).unwrap();
    let out = Dice::default()
        .output(gpu, &[2, 3, 2, 2], &[2, 2, 2])
        .unwrap();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let r = Dice::default().encode(gpu, &mut encoder, &x, &y, &out);
    assert!(
        matches!(r, Err(wgloss::Error::DTypeMismatch { name: "grad", .. })),
        "{r:?}"
    );
}

#[test]
fn binary_masks_match_reference() {
    check(&[3, 1, 7, 9], SegMode::Binary, false, 0.0);
    check(&[3, 1, 7, 9], SegMode::Binary, true, 1.0);
}

#[test]
fn multilabel_masks_match_reference() {
    check(&[2, 4, 5, 6], SegMode::Multilabel, false, 1.0);
    check(&[2, 4, 5, 6], SegMode::Multilabel, true, 0.0);
}

#[test]
fn multiclass_odd_images_match_reference() {
    check(&[2, 3, 17, 13], SegMode::Multiclass, false, 0.0);
    check(&[2, 3, 17, 13], SegMode::Multiclass, true, 0.0);
}

#[test]
fn one_by_one_images_and_one_class_match_reference() {
    check(&[5, 3, 1, 1], SegMode::Multiclass, true, 1.0);
    check(&[4, 1, 3, 3], SegMode::Multiclass, false, 0.0);
}

/// Every pixel ignored: loss 0 and a zero gradient.
#[test]
fn all_ignored_gives_zero() {
    let Some(gpu) = shared_gpu() else { return };
    let x =
        Tensor::from_slice(gpu, &Rng::new(1).uniform(2 * 3 * 4, -1.0, 1.0), &[2, 3, 4]).unwrap();
    let y = Tensor::from_labels(gpu, &[255; 8], &[2, 4]).unwrap();
    for (loss, kind, _) in losses(SegMode::Multiclass, Some(255), false, 0.0) {
        let out = loss.compute(gpu, &x, &y).unwrap();
        assert_eq!(out.loss.to_vec(gpu).unwrap(), [0.0], "{kind:?}");
        assert!(
            out.grad.to_vec(gpu).unwrap().iter().all(|&g| g == 0.0),
            "{kind:?}"
        );
    }
    let combo = Combo {
        ignore_index: 255,
        ..Default::default()
    }
    .compute(gpu, &x, &y)
    .unwrap();
    assert_eq!(combo.loss.to_vec(gpu).unwrap(), [0.0]);
}

/// A label outside [0, C) that is not ignore_index is reported with its position.
#[test]
fn out_of_range_labels_are_reported() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice(gpu, &[0.0; 24], &[2, 3, 4]).unwrap();
    let y = Tensor::from_labels(gpu, &[0, 1, 2, 0, 1, 7, 2, 0], &[2, 4]).unwrap();
    let r = Dice::default().compute(gpu, &x, &y);
    assert!(
        matches!(
            r,
            Err(wgloss::Error::LabelOutOfRange {
                position: 5,
                label: 7,
                classes: 3
            })
        ),
        "{r:?}"
    );
}

/// Under 256-byte view alignment (wgpu's default limits) and 1 MiB bindings, inputs whose
/// samples end off the alignment run in segments that start at any sample (16-bit logits: on an
/// even element), each view bound from the alignment before it: the overlap losses in
/// multiclass mode ([201, 5, 31, 29]: 4,495 elements a sample, 58 to a segment; f32, and bf16
/// whose gradient is staged for an odd image) and with an even image (16-bit pixel pairs), in
/// multilabel mode with f32 masks (whose lead differs from 16-bit logits'), Lovász softmax and
/// hinge per image, and SSIM (runs of whole planes).
#[test]
fn unaligned_segments_match_reference() {
    use wgloss::Reduction::{Mean, None as PerPixel};
    use wgloss::SsimPadding::{Same, Valid};
    use DType::{BF16, F16, F32};
    use SegMode::{Multiclass, Multilabel};
    let Some(gpu) = wide_alignment_gpu() else {
        return;
    };
    let overlap_cases: [(&[usize], SegMode, bool, f32, DType); 5] = [
        (&[201, 5, 31, 29], Multiclass, false, 1.0, F32),
        (&[201, 5, 31, 29], Multiclass, false, 1.0, BF16),
        (&[199, 5, 31, 30], Multiclass, true, 0.0, F16),
        (&[1301, 3, 11, 13], Multilabel, false, 0.0, F32),
        (&[1301, 3, 11, 13], Multilabel, false, 0.0, F16),
    ];
    for (shape, mode, per_image, smooth, dtype) in overlap_cases {
        check_on(gpu, shape, mode, per_image, smooth, dtype);
    }
    // Lovász softmax per image over images of three pixels (7,941 to a segment), whose errors
    // f32 and f64 sort alike (larger groups hold near ties that they order apart).
    let mut rng = Rng::new(12);
    let labels: Vec<i32> = (0..9_001 * 3)
        .map(|r| {
            if r % 13 == 5 {
                255
            } else {
                (rng.unit() * 11.0) as i32 % 11
            }
        })
        .collect();
    lovasz_case(gpu, &[9_001, 11, 1, 3], true, 255, None, Some(&labels), 13);
    let masks: Vec<f32> = (0..301 * 31 * 29)
        .map(|k| match k % 11 {
            3 => -1.0,
            _ => (rng.unit() < 0.4) as u8 as f32,
        })
        .collect();
    lovasz_case(gpu, &[301, 1, 31, 29], true, -1, Some(&masks), None, 14);
    // SSIM over 39 planes of 31 × 29 (36 to a segment, whose scratch takes 8 maps of each), with
    // the per-pixel map cropped (valid padding) and whole, and over 75 planes of 23 × 21 (67 to
    // a segment; rows too short for the border passes).
    for (shape, padding, reduction) in [
        ([13, 3, 31, 29], Valid, PerPixel),
        ([13, 3, 31, 29], Same, Mean),
        ([25, 3, 23, 21], Same, PerPixel),
    ] {
        let len: usize = shape.iter().product();
        let (x, y) = (rng.uniform(len, 0.0, 1.0), rng.uniform(len, 0.0, 1.0));
        let loss = wgloss::Ssim {
            padding,
            reduction,
            ..Default::default()
        };
        let (out, want) = ssim_and_reference(gpu, loss, &x, &y, &shape);
        let what = format!("ssim {shape:?} {padding:?} {reduction:?}");
        let tol = if reduction == PerPixel {
            ELEMENTWISE
        } else {
            REDUCED
        };
        assert_output(gpu, &what, &out, &want, tol, ELEMENTWISE);
    }
}

/// Binary mode takes one channel; masks must have the logits' shape.
#[test]
fn bad_shapes_are_rejected() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice(gpu, &[0.0; 24], &[2, 3, 4]).unwrap();
    let m = Tensor::from_slice(gpu, &[0.0; 24], &[2, 3, 4]).unwrap();
    let binary = Dice {
        mode: SegMode::Binary,
        ..Default::default()
    };
    assert!(matches!(
        binary.compute(gpu, &x, &m),
        Err(wgloss::Error::InvalidShape { .. })
    ));
    let short = Tensor::from_slice(gpu, &[0.0; 8], &[2, 1, 4]).unwrap();
    let multilabel = Dice {
        mode: SegMode::Multilabel,
        ..Default::default()
    };
    assert!(matches!(
        multilabel.compute(gpu, &x, &short),
        Err(wgloss::Error::ShapeMismatch { name: "target", .. })
    ));
}

/// SSIM with `loss`'s window, padding and reduction (σ, max_val, k1, k2 and eps at their
/// defaults, grad_scale 1) on `x` and `y` of `shape`: the GPU's outputs and the f64 reference's.
fn ssim_and_reference(
    gpu: &Gpu,
    loss: wgloss::Ssim,
    x: &[f32],
    y: &[f32],
    shape: &[usize],
) -> (wgloss::LossOutput, wgloss_ref::LossGrad) {
    let tensor = |v: &[f32]| Tensor::from_slice(gpu, v, shape).unwrap();
    let out = loss.compute(gpu, &tensor(x), &tensor(y)).unwrap();
    let padding = match loss.padding {
        wgloss::SsimPadding::Same => wgloss_ref::SsimPadding::Same,
        wgloss::SsimPadding::Valid => wgloss_ref::SsimPadding::Valid,
    };
    let reduction = match loss.reduction {
        wgloss::Reduction::None => wgloss_ref::Reduction::None,
        wgloss::Reduction::Mean => wgloss_ref::Reduction::Mean,
        wgloss::Reduction::Sum => wgloss_ref::Reduction::Sum,
    };
    let want = wgloss_ref::ssim_loss(
        to_f64(x, shape).view(),
        to_f64(y, shape).view(),
        loss.window_size,
        1.5,
        1.0,
        0.01,
        0.03,
        1e-12,
        padding,
        reduction,
        1.0,
    );
    (out, want)
}

/// SSIM on 1×1 images, on images smaller than the window (reflection wraps), on images whose
/// columns, rows or both are long enough for the border passes (the adjoint's reflected taps in
/// passes of their own), and under valid padding with its cropped per-pixel map, against the
/// reference.
#[test]
fn ssim_small_and_cropped_images_match_reference() {
    let Some(gpu) = shared_gpu() else { return };
    use wgloss::Reduction::{Mean, None as PerPixel, Sum};
    use wgloss::SsimPadding::{Same, Valid};
    // Same padding with windows that reflect once per side (radius below both sides, down to
    // one less than the shorter one) and, at radius equal to it or more, more than once.
    let cases = [
        (vec![2, 3, 1, 1], 11, Same, Mean),
        (vec![1, 2, 5, 4], 11, Same, Sum),
        (vec![1, 2, 20, 23], 11, Valid, PerPixel),
        (vec![1, 2, 13, 17], 11, Same, PerPixel),
        (vec![2, 1, 6, 9], 11, Same, PerPixel),
        (vec![2, 1, 5, 9], 11, Same, PerPixel),
        (vec![3, 1, 7, 6], 5, Same, Mean),
        // Lines of at least 4r + 4 samples: border passes along both, columns only, rows only.
        (vec![1, 2, 30, 26], 11, Same, PerPixel),
        (vec![1, 2, 24, 24], 11, Same, Sum),
        (vec![2, 1, 25, 13], 11, Same, Mean),
        (vec![1, 1, 9, 40], 5, Valid, PerPixel),
    ];
    for (shape, window_size, padding, reduction) in cases {
        let len: usize = shape.iter().product();
        let mut rng = Rng::new(len as u64);
        let (x, y) = (rng.uniform(len, 0.0, 1.0), rng.uniform(len, 0.0, 1.0));
        let loss = wgloss::Ssim {
            window_size,
            padding,
            reduction,
            ..Default::default()
        };
        let (out, want) = ssim_and_reference(gpu, loss, &x, &y, &shape);
        let what = format!("ssim {shape:?} window {window_size} {padding:?} {reduction:?}");
        assert_eq!(out.loss.shape(), want.loss.shape(), "{what}: loss shape");
        let tol = if reduction == wgloss::Reduction::None {
            ELEMENTWISE
        } else {
            REDUCED
        };
        // Where a window sees (nearly) one pixel, σ² ≈ 0 and the gradient is the difference of
        // terms about 1/C2 ≈ 1e3 times larger: f32 keeps about four digits of it.
        let grad_tol = if shape[2] * shape[3] < window_size * window_size {
            wgloss_suite::check::Tolerance {
                rtol: 5e-3,
                atol_frac: 2e-3,
            }
        } else {
            ELEMENTWISE
        };
        assert_output(gpu, &what, &out, &want, tol, grad_tol);
    }
}

/// A NaN pixel reaches exactly the loss and gradient entries whose windows hold it, as in the
/// reference: not their neighbours in a run of rows or columns a pass computes together (a
/// weight of 0 times NaN would be NaN), on lines long enough for runs and the border passes and
/// on short ones, near an edge and inside.
#[test]
fn ssim_nan_reaches_only_the_windows_that_hold_it() {
    let Some(gpu) = shared_gpu() else { return };
    for (shape, at) in [
        ([1, 1, 30, 26], (13, 9)),
        ([1, 1, 30, 26], (1, 24)),
        ([1, 1, 13, 11], (6, 2)),
    ] {
        let len: usize = shape.iter().product();
        let mut rng = Rng::new(len as u64 + at.0 as u64);
        let (mut x, y) = (rng.uniform(len, 0.0, 1.0), rng.uniform(len, 0.0, 1.0));
        x[at.0 * shape[3] + at.1] = f32::NAN;
        let loss = wgloss::Ssim {
            reduction: wgloss::Reduction::None,
            ..Default::default()
        };
        let (out, want) = ssim_and_reference(gpu, loss, &x, &y, &shape);
        let loss_map = out.loss.to_vec(gpu).unwrap();
        let grad = out.grad.to_vec(gpu).unwrap();
        let nans = |v: &[f32]| v.iter().filter(|g| g.is_nan()).count();
        // Some entries are NaN and some are not, so that the comparison is of the pattern.
        assert!(
            nans(&loss_map) > 0 && nans(&loss_map) < len,
            "{shape:?} {at:?}"
        );
        let what = format!("ssim {shape:?} NaN at {at:?}");
        compare(
            &format!("{what} loss"),
            &loss_map,
            want.loss.view(),
            ELEMENTWISE,
        )
        .unwrap();
        compare(
            &format!("{what} grad"),
            &grad,
            want.grad.view(),
            ELEMENTWISE,
        )
        .unwrap();
    }
}

/// Under valid padding a window larger than the image is rejected; so is a rank other than 4.
#[test]
fn ssim_rejects_windows_larger_than_the_image_and_bad_ranks() {
    let Some(gpu) = shared_gpu() else { return };
    let x = Tensor::from_slice(gpu, &[0.5; 50], &[1, 2, 5, 5]).unwrap();
    let valid = wgloss::Ssim {
        padding: wgloss::SsimPadding::Valid,
        ..Default::default()
    };
    assert!(matches!(
        valid.compute(gpu, &x, &x),
        Err(wgloss::Error::InvalidShape { .. })
    ));
    let flat = Tensor::from_slice(gpu, &[0.5; 50], &[10, 5]).unwrap();
    let same = wgloss::Ssim::default();
    assert!(matches!(
        same.compute(gpu, &flat, &flat),
        Err(wgloss::Error::InvalidShape { .. })
    ));
}

/// Lovász logits with no two errors of a group within rounding of each other unless exactly
/// equal (a sort of values that close may order differently in f32 and f64, and the gradient
/// follows the order): the logit of each (pixel, class) is its own multiple of a step, on a grid
/// of 2^-10 so that hinge errors 1 ∓ x are exact in f32 and symmetric logits tie exactly.
fn lovasz_logits(len: usize, seed: u64) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..len).collect();
    let mut rng = Rng::new(seed);
    for i in (1..len).rev() {
        let j = (rng.unit() * (i + 1) as f64) as usize;
        idx.swap(i, j);
    }
    idx.iter()
        .map(|&k| ((-3.0 + 6.0 * k as f32 / len as f32) * 1024.0).round() / 1024.0)
        .collect()
}

/// One Lovász case on the GPU against the reference: hinge (masks as f32 of the logits' shape)
/// when `labels` is None, else softmax with these labels `[N, d...]`.
fn lovasz_case(
    gpu: &wgloss::Gpu,
    shape: &[usize],
    per_image: bool,
    ignore: i64,
    masks: Option<&[f32]>,
    labels: Option<&[i32]>,
    seed: u64,
) {
    let len: usize = shape.iter().product();
    let x = lovasz_logits(len, seed);
    let what = format!(
        "lovasz_{} {shape:?} per_image={per_image}",
        if labels.is_some() { "softmax" } else { "hinge" }
    );
    let xs = Tensor::from_slice(gpu, &x, shape).unwrap();
    let (out, want) = match (masks, labels) {
        (Some(t), None) => {
            let loss = wgloss::LovaszHinge {
                per_image,
                ignore_index: Some(ignore),
                grad_scale: 1.0,
            };
            let out = loss
                .compute(gpu, &xs, &Tensor::from_slice(gpu, t, shape).unwrap())
                .unwrap();
            let want = wgloss_ref::lovasz_hinge(
                to_f64(&x, shape).view(),
                to_f64(t, shape).view(),
                per_image,
                Some(ignore),
                1.0,
            );
            (out, want)
        }
        (None, Some(labels)) => {
            let lshape: Vec<usize> = [shape[0]]
                .into_iter()
                .chain(shape[2..].iter().copied())
                .collect();
            let loss = wgloss::LovaszSoftmax {
                per_image,
                ignore_index: Some(ignore),
                grad_scale: 1.0,
            };
            let out = loss
                .compute(
                    gpu,
                    &xs,
                    &Tensor::from_labels(gpu, labels, &lshape).unwrap(),
                )
                .unwrap();
            let l64: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let want = wgloss_ref::lovasz_softmax(
                to_f64(&x, shape).view(),
                to_f64(&l64, &lshape).view(),
                per_image,
                Some(ignore),
                1.0,
            );
            (out, want)
        }
        _ => unreachable!("masks or labels"),
    };
    assert_output(gpu, &what, &out, &want, REDUCED, ELEMENTWISE);
}

/// Lovász hinge and softmax against the reference, per image and per batch, with ignored
/// pixels, on inputs without near ties: absent classes, one class, 1×1 images, sizes that are
/// not multiples of a workgroup or of the sort block.
#[test]
fn lovasz_matches_reference() {
    let Some(gpu) = shared_gpu() else { return };
    for per_image in [false, true] {
        for (i, shape) in [[3, 1, 5, 7], [4, 1, 1, 1], [1, 1, 17, 19], [2, 1, 23, 29]]
            .iter()
            .enumerate()
        {
            let len: usize = shape.iter().product();
            let mut rng = Rng::new(6 + i as u64);
            // Masks 0/1 (about 40 % foreground), every eleventh pixel ignored (-1).
            let t: Vec<f32> = (0..len)
                .map(|k| {
                    if k % 11 == 3 {
                        -1.0
                    } else {
                        (rng.unit() < 0.4) as u8 as f32
                    }
                })
                .collect();
            lovasz_case(gpu, shape, per_image, -1, Some(&t), None, 5 + i as u64);
        }
        // Softmax: class 2 absent from image 1, a few ignored (255).
        let labels: Vec<i32> = (0..40)
            .map(|r| match r {
                r if r % 9 == 4 => 255,
                r if r >= 20 => r % 2,
                r => r % 3,
            })
            .collect();
        lovasz_case(gpu, &[2, 3, 4, 5], per_image, 255, None, Some(&labels), 7);
        // One class: every present class has error 1 - 1 = 0.
        lovasz_case(gpu, &[3, 1, 2, 2], per_image, 255, None, Some(&[0; 12]), 8);
        // 1×1 images.
        lovasz_case(
            gpu,
            &[4, 3, 1, 1],
            per_image,
            255,
            None,
            Some(&[2, 0, 255, 1]),
            9,
        );
        // 17 × 19 and 23 × 29 images: not multiples of 256 or 512.
        for (shape, seed) in [([1, 4, 17, 19], 10u64), ([2, 3, 23, 29], 11)] {
            let pixels = shape[0] * shape[2] * shape[3];
            let mut rng = Rng::new(seed);
            let labels: Vec<i32> = (0..pixels)
                .map(|r| {
                    if r % 13 == 5 {
                        255
                    } else {
                        (rng.unit() * shape[1] as f64) as i32 % shape[1] as i32
                    }
                })
                .collect();
            lovasz_case(gpu, &shape, per_image, 255, None, Some(&labels), seed);
        }
    }
}

/// Wrong ranks and channel counts are typed errors.
#[test]
fn lovasz_rejects_bad_shapes() {
    let Some(gpu) = shared_gpu() else { return };
    let flat = Tensor::from_slice(gpu, &[0.5; 6], &[6]).unwrap();
    assert!(matches!(
        wgloss::LovaszHinge::default().compute(gpu, &flat, &flat),
        Err(wgloss::Error::InvalidShape { .. })
    ));
    // The hinge takes one channel.
    let two = Tensor::from_slice(gpu, &[0.5; 8], &[1, 2, 2, 2]).unwrap();
    assert!(matches!(
        wgloss::LovaszHinge::default().compute(gpu, &two, &two),
        Err(wgloss::Error::InvalidShape { .. })
    ));
    // Softmax labels must be [N, d...].
    let labels = Tensor::from_labels(gpu, &[0; 8], &[1, 2, 2, 2]).unwrap();
    assert!(matches!(
        wgloss::LovaszSoftmax::default().compute(gpu, &two, &labels),
        Err(wgloss::Error::ShapeMismatch { .. })
    ));
}
