//! Regression (F1) cases the registry's generated inputs do not reach: dynamic smooth L1's
//! record of the k-th smallest residual when a call's residuals are all far above the previous
//! call's (its selection keeps only residuals up to four times the previous k-th smallest, and
//! must then fall back to all of them); self-adjusting smooth L1 with feature counts other than
//! the registry's 4; log-cosh's and balanced L1's relative precision for tiny residuals, RMSLE's
//! for close predictions and its range; a `Gpu` adopted from a caller's device; the 16-bit
//! storage types' conversions, bit for bit, their split into bindings, and rmse over f16
//! residuals past f16's range.

use ndarray::ArrayViewD;
use wgloss::{
    BalancedL1, DType, DynamicSmoothL1, DynamicSmoothL1Config, LogCosh, Loss, Mse, Reduction,
    Rmsle, SelfAdjustingSmoothL1, SelfAdjustingSmoothL1Config, Tensor,
};
use wgloss_ref::LossGrad;
use wgloss_ref::SelfAdjustingState;
use wgloss_suite::check::{
    compare_output, loss_tolerance, to_f64, Rng, Tolerance, ELEMENTWISE, REDUCED,
};
use wgloss_suite::registry::IntoRef;
use wgloss_suite::{shared_gpu, small_binding_gpu};
use wgpu::util::DeviceExt;

/// Self-adjusting smooth L1 over `rows` × `d` inputs of `dtype` (rounded to it), under both
/// reductions, for three calls (the running statistics evolve), against the f64 reference: the
/// mismatches found.
fn self_adjusting_calls(
    gpu: &wgloss::Gpu,
    (d, rows, dtype, momentum): (usize, usize, DType, f32),
    rng: &mut Rng,
) -> Vec<String> {
    let n = rows * d;
    let mut failures = Vec::new();
    let mut draw = || -> Vec<f32> {
        let v = rng.uniform(n, -0.1, 0.1);
        v.into_iter().map(|x| dtype.round(x)).collect()
    };
    for reduction in [Reduction::Mean, Reduction::None] {
        let config = SelfAdjustingSmoothL1Config {
            num_features: d,
            reduction,
            momentum,
            ..Default::default()
        };
        let loss = SelfAdjustingSmoothL1::new(gpu, config).unwrap();
        let mut state = SelfAdjustingState::new(d, config.beta_max.into());
        for step in 0..3 {
            let (pred, target) = (draw(), draw());
            let want = wgloss_ref::self_adjusting_smooth_l1(
                to_f64(&pred, &[rows, d]).view(),
                to_f64(&target, &[rows, d]).view(),
                &mut state,
                config.momentum.into(),
                config.beta_max.into(),
                reduction.into_ref(),
                1.0,
            );
            let p = Tensor::from_slice_as(gpu, &pred, &[rows, d], dtype).unwrap();
            let t = Tensor::from_slice_as(gpu, &target, &[rows, d], dtype).unwrap();
            let out = loss.compute(gpu, &p, &t).unwrap();
            let what = format!(
                "D={d} rows={rows} {dtype:?} vec4={} lanes={} {reduction:?} step {step}",
                gpu.vec4(),
                gpu.lanes()
            );
            let tol = loss_tolerance(reduction);
            failures.extend(compare_output(gpu, &what, &out, &want, tol, ELEMENTWISE));
        }
    }
    failures
}

/// Self-adjusting smooth L1 for D that do not divide four (the per-coordinate walks' groups,
/// the four-element prefix ending on a row) and that four does not divide, over rows that end
/// mid-vec4, at both step widths and several walks.
#[test]
fn self_adjusting_smooth_l1_matches_reference_for_any_feature_count() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(9);
    let mut failures = Vec::new();
    for d in [1usize, 2, 3, 5, 6, 7, 12, 64, 129, 255, 256] {
        let rows = 70_001 / d + 3;
        for (vec4, lanes) in [
            (true, gpu.lanes()),
            (false, gpu.lanes()),
            (true, 1),
            (true, 256),
        ] {
            let gpu = gpu.with_vec4(vec4).with_lanes(lanes);
            let case = (d, rows, DType::F32, 0.1);
            failures.extend(self_adjusting_calls(&gpu, case, &mut rng));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Self-adjusting smooth L1 over 16-bit inputs: D odd and even, row counts that leave an odd
/// element count (the last word's padding half is no element of any coordinate), at both step
/// widths (four per step over the prefix, two over the rest) and on 1 MiB bindings. Momentum
/// 0.9 and batches of a few rows among them, so that a padding half counted as an element would
/// move β past the tolerance.
#[test]
fn self_adjusting_smooth_l1_matches_reference_for_16_bit_inputs() {
    let Some(gpu) = shared_gpu() else { return };
    let Some(small) = small_binding_gpu() else {
        return;
    };
    let mut rng = Rng::new(19);
    let mut failures = Vec::new();
    for (gpu, d, rows, dtype) in [
        (gpu.with_vec4(false), 3usize, 7usize, DType::BF16),
        (gpu.with_vec4(true), 5, 9, DType::F16),
        (gpu.with_vec4(true), 3, 7_001, DType::F16),
        (gpu.with_vec4(false), 5, 4_001, DType::BF16),
        (gpu.with_vec4(true), 4, 3_001, DType::BF16),
        (gpu.with_vec4(true), 6, 2_001, DType::F16),
        (small.clone(), 7, 100_001, DType::F16),
    ] {
        failures.extend(self_adjusting_calls(&gpu, (d, rows, dtype, 0.9), &mut rng));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Builds a loss afresh.
type MakeLoss<'a> = Box<dyn Fn() -> Box<dyn Loss> + 'a>;

/// A 16-bit input of odd length whose last word's padding half holds a value (a view of a
/// caller's longer buffer) gives what the same input with a zero padding half gives, bit for
/// bit, loss and gradient, for the stateful losses whose own passes read the steps: nothing of
/// the padding half enters their statistics or sums.
#[test]
fn padding_halves_of_16_bit_views_are_no_elements() {
    let Some(gpu) = shared_gpu() else { return };
    let (d, rows) = (3usize, 7usize);
    let n = d * rows;
    let mut rng = Rng::new(23);
    let pred: Vec<f32> = rng.uniform(n, -0.1, 0.1);
    let target: Vec<f32> = rng.uniform(n, -0.1, 0.1);
    let binary: Vec<f32> = target.iter().map(|&t| f32::from(t > 0.0)).collect();
    let make: [(&str, MakeLoss<'_>, &[f32]); 3] = [
        (
            "self_adjusting_smooth_l1",
            Box::new(|| {
                let config = SelfAdjustingSmoothL1Config {
                    num_features: d,
                    momentum: 0.9,
                    ..Default::default()
                };
                Box::new(SelfAdjustingSmoothL1::new(gpu, config).unwrap())
            }),
            &target,
        ),
        (
            "ghm_c",
            Box::new(|| Box::new(wgloss::GhmC::new(gpu, Default::default()).unwrap())),
            &binary,
        ),
        (
            "dynamic_smooth_l1",
            Box::new(|| {
                let config = DynamicSmoothL1Config {
                    k: 2,
                    update_iters: 1,
                    ..Default::default()
                };
                Box::new(DynamicSmoothL1::new(gpu, config).unwrap())
            }),
            &target,
        ),
    ];
    for dtype in [DType::F16, DType::BF16] {
        for (name, make, target) in &make {
            // Padding halves of prediction and target (a residual of 7.5 where both are read).
            let run = |pads: Option<(f32, f32)>| -> (Vec<f32>, Vec<f32>) {
                let tensor = |v: &[f32], pad: Option<f32>| -> Tensor {
                    let Some(pad) = pad else {
                        return Tensor::from_slice_as(gpu, v, &[rows, d], dtype).unwrap();
                    };
                    let longer: Vec<f32> = v.iter().copied().chain([pad]).collect();
                    let t = Tensor::from_slice_as(gpu, &longer, &[n + 1], dtype).unwrap();
                    Tensor::new_typed(t.buffer().clone(), 0, &[rows, d], dtype).unwrap()
                };
                let loss = make();
                // Two calls: the second sees the state the first left.
                let (p, t) = (
                    tensor(&pred, pads.map(|p| p.0)),
                    tensor(target, pads.map(|p| p.1)),
                );
                loss.compute(gpu, &p, &t).unwrap();
                let out = loss.compute(gpu, &p, &t).unwrap();
                (out.loss.to_vec(gpu).unwrap(), out.grad.to_vec(gpu).unwrap())
            };
            assert_eq!(run(None), run(Some((-6.5, 1.0))), "{name} {dtype:?}");
        }
    }
}

/// The k-th smallest |p − t| as the kernel computes it (f32).
fn kth_smallest(pred: &[f32], target: &[f32], k: usize) -> f32 {
    let mut r: Vec<f32> = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t).abs())
        .collect();
    r.sort_by(f32::total_cmp);
    r[k - 1]
}

#[test]
fn dynamic_smooth_l1_records_exact_kth_across_shifts() {
    let Some(gpu) = shared_gpu() else { return };
    let loss = DynamicSmoothL1::new(
        gpu,
        DynamicSmoothL1Config {
            k: 3,
            update_iters: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = Rng::new(4);
    let n = 300_001;
    let target = rng.uniform(n, -1.0, 1.0);
    let t = Tensor::from_slice(gpu, &target, &[n]).unwrap();
    let mut want = Vec::new();
    // Every value kept at the first call (an invocation meets more than it keeps: the fallback);
    // residuals all ≥ 10 (none under the bound the first call left: the fallback); small ones
    // again (all under the bound: the fallback); wide ones (a handful under it); the same
    // distribution twice more (about 4k under the bound: the filtered path).
    let ranges = [
        (-0.5, 0.5),
        (10.0, 20.0),
        (-0.5, 0.5),
        (-30.0, 30.0),
        (-30.0, 30.0),
        (-30.0, 30.0),
    ];
    for (lo, hi) in ranges {
        let shift = rng.uniform(n, lo, hi);
        let pred: Vec<f32> = target.iter().zip(&shift).map(|(t, s)| t + s).collect();
        let p = Tensor::from_slice(gpu, &pred, &[n]).unwrap();
        loss.compute(gpu, &p, &t).unwrap();
        want.push(kth_smallest(&pred, &target, 3));
        assert_eq!(loss.history(gpu).unwrap(), want);
    }
}

/// Residuals with ties and runs: the selection keeps each invocation's two smallest residuals
/// under the bound and, from an invocation that met more, the floor below which it dropped
/// nothing. Ties at the k-th smallest (a third of the residuals exactly 0, as when predictions
/// match quantised targets) keep the filtered selection exact; a run of small residuals whose
/// third smallest lies in one invocation's dropped values must not be passed over for a larger
/// candidate of another invocation (the floor sends it to the fallback); and a call with no
/// residual under the bound 0 that zeros leave falls back.
#[test]
fn dynamic_smooth_l1_records_exact_kth_with_ties_and_runs() {
    let Some(gpu) = shared_gpu() else { return };
    // Both widths, each with the adapter's walk and with the whole workgroup stepping together
    // (a GPU's: the workgroup merges its invocations' candidates and floors).
    let runs = [false, true]
        .into_iter()
        .flat_map(|v| [2, 256].map(move |l| (v, l)));
    for (vec4, lanes) in runs {
        let gpu = gpu.with_vec4(vec4).with_lanes(lanes);
        let loss = DynamicSmoothL1::new(
            &gpu,
            DynamicSmoothL1Config {
                k: 3,
                update_iters: 16,
                ..Default::default()
            },
        )
        .unwrap();
        let mut rng = Rng::new(8);
        let n = 200_003;
        let target = rng.uniform(n, -1.0, 1.0);
        let t = Tensor::from_slice(&gpu, &target, &[n]).unwrap();
        let ties = |rng: &mut Rng| -> Vec<f32> {
            let shift = rng.uniform(n, -0.5, 0.5);
            (0..n)
                .map(|i| if i % 3 == 0 { 0.0 } else { shift[i] })
                .collect()
        };
        // Residuals 1e-3 (1 + j / 4096) over a run of 2048 consecutive elements, the rest at
        // least 1: after a call of residuals in [1e-3, 2e-3] (bound about 4e-3) only the run
        // is under the bound, and each invocation meets several of its values.
        let run = |rng: &mut Rng| -> Vec<f32> {
            let mut shift = rng.uniform(n, 1.0, 2.0);
            for (j, s) in shift[50_000..52_048].iter_mut().enumerate() {
                *s = 1e-3 * (1.0 + j as f32 / 4096.0);
            }
            shift
        };
        let near = |rng: &mut Rng| -> Vec<f32> { rng.uniform(n, 1e-3, 2e-3) };
        let far = |rng: &mut Rng| -> Vec<f32> { rng.uniform(n, 0.5, 1.0) };
        let shifts = [
            ties(&mut rng),
            ties(&mut rng),
            ties(&mut rng),
            far(&mut rng),
            near(&mut rng),
            run(&mut rng),
            run(&mut rng),
        ];
        let mut want = Vec::new();
        for (call, shift) in shifts.iter().enumerate() {
            let pred: Vec<f32> = target.iter().zip(shift).map(|(t, s)| t + s).collect();
            let p = Tensor::from_slice(&gpu, &pred, &[n]).unwrap();
            loss.compute(&gpu, &p, &t).unwrap();
            want.push(kth_smallest(&pred, &target, 3));
            let what = format!("vec4={vec4} lanes={lanes} call {call}");
            assert_eq!(loss.history(&gpu).unwrap(), want, "{what}");
        }
    }
}

/// The k-th smallest record from 16-bit inputs of odd lengths, at both step widths: the padding
/// half of the last word is no residual (a zero one would be the smallest). The second call's
/// residuals are wide, so that few fall under the first call's bound and the filtered path,
/// where the padding half would enter the candidates, records them.
#[test]
fn dynamic_smooth_l1_ignores_the_padding_half_of_16_bit_inputs() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(6);
    for (dtype, vec4, n) in [
        (DType::F16, false, 20_001),
        (DType::BF16, true, 20_003),
        (DType::F16, true, 65_537),
    ] {
        let gpu = gpu.with_vec4(vec4);
        let config = DynamicSmoothL1Config {
            k: 3,
            update_iters: 8,
            ..Default::default()
        };
        let loss = DynamicSmoothL1::new(&gpu, config).unwrap();
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| dtype.round(x)).collect() };
        let target = round(rng.uniform(n, -1.0, 1.0));
        let t = Tensor::from_slice_as(&gpu, &target, &[n], dtype).unwrap();
        let mut want = Vec::new();
        for (lo, hi) in [(-0.5, 0.5), (-30.0, 30.0), (-30.0, 30.0)] {
            let shift = rng.uniform(n, lo, hi);
            let pred = round(target.iter().zip(&shift).map(|(t, s)| t + s).collect());
            let p = Tensor::from_slice_as(&gpu, &pred, &[n], dtype).unwrap();
            loss.compute(&gpu, &p, &t).unwrap();
            want.push(kth_smallest(&pred, &target, 3));
            assert_eq!(
                loss.history(&gpu).unwrap(),
                want,
                "{dtype:?} vec4={vec4} n={n}"
            );
        }
    }
}

/// Residuals from 1e-15 to 30 of both signs (targets 0, so the residuals are exact): the losses
/// whose textbook forms cancel near 0 keep their relative precision there.
fn tiny_residuals() -> (Vec<f32>, Vec<f32>) {
    let n = 4_099;
    let pred = (0..n)
        .map(|i| {
            let r = 10f64.powf(-15.0 + 16.5 * i as f64 / (n - 1) as f64);
            (if i % 2 == 0 { r } else { -r }) as f32
        })
        .collect();
    (pred, vec![0.0f32; n])
}

/// `make(reduction)` against `reference(pred, target, reduction)` on [`tiny_residuals`], element by
/// element with no absolute slack (2e-6 relative), and their mean, at both step widths.
fn check_relative_precision(
    name: &str,
    make: impl Fn(Reduction) -> Box<dyn Loss>,
    reference: impl Fn(ArrayViewD<'_, f64>, ArrayViewD<'_, f64>, Reduction) -> LossGrad,
) {
    let Some(gpu) = shared_gpu() else { return };
    let (pred, target) = tiny_residuals();
    let n = pred.len();
    let tight = Tolerance {
        rtol: 2e-6,
        atol_frac: 0.0,
    };
    let mut failures = Vec::new();
    for vec4 in [true, false] {
        let gpu = gpu.with_vec4(vec4);
        for reduction in [Reduction::None, Reduction::Mean] {
            let want = reference(
                to_f64(&pred, &[n]).view(),
                to_f64(&target, &[n]).view(),
                reduction,
            );
            let p = Tensor::from_slice(&gpu, &pred, &[n]).unwrap();
            let t = Tensor::from_slice(&gpu, &target, &[n]).unwrap();
            let out = make(reduction).compute(&gpu, &p, &t).unwrap();
            let what = format!("{name} vec4={vec4} {reduction:?}");
            let loss_tol = if reduction == Reduction::None {
                tight
            } else {
                REDUCED
            };
            failures.extend(compare_output(&gpu, &what, &out, &want, loss_tol, tight));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Log-cosh: ln cosh r ≈ r²/2 is not the difference of |r| + ln(1 + e^{−2|r|}) and ln 2 (whose
/// rounding, 6e-8 absolute, would swamp it below 1e-3), nor tanh r that of 1 and e^{−2|r|}.
#[test]
fn log_cosh_keeps_relative_precision_for_tiny_residuals() {
    check_relative_precision(
        "log_cosh",
        |reduction| {
            Box::new(LogCosh {
                reduction,
                grad_scale: 1.0,
            })
        },
        |p, t, r| wgloss_ref::log_cosh(p, t, r.into_ref(), 1.0),
    );
}

/// Balanced L1 below β: α/b (b d + 1) ln(b d/β + 1) − α d ≈ α b d²/(2β) at β = 1 is not the
/// difference of its two terms (the kernel sums two non-negative ones instead); β = 0.6 too.
#[test]
fn balanced_l1_keeps_relative_precision_for_tiny_residuals() {
    for beta in [1.0f32, 0.6] {
        check_relative_precision(
            &format!("balanced_l1 beta={beta}"),
            |reduction| {
                Box::new(BalancedL1 {
                    beta,
                    reduction,
                    ..Default::default()
                })
            },
            |p, t, r| wgloss_ref::balanced_l1(p, t, 0.5, 1.5, beta.into(), r.into_ref(), 1.0),
        );
    }
}

/// A `Gpu` adopted from a caller's device and queue takes the settings of the device's adapter
/// (on a CPU adapter: pairs of lanes, a few workgroups per core, per-invocation partial sums) as
/// `Gpu::new` does, and its losses match the reference.
#[test]
fn adopted_device_takes_its_adapters_settings() {
    let Some(gpu) = shared_gpu() else { return };
    let adopted = wgloss::Gpu::from_wgpu(gpu.device().clone(), gpu.queue().clone());
    assert_eq!(adopted.adapter_name(), gpu.adapter_name());
    assert_eq!(adopted.lanes(), gpu.lanes());
    assert_eq!(adopted.max_workgroups(), gpu.max_workgroups());
    let mut rng = Rng::new(3);
    let n = 100_003;
    let pred = rng.uniform(n, -2.0, 2.0);
    let target = rng.uniform(n, -2.0, 2.0);
    let mut failures = Vec::new();
    for reduction in [Reduction::Mean, Reduction::None] {
        let want = wgloss_ref::mse(
            to_f64(&pred, &[n]).view(),
            to_f64(&target, &[n]).view(),
            reduction.into_ref(),
            1.0,
        );
        let p = Tensor::from_slice(&adopted, &pred, &[n]).unwrap();
        let t = Tensor::from_slice(&adopted, &target, &[n]).unwrap();
        let loss = Mse {
            reduction,
            grad_scale: 1.0,
        };
        let out = loss.compute(&adopted, &p, &t).unwrap();
        let loss_tol = loss_tolerance(reduction);
        failures.extend(compare_output(
            &adopted,
            &format!("mse {reduction:?}"),
            &out,
            &want,
            loss_tol,
            ELEMENTWISE,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RMSLE of predictions 1e-1 to 1e-5 (relative) from their targets: ln((1 + p) / (1 + t)) is then
/// a logarithm near 1, which Vulkan computes only to an absolute 2^-21 (5 % of l at 1e-5); the
/// kernel takes it as log1p of (p - t) / (1 + t). Loss and every gradient element to 2e-6
/// relative.
#[test]
fn rmsle_keeps_relative_precision_for_close_predictions() {
    let Some(gpu) = shared_gpu() else { return };
    let n = 4_096;
    let tight = Tolerance {
        rtol: 2e-6,
        atol_frac: 0.0,
    };
    let mut failures = Vec::new();
    for gap in [1e-1f64, 1e-2, 1e-3, 1e-4, 1e-5] {
        let target: Vec<f32> = (0..n)
            .map(|i| (-0.5 + 4.0 * i as f64 / n as f64) as f32)
            .collect();
        let pred: Vec<f32> = target
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let g = if i % 2 == 0 { gap } else { -0.7 * gap };
                (f64::from(t) + g * (1.0 + f64::from(t))) as f32
            })
            .collect();
        let what = format!("rmsle gap {gap:e}");
        failures.extend(check_rmsle(gpu, &what, &pred, &target, tight, tight));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RMSLE where (1 + p) / (1 + t) is past the f32 range (p near f32::MAX over t near -1, and the
/// reverse): the logarithm is about ±103, the loss finite and equal to the reference.
#[test]
fn rmsle_is_finite_for_ratios_past_f32() {
    let Some(gpu) = shared_gpu() else { return };
    let pred = [3e38f32, -0.99999994, 1e30, 0.5];
    let target = [-0.99999994f32, 3e38, -0.9999, 0.25];
    let failures = check_rmsle(gpu, "rmsle", &pred, &target, REDUCED, ELEMENTWISE);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RMSLE of `pred` over `target` (flat) on the GPU against the f64 reference.
fn check_rmsle(
    gpu: &wgloss::Gpu,
    what: &str,
    pred: &[f32],
    target: &[f32],
    loss_tol: Tolerance,
    grad_tol: Tolerance,
) -> Vec<String> {
    let n = pred.len();
    let want = wgloss_ref::rmsle(to_f64(pred, &[n]).view(), to_f64(target, &[n]).view(), 1.0);
    let p = Tensor::from_slice(gpu, pred, &[n]).unwrap();
    let t = Tensor::from_slice(gpu, target, &[n]).unwrap();
    let out = Rmsle::default().compute(gpu, &p, &t).unwrap();
    compare_output(gpu, what, &out, &want, loss_tol, grad_tol)
}

/// Every 16-bit pattern of F16 and BF16 as predictions (targets 0) through mse with reduction
/// none: the kernel widens each exactly (each loss is p², computed in f32 as the host computes
/// it) and rounds each gradient 2p·s to nearest even as the host does (`DType::round`), bit for
/// bit: s = 1/2 gives p back, s = 1/3 rounds (into f16's subnormals too), s = 3 overflows into
/// inf (s = 1/2 too where 2p overflows, on a device that keeps that order). NaN stays NaN. BF16
/// patterns that are f32 subnormals are left out (a device may flush them), as are results that
/// are f32 subnormals.
#[test]
fn half_values_convert_exactly() {
    let Some(gpu) = shared_gpu() else { return };
    let mut failures = Vec::new();
    for dtype in [DType::F16, DType::BF16] {
        let bits: Vec<u16> = (0..=u16::MAX)
            .filter(|&h| dtype == DType::F16 || h & 0x7f80 != 0 || h & 0x007f == 0)
            .collect();
        let n = bits.len();
        let buffer = gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("half patterns"),
                contents: bytemuck::cast_slice(&bits),
                usage: wgloss::TENSOR_USAGES,
            });
        let p = Tensor::new_typed(buffer, 0, &[n], dtype).unwrap();
        let t = Tensor::from_slice_as(gpu, &vec![0.0; n], &[n], dtype).unwrap();
        let values = p.to_vec(gpu).unwrap();
        for s in [0.5f32, 1.0 / 3.0, 3.0] {
            let out = Mse {
                reduction: Reduction::None,
                grad_scale: s,
            }
            .compute(gpu, &p, &t)
            .unwrap();
            let loss = out.loss.to_vec(gpu).unwrap();
            let grad = out.grad.to_vec(gpu).unwrap();
            let same = |got: f32, want: f32| {
                got.to_bits() == want.to_bits()
                    || got.is_nan() && want.is_nan()
                    || want != 0.0 && !want.is_normal() && want.is_finite()
            };
            for (i, &x) in values.iter().enumerate() {
                let (want_loss, want_grad) = (x * x, dtype.round(2.0 * x * s));
                // 2p·s is p·2s exactly unless 2p overflows, where a device may take the
                // second order (NVIDIA's compiler does) and give the finite value.
                let grad_other = dtype.round(x * (2.0 * s));
                if !same(loss[i], want_loss)
                    || !(same(grad[i], want_grad) || same(grad[i], grad_other))
                {
                    failures.push(format!(
                        "{dtype:?} {:#06x} s={s}: loss {:e} (want {want_loss:e}), grad {:e} \
                         (want {want_grad:e})",
                        bits[i], loss[i], grad[i]
                    ));
                }
            }
        }
    }
    let shown: Vec<_> = failures.iter().take(10).collect();
    assert!(
        failures.is_empty(),
        "{} mismatches: {shown:#?}",
        failures.len()
    );
}

/// 16-bit inputs longer than one storage binding (1 MiB here: 524,288 elements) run in
/// segments of whole words, the last one odd, through a GPU's walks: huber against the f64
/// reference on the rounded inputs, every reduction, both types.
#[test]
fn half_inputs_split_across_bindings() {
    for gpu in wgloss_suite::small_binding_gpus() {
        let n = 1_300_001;
        let mut rng = Rng::new(31);
        for dtype in [DType::F16, DType::BF16] {
            let round =
                |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| dtype.round(x)).collect() };
            let pred = round(rng.uniform(n, -3.0, 3.0));
            let target = round(rng.uniform(n, -3.0, 3.0));
            let p = Tensor::from_slice_as(gpu, &pred, &[n], dtype).unwrap();
            let t = Tensor::from_slice_as(gpu, &target, &[n], dtype).unwrap();
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let loss = wgloss::Huber {
                    reduction,
                    grad_scale: 1024.0,
                    ..Default::default()
                };
                let out = loss.compute(gpu, &p, &t).unwrap();
                let want = wgloss_ref::huber(
                    to_f64(&pred, &[n]).view(),
                    to_f64(&target, &[n]).view(),
                    1.0,
                    reduction.into_ref(),
                    1024.0,
                );
                let what = format!("huber {dtype:?} {reduction:?}");
                let tol = loss_tolerance(reduction);
                let failures = compare_output(gpu, &what, &out, &want, tol, ELEMENTWISE);
                assert!(failures.is_empty(), "{}", failures.join("\n"));
            }
        }
    }
}

/// rmse over f16 inputs whose residuals (and the mean square's gradient 2r) are past f16's range,
/// while the gradient r / (n rmse) is not: finite, and equal to the reference's, at both step
/// widths (the scaled gradient is recomputed from the inputs, never stored unscaled).
#[test]
fn rmse_of_f16_inputs_with_residuals_past_half_range() {
    let Some(gpu) = shared_gpu() else { return };
    let n = 1031;
    let pred: Vec<f32> = (0..n)
        .map(|i| DType::F16.round([60000.0, -60000.0, 1.5, -0.25][i % 4]))
        .collect();
    let target: Vec<f32> = (0..n)
        .map(|i| DType::F16.round([-10000.0, 10000.0, 0.0, 0.5][i % 4]))
        .collect();
    let want = wgloss_ref::rmse(
        to_f64(&pred, &[n]).view(),
        to_f64(&target, &[n]).view(),
        1.0,
    );
    for vec4 in [true, false] {
        let gpu = gpu.with_vec4(vec4);
        let p = Tensor::from_slice_as(&gpu, &pred, &[n], DType::F16).unwrap();
        let t = Tensor::from_slice_as(&gpu, &target, &[n], DType::F16).unwrap();
        let out = wgloss::Rmse::default().compute(&gpu, &p, &t).unwrap();
        let what = format!("rmse f16 vec4={vec4}");
        let failures = compare_output(&gpu, &what, &out, &want, REDUCED, ELEMENTWISE);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// Uploading past the device's `max_buffer_size` (256 MiB under wgpu's default limits) is a
/// typed error, not a panic inside wgpu's initialised-buffer helper; so is a zeroed tensor.
#[test]
fn tensors_past_the_buffer_limit_are_typed_errors() {
    let Some(gpu) = wgloss_suite::default_limits_gpu() else {
        return;
    };
    let n = (gpu.limits().max_buffer_size / 4 + 1) as usize;
    let data = vec![0.0f32; n];
    let past = |r: wgloss::Result<Tensor>| {
        assert!(
            matches!(r, Err(wgloss::Error::InvalidShape { name: "data", .. })),
            "{:?}",
            r.map(|t| t.shape().to_vec())
        );
    };
    past(Tensor::from_slice(gpu, &data, &[n]));
    past(Tensor::zeros(gpu, &[n]));
    assert!(Tensor::from_slice(gpu, &data[..n - 1], &[n - 1]).is_ok());
}
