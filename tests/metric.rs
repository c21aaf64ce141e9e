//! Metric learning (F5) cases the registry's generated inputs do not reach: SimCLR's views
//! mode, classes with a single member, all-same labels, zero vectors, a near-zero temperature.

use wgloss::{Loss, NtXent, SupCon, Tensor};
use wgloss_suite::check::{compare, to_f64, Rng, ELEMENTWISE, REDUCED};
use wgloss_suite::shared_gpu;

/// Runs `loss` on embeddings `[n, d]` (and labels) and compares with the reference.
fn check(
    what: &str,
    loss: &dyn Loss,
    emb: &[f32],
    shape: [usize; 2],
    labels: &[i32],
    reference: impl Fn(
        ndarray::ArrayViewD<'_, f64>,
        ndarray::ArrayViewD<'_, f64>,
    ) -> wgloss_ref::MultiGrad,
) {
    let gpu = shared_gpu().expect("an adapter");
    let e = Tensor::from_slice(gpu, emb, &shape).unwrap();
    let y = Tensor::from_labels(gpu, labels, &[labels.len()]).unwrap();
    let out = loss.compute(gpu, &e, &y).unwrap();
    let l64: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let want = reference(
        to_f64(emb, &shape).view(),
        to_f64(&l64, &[labels.len()]).view(),
    );
    let loss_got = out.loss.to_vec(gpu).unwrap();
    let grad_got = out.grad.to_vec(gpu).unwrap();
    assert!(
        loss_got.iter().chain(&grad_got).all(|x| x.is_finite()),
        "{what}: non-finite output"
    );
    compare(
        &format!("{what} loss"),
        &loss_got,
        want.loss.view(),
        REDUCED,
    )
    .unwrap();
    compare(
        &format!("{what} grad"),
        &grad_got,
        want.grads[0].view(),
        ELEMENTWISE,
    )
    .unwrap();
}

fn embeddings(n: usize, d: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).uniform(n * d, -1.0, 1.0)
}

#[test]
fn nt_xent_views_matches_simclr() {
    if shared_gpu().is_none() {
        return;
    }
    for (n, d) in [(1, 3), (2, 1), (5, 4), (64, 17)] {
        let emb = embeddings(2 * n, d, 3 + n as u64);
        for temperature in [0.5f32, 0.1] {
            let loss = NtXent {
                temperature,
                ..NtXent::views()
            };
            // The labels are not read in views mode.
            check(
                &format!("nt_xent views n={n} d={d} τ={temperature}"),
                &loss,
                &emb,
                [2 * n, d],
                &vec![7; 2 * n],
                |e, _| wgloss_ref::nt_xent_views(e, temperature.into(), 1.0),
            );
        }
    }
}

#[test]
fn single_member_classes_and_all_same_labels() {
    if shared_gpu().is_none() {
        return;
    }
    let emb = embeddings(9, 5, 11);
    let cases: [(&str, Vec<i32>); 4] = [
        ("all distinct", (0..9).collect()),
        ("one pair, the rest single", vec![0, 0, 1, 2, 3, 4, 5, 6, 7]),
        ("all same", vec![3; 9]),
        ("two classes", vec![0, 1, 0, 1, 0, 1, 0, 1, 1]),
    ];
    for (what, labels) in &cases {
        check(
            &format!("supcon {what}"),
            &SupCon::default(),
            &emb,
            [9, 5],
            labels,
            |e, y| wgloss_ref::supcon(e, y, 0.1, 1.0),
        );
        check(
            &format!("nt_xent {what}"),
            &NtXent::default(),
            &emb,
            [9, 5],
            labels,
            |e, y| wgloss_ref::nt_xent_labels(e, y, 0.07, 1.0),
        );
    }
}

#[test]
fn zero_vectors_and_small_temperatures_stay_finite() {
    if shared_gpu().is_none() {
        return;
    }
    let mut emb = embeddings(8, 4, 5);
    emb[4..8].fill(0.0);
    emb[20..24].fill(0.0);
    let labels = [0, 0, 1, 1, 0, 1, 2, 2];
    for temperature in [0.1f32, 0.01] {
        check(
            &format!("supcon zero rows τ={temperature}"),
            &SupCon {
                temperature,
                ..Default::default()
            },
            &emb,
            [8, 4],
            &labels,
            |e, y| wgloss_ref::supcon(e, y, temperature.into(), 1.0),
        );
        check(
            &format!("nt_xent zero rows τ={temperature}"),
            &NtXent {
                temperature,
                ..Default::default()
            },
            &emb,
            [8, 4],
            &labels,
            |e, y| wgloss_ref::nt_xent_labels(e, y, temperature.into(), 1.0),
        );
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let Some(gpu) = shared_gpu() else { return };
    let e = Tensor::from_slice(gpu, &[0.5; 6], &[3, 2]).unwrap();
    let y = Tensor::from_labels(gpu, &[0, 1, 0], &[3]).unwrap();
    // Views mode needs an even number of rows.
    assert!(matches!(
        NtXent::views().compute(gpu, &e, &y),
        Err(wgloss::Error::InvalidShape { .. })
    ));
    let flat = Tensor::from_slice(gpu, &[0.5; 6], &[6]).unwrap();
    assert!(matches!(
        SupCon::default().compute(gpu, &flat, &y),
        Err(wgloss::Error::InvalidShape { .. })
    ));
    let short = Tensor::from_labels(gpu, &[0, 1], &[2]).unwrap();
    assert!(matches!(
        SupCon::default().compute(gpu, &e, &short),
        Err(wgloss::Error::ShapeMismatch { name: "target", .. })
    ));
}
