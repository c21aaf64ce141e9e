//! Metric learning (F5) cases the registry's generated inputs do not reach: SimCLR's views
//! mode, classes with a single member, all-same labels, zero vectors, a near-zero temperature,
//! and the tuple losses (pairs, triplets, InfoNCE) at their edges and on bad input.

use wgloss::{DType, Loss, MarginHead, NtXent, SupCon, Tensor, TupleLoss};
use wgloss_suite::check::{
    assert_like_f32_call, compare, to_f64, Rng, Tolerance, ELEMENTWISE, REDUCED,
};
use wgloss_suite::shared_gpu;

type Reference<'a> =
    &'a dyn Fn(ndarray::ArrayViewD<'_, f64>, ndarray::ArrayViewD<'_, f64>) -> wgloss_ref::MultiGrad;

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
    check_within(
        what,
        loss,
        (emb, shape, labels),
        &reference,
        REDUCED,
        ELEMENTWISE,
    );
}

/// [`check`] with the loss and gradient compared within `loss_tol` and `grad_tol`.
fn check_within(
    what: &str,
    loss: &dyn Loss,
    (emb, shape, labels): (&[f32], [usize; 2], &[i32]),
    reference: Reference<'_>,
    loss_tol: Tolerance,
    grad_tol: Tolerance,
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
        loss_tol,
    )
    .unwrap();
    compare(
        &format!("{what} grad"),
        &grad_got,
        want.grads[0].view(),
        grad_tol,
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
        check_in_batch_kinds(what, &emb, [9, 5], labels);
    }
}

/// Every in-batch loss with its default parameters on one batch.
fn check_in_batch_kinds(what: &str, emb: &[f32], shape: [usize; 2], labels: &[i32]) {
    check(
        &format!("supcon {what}"),
        &SupCon::default(),
        emb,
        shape,
        labels,
        |e, y| wgloss_ref::supcon(e, y, 0.1, 1.0),
    );
    check(
        &format!("nt_xent {what}"),
        &NtXent::default(),
        emb,
        shape,
        labels,
        |e, y| wgloss_ref::nt_xent_labels(e, y, 0.07, 1.0),
    );
    check(
        &format!("contrastive_batch {what}"),
        &wgloss::ContrastiveBatch::default(),
        emb,
        shape,
        labels,
        |e, y| wgloss_ref::contrastive_batch(e, y, 0.0, 1.0, 1.0),
    );
    check(
        &format!("triplet_batch_hard {what}"),
        &wgloss::TripletBatchHard::default(),
        emb,
        shape,
        labels,
        |e, y| {
            let mining = wgloss_ref::TripletMining::BatchHard;
            wgloss_ref::triplet_mined(e, y, 1.0, mining, false, 1.0)
        },
    );
    check(
        &format!("triplet_semi_hard {what}"),
        &wgloss::TripletSemiHard::default(),
        emb,
        shape,
        labels,
        |e, y| {
            let mining = wgloss_ref::TripletMining::SemiHard;
            wgloss_ref::triplet_mined(e, y, 1.0, mining, false, 1.0)
        },
    );
}

/// Rows pass through workgroup memory 64 columns at a time: rows of exactly one span, and of
/// two spans and a partial third whose width is not a multiple of four, for every in-batch kind.
#[test]
fn wide_rows_cross_the_staging_spans() {
    if shared_gpu().is_none() {
        return;
    }
    for (n, d) in [(24, 64), (37, 133)] {
        let emb = embeddings(n, d, 21 + d as u64);
        let labels: Vec<i32> = (0..n).map(|i| (i * 5 % 4) as i32).collect();
        check_in_batch_kinds(&format!("d={d}"), &emb, [n, d], &labels);
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
    // (A zero row lies at distance exactly 1 from every other normalised row: a negative margin
    // of 1 would put those pairs on the relu's kink, counted or not by rounding.)
    check(
        "contrastive_batch zero rows",
        &wgloss::ContrastiveBatch {
            neg_margin: 1.5,
            ..Default::default()
        },
        &emb,
        [8, 4],
        &labels,
        |e, y| wgloss_ref::contrastive_batch(e, y, 0.0, 1.5, 1.0),
    );
    check(
        "triplet_batch_hard zero rows",
        &wgloss::TripletBatchHard::default(),
        &emb,
        [8, 4],
        &labels,
        |e, y| {
            let mining = wgloss_ref::TripletMining::BatchHard;
            wgloss_ref::triplet_mined(e, y, 1.0, mining, false, 1.0)
        },
    );
    check(
        "triplet_semi_hard zero rows",
        &wgloss::TripletSemiHard::default(),
        &emb,
        [8, 4],
        &labels,
        |e, y| {
            let mining = wgloss_ref::TripletMining::SemiHard;
            wgloss_ref::triplet_mined(e, y, 1.0, mining, false, 1.0)
        },
    );
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

/// Runs a tuple loss on `inputs` and compares loss and every gradient with the reference.
fn check_tuple(
    what: &str,
    loss: &dyn wgloss::TupleLoss,
    inputs: &[(&[f32], [usize; 2])],
    labels: Option<&[i32]>,
    want: wgloss_ref::MultiGrad,
) {
    let gpu = shared_gpu().expect("an adapter");
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|(x, s)| Tensor::from_slice(gpu, x, s).unwrap())
        .collect();
    let views: Vec<&Tensor> = tensors.iter().collect();
    let y = labels.map(|l| Tensor::from_labels(gpu, l, &[l.len()]).unwrap());
    let out = loss.compute(gpu, &views, y.as_ref()).unwrap();
    let got = out.loss.to_vec(gpu).unwrap();
    assert!(got.iter().all(|x| x.is_finite()), "{what}: non-finite loss");
    compare(&format!("{what} loss"), &got, want.loss.view(), REDUCED).unwrap();
    for (j, (g, w)) in out.grads.iter().zip(&want.grads).enumerate() {
        let g = g.to_vec(gpu).unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{what}: non-finite grad {j}"
        );
        compare(&format!("{what} grad {j}"), &g, w.view(), ELEMENTWISE).unwrap();
    }
}

/// info_nce with a queue of a different length than the batch, one row, and τ = 0.01; pairs
/// and triplets with zero rows and coinciding anchor and positive (swap's tie).
#[test]
fn tuple_losses_at_the_edges_match_reference() {
    if shared_gpu().is_none() {
        return;
    }
    let f = |x: &[f32], s: [usize; 2]| to_f64(x, &s);
    for (n, m, d, t, symmetric) in [
        (7, 5, 4, 0.07f32, true),
        (1, 3, 3, 0.01, false),
        (9, 0, 2, 0.01, true),
    ] {
        let (q, k, neg) = (
            embeddings(n, d, 1),
            embeddings(n, d, 2),
            embeddings(m, d, 3),
        );
        let loss = wgloss::InfoNce {
            temperature: t,
            symmetric,
            negatives: m > 0,
            ..Default::default()
        };
        let neg64 = f(&neg, [m, d]);
        let want = wgloss_ref::info_nce(
            f(&q, [n, d]).view(),
            f(&k, [n, d]).view(),
            (m > 0).then(|| neg64.view()),
            t.into(),
            true,
            symmetric,
            1.0,
        );
        let mut inputs = vec![(&q[..], [n, d]), (&k[..], [n, d])];
        if m > 0 {
            inputs.push((&neg[..], [m, d]));
        }
        check_tuple(&format!("info_nce N={n} M={m}"), &loss, &inputs, None, want);
    }
    let (n, d) = (6, 5);
    let mut x1 = embeddings(n, d, 4);
    let x2 = embeddings(n, d, 5);
    x1[..d].fill(0.0);
    let y = [1, -1, 1, -1, 1, -1];
    let y64: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    let want = wgloss_ref::cosine_embedding(
        f(&x1, [n, d]).view(),
        f(&x2, [n, d]).view(),
        to_f64(&y64, &[n]).view(),
        0.0,
        wgloss_ref::Reduction::Mean,
        1.0,
    );
    let inputs = [(&x1[..], [n, d]), (&x2[..], [n, d])];
    check_tuple(
        "cosine_embedding zero row",
        &wgloss::CosineEmbedding::default(),
        &inputs,
        Some(&y),
        want,
    );
    let negative = embeddings(n, d, 6);
    for swap in [false, true] {
        let loss = wgloss::Triplet {
            swap,
            ..Default::default()
        };
        let want = wgloss_ref::triplet(
            f(&x2, [n, d]).view(),
            f(&x2, [n, d]).view(),
            f(&negative, [n, d]).view(),
            1.0,
            2.0,
            1e-6,
            swap,
            wgloss_ref::Reduction::Sum,
            1.0,
        );
        let loss = wgloss::Triplet {
            reduction: wgloss::Reduction::Sum,
            ..loss
        };
        let inputs = [
            (&x2[..], [n, d]),
            (&x2[..], [n, d]),
            (&negative[..], [n, d]),
        ];
        check_tuple(
            &format!("triplet a = p swap={swap}"),
            &loss,
            &inputs,
            None,
            want,
        );
    }
}

/// Tuple losses reject a missing or mismatched input or target with a typed error.
#[test]
fn tuple_losses_reject_bad_inputs() {
    let Some(gpu) = shared_gpu() else { return };
    use wgloss::{Error, TupleLoss};
    let t = |n: usize, d: usize| Tensor::from_slice(gpu, &embeddings(n, d, 1), &[n, d]).unwrap();
    let (a, b, c) = (t(4, 3), t(4, 3), t(5, 3));
    let y = Tensor::from_labels(gpu, &[1, -1, 1, 1], &[4]).unwrap();
    let y5 = Tensor::from_labels(gpu, &[1; 5], &[5]).unwrap();
    let cos = wgloss::CosineEmbedding::default();
    assert!(matches!(
        cos.compute(gpu, &[&a, &c], Some(&y)),
        Err(Error::ShapeMismatch { name: "x2", .. })
    ));
    assert!(matches!(
        cos.compute(gpu, &[&a, &b], Some(&y5)),
        Err(Error::ShapeMismatch { name: "target", .. })
    ));
    assert!(matches!(
        cos.compute(gpu, &[&a, &b], None),
        Err(Error::Empty { name: "target" })
    ));
    assert!(matches!(
        cos.compute(gpu, &[&a], Some(&y)),
        Err(Error::InvalidShape { .. })
    ));
    let triplet = wgloss::Triplet::default();
    assert!(matches!(
        triplet.compute(gpu, &[&a, &b, &c], None),
        Err(Error::ShapeMismatch {
            name: "negative",
            ..
        })
    ));
    let nce = wgloss::InfoNce::default();
    assert!(matches!(
        nce.compute(gpu, &[&a, &c], None),
        Err(Error::ShapeMismatch { name: "key", .. })
    ));
    let cold = wgloss::InfoNce {
        temperature: -1.0,
        ..Default::default()
    };
    assert!(matches!(
        cold.compute(gpu, &[&a, &b], None),
        Err(Error::InvalidParameter {
            name: "temperature",
            ..
        })
    ));
}

/// Semi-hard triplet mining over classes larger than one chunk of 16 positives (two and three
/// chunks; one class of 40 and one odd row), and over more than one range of 1024 anchors
/// (N = 2100), against the reference.
#[test]
fn triplet_semi_hard_mines_every_chunk() {
    if shared_gpu().is_none() {
        return;
    }
    for (n, d, classes, squared) in [
        (40, 3, 2, false),
        (100, 5, 3, true),
        (41, 2, 1, false),
        (2100, 3, 260, false),
    ] {
        let emb: Vec<f32> = embeddings(n, d, 11 + n as u64)
            .iter()
            .map(|x| (x * 64.0).round() / 64.0)
            .collect();
        let mut labels: Vec<i32> = (0..n).map(|i| (i * 7 % classes) as i32).collect();
        // One odd row out in the single-class case, so that negatives exist.
        labels[n - 1] = classes as i32;
        for margin in [1.0f32, 0.2] {
            check(
                &format!("triplet_semi_hard n={n} classes={classes} margin={margin}"),
                &wgloss::TripletSemiHard {
                    margin,
                    squared,
                    grad_scale: 1.0,
                },
                &emb,
                [n, d],
                &labels,
                |e, y| {
                    let mining = wgloss_ref::TripletMining::SemiHard;
                    wgloss_ref::triplet_mined(e, y, margin.into(), mining, squared, 1.0)
                },
            );
        }
    }
}

/// supcon over confident anchors: each row's one positive is its nearest neighbour by far, so
/// each anchor's loss (m − s_ap) + log1p(t) is about (N − 2)·e^{−s_ap} (1e-8 at τ = 0.05), far
/// below the rounding of LSE − s_ap at s_ap ≈ 20, and the positive's coefficient softmax_p − 1
/// is as small. Both keep their relative accuracy (no absolute slack on the loss), on one key
/// range and on two (D = 8200).
#[test]
fn confident_supcon_anchors_keep_their_small_losses() {
    if shared_gpu().is_none() {
        return;
    }
    for (pairs, d, temperatures) in [
        (8usize, 16usize, &[0.05f32, 0.1, 0.5][..]),
        (150, 8200, &[0.05]),
    ] {
        let n = 2 * pairs;
        let mut rng = Rng::new(5 + d as u64);
        let noise = rng.uniform(n * d, -0.02, 0.02);
        let mut emb = vec![0f32; n * d];
        for (r, row) in emb.chunks_mut(d).enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x = noise[r * d + c] + if c == (r / 2) % d { 1.0 } else { 0.0 };
            }
        }
        let labels: Vec<i32> = (0..n).map(|r| (r / 2) as i32).collect();
        for &temperature in temperatures {
            let loss = SupCon {
                temperature,
                ..Default::default()
            };
            let exact = Tolerance {
                rtol: 1e-4,
                atol_frac: 0.0,
            };
            // A row's gradient along its own direction is what the normalisation's backward
            // leaves of two nearly equal f32 sums (x̂_p is almost x̂_a): 1e-5 of the largest
            // entry for those (measured 2.4e-6). The old `LSE − s_ap` form missed by 9e-5 of it
            // at τ = 0.1 (97 of 256 entries) and had every entry's sign wrong at τ = 0.05.
            let along_own_row = Tolerance {
                rtol: 1e-4,
                atol_frac: 1e-5,
            };
            check_within(
                &format!("supcon confident N={n} D={d} τ={temperature}"),
                &loss,
                (&emb, [n, d], &labels),
                &|e, y| wgloss_ref::supcon(e, y, temperature.into(), 1.0),
                exact,
                along_own_row,
            );
        }
    }
}

/// The in-batch losses walk the keys in ranges of at most 8192 tile steps of 16 dimensions
/// (one dispatch each, lavapipe miscomputes longer walks): at D = 8200 a range holds 240 keys,
/// so N = 300 takes two ranges whose statistics and gradients are merged.
#[test]
fn in_batch_losses_merge_key_ranges() {
    if shared_gpu().is_none() {
        return;
    }
    let (n, d) = (300, 8200);
    let emb = embeddings(n, d, 21);
    let labels: Vec<i32> = (0..n).map(|i| (i * 13 % 20) as i32).collect();
    let shape = [n, d];
    check(
        "supcon ranges",
        &SupCon::default(),
        &emb,
        shape,
        &labels,
        |e, y| wgloss_ref::supcon(e, y, 0.1, 1.0),
    );
    check(
        "nt_xent ranges",
        &NtXent::default(),
        &emb,
        shape,
        &labels,
        |e, y| wgloss_ref::nt_xent_labels(e, y, 0.07, 1.0),
    );
    let contrastive = wgloss::ContrastiveBatch {
        pos_margin: 1.2,
        neg_margin: 1.45,
        ..Default::default()
    };
    check(
        "contrastive_batch ranges",
        &contrastive,
        &emb,
        shape,
        &labels,
        |e, y| wgloss_ref::contrastive_batch(e, y, 1.2, 1.45, 1.0),
    );
    // Triplets on a grid of 1/8: squared distances stay exact in f32 at this width, so the
    // mined triplets (the closest negative beyond d_ap) are those of the f64 reference.
    let emb: Vec<f32> = emb.iter().map(|x| (x * 8.0).round() / 8.0).collect();
    for mining in [
        wgloss_ref::TripletMining::BatchHard,
        wgloss_ref::TripletMining::SemiHard,
    ] {
        let loss: Box<dyn Loss> = match mining {
            wgloss_ref::TripletMining::BatchHard => Box::new(wgloss::TripletBatchHard::default()),
            wgloss_ref::TripletMining::SemiHard => Box::new(wgloss::TripletSemiHard::default()),
        };
        check(
            &format!("{mining:?} ranges"),
            &*loss,
            &emb,
            shape,
            &labels,
            |e, y| wgloss_ref::triplet_mined(e, y, 1.0, mining, false, 1.0),
        );
    }
}

/// N = 32,768 rows through the in-batch kernel (two key ranges per walk at D = 16; 4 MiB of
/// scratch, nothing N × N), against an f64 reference streamed row by row (the reference crate's
/// supcon holds N × N similarities): the loss, and the gradient rows of a few anchors. Minutes
/// on a CPU adapter, so not part of the default run:
/// `cargo test --release --test metric -- --ignored`.
#[test]
#[ignore]
fn supcon_runs_at_n_32768() {
    let Some(gpu) = shared_gpu() else { return };
    let (n, d, tau) = (32_768, 16, 0.1f64);
    let emb = embeddings(n, d, 32);
    let labels: Vec<i32> = (0..n).map(|i| (i * 7 % 4096) as i32).collect();
    let e = Tensor::from_slice(gpu, &emb, &[n, d]).unwrap();
    let y = Tensor::from_labels(gpu, &labels, &[n]).unwrap();
    let out = SupCon::default().compute(gpu, &e, &y).unwrap();
    let (loss, grad) = (
        out.loss.to_vec(gpu).unwrap()[0],
        out.grad.to_vec(gpu).unwrap(),
    );

    // x̂ and the per-anchor statistics, streamed: LSE over k ≠ a, the positives' count and sum.
    let norms: Vec<f64> = (0..n)
        .map(|i| {
            (0..d)
                .map(|c| f64::from(emb[i * d + c]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let xhat: Vec<f64> = (0..n * d)
        .map(|j| f64::from(emb[j]) / norms[j / d].max(1e-12))
        .collect();
    let s = |a: usize, k: usize| -> f64 {
        (0..d)
            .map(|c| xhat[a * d + c] * xhat[k * d + c])
            .sum::<f64>()
            / tau
    };
    let mut lse = vec![0.0; n];
    let mut positives = vec![0usize; n];
    let (mut total, mut anchors) = (0.0, 0usize);
    for a in 0..n {
        let row: Vec<f64> = (0..n)
            .map(|k| if k == a { f64::NEG_INFINITY } else { s(a, k) })
            .collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        lse[a] = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let pos: Vec<f64> = (0..n)
            .filter(|&k| k != a && labels[k] == labels[a])
            .map(|k| row[k])
            .collect();
        positives[a] = pos.len();
        if !pos.is_empty() {
            total += lse[a] - pos.iter().sum::<f64>() / pos.len() as f64;
            anchors += 1;
        }
    }
    let want = total / anchors as f64;
    assert!(
        (f64::from(loss) - want).abs() <= 1e-4 * want.abs(),
        "loss {loss} vs {want}"
    );
    // d loss / d s_ak, then the gradient rows of a few anchors through the normalisation.
    let w = 1.0 / anchors as f64;
    let coef = |a: usize, k: usize| -> f64 {
        if positives[a] == 0 || a == k {
            return 0.0;
        }
        let p = if labels[k] == labels[a] {
            1.0 / positives[a] as f64
        } else {
            0.0
        };
        w * ((s(a, k) - lse[a]).exp() - p)
    };
    for i in [0, 1, 4095, 16_384, 32_767] {
        let mut g = vec![0.0; d];
        for k in 0..n {
            let c = coef(i, k) + coef(k, i);
            for (j, gj) in g.iter_mut().enumerate() {
                *gj += c * xhat[k * d + j] / tau;
            }
        }
        let dot: f64 = (0..d).map(|j| g[j] * xhat[i * d + j]).sum();
        let want: Vec<f64> = (0..d)
            .map(|j| (g[j] - xhat[i * d + j] * dot) / norms[i])
            .collect();
        let largest = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for j in 0..d {
            let got = f64::from(grad[i * d + j]);
            assert!(
                (got - want[j]).abs() <= 1e-3 * largest,
                "row {i} dim {j}: {got} vs {}",
                want[j]
            );
        }
    }
}

/// The losses of several inputs (the tuple kernel's, info_nce, the GAN losses,
/// cycle_consistency) take 16-bit inputs through f32 copies: the loss is that of the f32
/// call on the rounded inputs, bit for bit, and each gradient its rounding to the inputs' type
/// (an odd element count, so that the last word holds padding); an f32 gradient for 16-bit
/// inputs is a dtype error.
#[test]
fn tuple_losses_take_16_bit_inputs_through_copies() {
    let Some(gpu) = shared_gpu() else { return };
    let (n, d) = (33, 7);
    let pm: Vec<i32> = (0..n as i32)
        .map(|i| if i % 3 == 0 { -1 } else { 1 })
        .collect();
    let losses: [(&dyn TupleLoss, Option<&[i32]>); 9] = [
        (&wgloss::Triplet::default(), None),
        (&wgloss::Contrastive::default(), Some(&pm)),
        (&wgloss::CosineEmbedding::default(), Some(&pm)),
        (&wgloss::GaussianKl::default(), None),
        (&wgloss::GradientPenalty::default(), None),
        (&wgloss::InfoNce::default(), None),
        (&wgloss::GanGenerator::default(), None),
        (&wgloss::GanDiscriminator::default(), None),
        (&wgloss::CycleConsistency::default(), None),
    ];
    for dtype in [DType::F16, DType::BF16] {
        for (j, (loss, labels)) in losses.iter().enumerate() {
            let k = loss.inputs().len();
            let values: Vec<Vec<f32>> = (0..k)
                .map(|i| {
                    let x = embeddings(n, d, (10 * j + i) as u64);
                    x.into_iter().map(|v| dtype.round(v)).collect()
                })
                .collect();
            let wide: Vec<Tensor> = values
                .iter()
                .map(|x| Tensor::from_slice(gpu, x, &[n, d]).unwrap())
                .collect();
            let narrow: Vec<Tensor> = values
                .iter()
                .map(|x| Tensor::from_slice_as(gpu, x, &[n, d], dtype).unwrap())
                .collect();
            let y = labels.map(|l| Tensor::from_labels(gpu, l, &[n]).unwrap());
            let want = loss
                .compute(gpu, &wide.iter().collect::<Vec<_>>(), y.as_ref())
                .unwrap();
            let views: Vec<&Tensor> = narrow.iter().collect();
            let got = loss.compute(gpu, &views, y.as_ref()).unwrap();
            let what = format!("{:?} {dtype:?}", loss.inputs());
            assert_like_f32_call(
                gpu,
                &what,
                (&got.loss, &got.grads.iter().collect::<Vec<_>>()),
                (&want.loss, &want.grads.iter().collect::<Vec<_>>()),
                dtype,
            );
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            let r = loss.encode(gpu, &mut encoder, &views, y.as_ref(), &want);
            assert!(
                matches!(r, Err(wgloss::Error::DTypeMismatch { .. })),
                "{what}: {r:?}"
            );
        }
    }
}

/// The margin heads take 16-bit embeddings and class weights through f32 copies: the loss of
/// the f32 call on the rounded inputs bit for bit, both gradients its rounded ones (AdaFace's
/// running statistics start alike in two instances).
#[test]
fn margin_heads_take_16_bit_inputs_through_copies() {
    let Some(gpu) = shared_gpu() else { return };
    let (n, d, classes) = (13, 9, 11);
    let labels: Vec<i32> = (0..n as i32).map(|i| i * 5 % classes as i32).collect();
    let y = Tensor::from_labels(gpu, &labels, &[n]).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let heads = || -> Vec<Box<dyn MarginHead>> {
            vec![
                Box::new(wgloss::CosFace::default()),
                Box::new(wgloss::ArcFace::default()),
                Box::new(wgloss::SphereFace::default()),
                Box::new(wgloss::AdaFace::new(gpu, Default::default()).unwrap()),
            ]
        };
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| dtype.round(x)).collect() };
        let emb = round(embeddings(n, d, 21));
        let weight = round(embeddings(classes, d, 22));
        for (h32, h16) in heads().iter().zip(heads()) {
            let want = h32
                .compute(
                    gpu,
                    &Tensor::from_slice(gpu, &emb, &[n, d]).unwrap(),
                    &Tensor::from_slice(gpu, &weight, &[classes, d]).unwrap(),
                    &y,
                )
                .unwrap();
            let got = h16
                .compute(
                    gpu,
                    &Tensor::from_slice_as(gpu, &emb, &[n, d], dtype).unwrap(),
                    &Tensor::from_slice_as(gpu, &weight, &[classes, d], dtype).unwrap(),
                    &y,
                )
                .unwrap();
            assert_like_f32_call(
                gpu,
                &format!("{dtype:?}"),
                (&got.out.loss, &[&got.out.grad, &got.grad_weight]),
                (&want.out.loss, &[&want.out.grad, &want.grad_weight]),
                dtype,
            );
        }
    }
}
