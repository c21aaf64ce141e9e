//! Regression (F1) cases the registry's generated inputs do not reach: dynamic smooth L1's
//! record of the k-th smallest residual when a call's residuals are all far above the previous
//! call's (its selection keeps only residuals up to four times the previous k-th smallest, and
//! must then fall back to all of them).

use wgloss::{DynamicSmoothL1, DynamicSmoothL1Config, Loss, Tensor};
use wgloss_suite::check::Rng;
use wgloss_suite::shared_gpu;

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
