//! CTC (torch `F.ctc_loss`) on the GPU against the f64 reference `wgloss_ref::ctc`: padded and
//! concatenated targets, every reduction, zero_infinity, blanks other than 0, empty targets,
//! repeated labels, impossible alignments, short inputs, sequences long enough to be split into
//! chunks, extreme and non-finite log-probabilities, batches past one storage binding (run in
//! chunks of sequences, on a device requested with 1 MiB bindings), and the typed errors (labels
//! checked on the GPU, lengths on the host) with nothing written.

use wgloss::{Ctc, DType, Error, LossOutput, Reduction, Tensor};
use wgloss_suite::check::{
    assert_like_f32_call, assert_output, compare, to_f64, Rng, Tolerance, ELEMENTWISE, REDUCED,
};
use wgloss_suite::registry::IntoRef;
use wgloss_suite::{shared_gpu, small_binding_gpu};

const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Mean, Reduction::Sum];

/// Gradients over thousands of frames: each row of the recursions is kept relative to its
/// maximum, and after thousands of frames the states that matter can sit hundreds of nats below
/// it, where f32 resolves about 6e-5 (measured: 1.2e-4 relative at T = 16,384 and at S = 512).
const LONG: Tolerance = Tolerance {
    rtol: 5e-4,
    atol_frac: 1e-6,
};

/// Gradients of log-probabilities of ±1e4: alignments whose log-masses differ by multiples of
/// 1e4 are resolved to f32's 2^-9 ≈ 2e-3 at 2e4 (measured: 3.7e-3 relative).
const EXTREME: Tolerance = Tolerance {
    rtol: 1e-2,
    atol_frac: 1e-5,
};

/// `[T, N, C]` log-probabilities: `log_softmax` of logits uniform in [lo, hi), or the raw values.
fn log_probs(rng: &mut Rng, shape: [usize; 3], lo: f64, hi: f64, normalised: bool) -> Vec<f32> {
    let c = shape[2];
    let mut x = rng.uniform(shape.iter().product(), lo, hi);
    if normalised {
        for row in x.chunks_mut(c) {
            let m = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let lse = m + row
                .iter()
                .map(|&v| (f64::from(v) - m).exp())
                .sum::<f64>()
                .ln();
            for v in row {
                *v = (f64::from(*v) - lse) as f32;
            }
        }
    }
    x
}

/// A random target of `len` labels in [0, C) other than `blank`; with `repeats`, each label
/// copies its predecessor with probability 1/2.
fn target(rng: &mut Rng, len: usize, classes: usize, blank: usize, repeats: bool) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(len);
    for _ in 0..len {
        let copy = repeats && rng.unit() < 0.5;
        let label = match out.last() {
            Some(&prev) if copy => prev,
            _ => {
                let k = ((rng.unit() * (classes - 1) as f64) as usize).min(classes - 2);
                if k >= blank {
                    k + 1
                } else {
                    k
                }
            }
        };
        out.push(label);
    }
    out
}

/// The targets as a GPU tensor: padded `[N, max S + 2]` (padding holds labels that would be
/// rejected, so that it is seen to be ignored) or concatenated.
fn upload_targets(gpu: &wgloss::Gpu, targets: &[Vec<usize>], padded: bool) -> Tensor {
    if padded {
        let width = targets.iter().map(Vec::len).max().unwrap_or(0) + 2;
        let mut data = vec![-7i32; targets.len() * width];
        for (row, t) in data.chunks_mut(width).zip(targets) {
            for (d, &l) in row.iter_mut().zip(t) {
                *d = l as i32;
            }
        }
        Tensor::from_labels(gpu, &data, &[targets.len(), width]).unwrap()
    } else {
        let data: Vec<i32> = targets.iter().flatten().map(|&l| l as i32).collect();
        Tensor::from_labels(gpu, &data, &[data.len()]).unwrap()
    }
}

fn lengths(targets: &[Vec<usize>]) -> Vec<usize> {
    targets.iter().map(Vec::len).collect()
}

/// One case: the GPU result against the reference, loss and gradient.
struct Case<'a> {
    what: String,
    shape: [usize; 3],
    lp: &'a [f32],
    targets: &'a [Vec<usize>],
    input_lengths: &'a [usize],
    padded: bool,
    loss: Ctc,
}

impl Case<'_> {
    fn run(&self, gpu: &wgloss::Gpu) -> LossOutput {
        let x = Tensor::from_slice(gpu, self.lp, &self.shape).unwrap();
        let t = upload_targets(gpu, self.targets, self.padded);
        self.loss
            .compute(gpu, &x, &t, self.input_lengths, &lengths(self.targets))
            .unwrap_or_else(|e| panic!("{}: {e}", self.what))
    }

    fn reference(&self) -> wgloss_ref::LossGrad {
        wgloss_ref::ctc(
            to_f64(self.lp, &self.shape).view(),
            self.targets,
            self.input_lengths,
            self.loss.blank as usize,
            self.loss.reduction.into_ref(),
            self.loss.zero_infinity,
            f64::from(self.loss.grad_scale),
        )
    }

    fn check(&self, gpu: &wgloss::Gpu) {
        self.check_with(gpu, ELEMENTWISE);
    }

    fn check_with(&self, gpu: &wgloss::Gpu, grad_tolerance: Tolerance) {
        let out = self.run(gpu);
        let want = self.reference();
        let loss_tolerance = if want.loss.ndim() == 0 {
            REDUCED
        } else {
            ELEMENTWISE
        };
        assert_output(gpu, &self.what, &out, &want, loss_tolerance, grad_tolerance);
    }
}

#[test]
fn single_frame() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(1);
    let lp = log_probs(&mut rng, [1, 1, 2], -2.0, 2.0, true);
    for (targets, lens) in [
        (vec![vec![1]], vec![1]),
        (vec![vec![]], vec![1]),
        (vec![vec![1]], vec![0]),
        (vec![vec![]], vec![0]),
        (vec![vec![1, 1]], vec![1]),
    ] {
        for reduction in REDUCTIONS {
            for zero_infinity in [false, true] {
                Case {
                    what: format!("{targets:?} {lens:?} {reduction:?} zi {zero_infinity}"),
                    shape: [1, 1, 2],
                    lp: &lp,
                    targets: &targets,
                    input_lengths: &lens,
                    padded: true,
                    loss: Ctc {
                        reduction,
                        zero_infinity,
                        ..Default::default()
                    },
                }
                .check(gpu);
            }
        }
    }
}

#[test]
fn matches_reference_with_repeats() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(2);
    let shape = [50, 7, 5];
    for blank in [0usize, 3] {
        for normalised in [true, false] {
            let lp = log_probs(&mut rng, shape, -3.0, 1.0, normalised);
            // Lengths 0..=14 with repeats ([3, 3, 3] runs), a sample cut to 10 frames (possible
            // or not), one with no frames, the rest random.
            let mut targets: Vec<Vec<usize>> = (0..7)
                .map(|i| target(&mut rng, (i * 5) % 15, 5, blank, i % 2 == 0))
                .collect();
            targets[3] = vec![if blank == 3 { 1 } else { 3 }; 3];
            targets[5] = target(&mut rng, 9, 5, blank, true);
            let input_lengths = vec![50, 37, 50, 5, 0, 10, 49];
            for padded in [true, false] {
                for reduction in REDUCTIONS {
                    for zero_infinity in [false, true] {
                        Case {
                            what: format!(
                                "blank {blank} normalised {normalised} padded {padded} \
                                 {reduction:?} zi {zero_infinity}"
                            ),
                            shape,
                            lp: &lp,
                            targets: &targets,
                            input_lengths: &input_lengths,
                            padded,
                            loss: Ctc {
                                blank: blank as u32,
                                reduction,
                                zero_infinity,
                                grad_scale: 0.75,
                            },
                        }
                        .check(gpu);
                    }
                }
            }
        }
    }
}

#[test]
fn large_batch_matches_reference() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(3);
    let shape = [500, 32, 64];
    let lp = log_probs(&mut rng, shape, -4.0, 4.0, true);
    let targets: Vec<Vec<usize>> = (0..32)
        .map(|i| target(&mut rng, 100, 64, 0, i % 4 == 0))
        .collect();
    let input_lengths: Vec<usize> = (0..32).map(|i| 500 - 7 * i).collect();
    for (reduction, padded) in [(Reduction::Mean, true), (Reduction::None, false)] {
        let case = Case {
            what: format!("T500 N32 C64 S100 {reduction:?}"),
            shape,
            lp: &lp,
            targets: &targets,
            input_lengths: &input_lengths,
            padded,
            loss: Ctc {
                reduction,
                ..Default::default()
            },
        };
        case.check(gpu);
    }
}

#[test]
fn impossible_alignments_and_empty_targets() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(4);
    let shape = [6, 6, 4];
    let lp = log_probs(&mut rng, shape, -3.0, 1.0, true);
    // [1, 1] needs 3 frames and [1, 2, 3] needs 3: 2 frames make both impossible; [2, 2, 2]
    // needs 5 of 5; an empty target over 6, 3 and 0 frames; [3] over 0 frames.
    let targets = vec![
        vec![1, 1],
        vec![1, 2, 3],
        vec![2, 2, 2],
        vec![],
        vec![],
        vec![3],
    ];
    let input_lengths = [2, 2, 5, 6, 0, 0];
    for reduction in REDUCTIONS {
        for zero_infinity in [false, true] {
            let case = Case {
                what: format!("impossible {reduction:?} zi {zero_infinity}"),
                shape,
                lp: &lp,
                targets: &targets,
                input_lengths: &input_lengths,
                padded: false,
                loss: Ctc {
                    reduction,
                    zero_infinity,
                    ..Default::default()
                },
            };
            case.check(gpu);
            if reduction == Reduction::None {
                let out = case.run(gpu);
                let loss = out.loss.to_vec(gpu).unwrap();
                let inf = if zero_infinity { 0.0 } else { f32::INFINITY };
                assert_eq!(loss[0], inf);
                assert_eq!(loss[1], inf);
                assert!(loss[2].is_finite() && loss[2] > 0.0);
                assert_eq!(loss[4], 0.0);
                assert_eq!(loss[5], inf);
                // Samples 0, 1, 4 and 5 and every frame past an input length: gradient 0.
                let grad = out.grad.to_vec(gpu).unwrap();
                for (i, g) in grad.iter().enumerate() {
                    let (t, n) = (i / 24, (i / 4) % 6);
                    if [0, 1, 4, 5].contains(&n) || t >= input_lengths[n] {
                        assert_eq!(*g, 0.0, "t {t} n {n}");
                    }
                }
            }
        }
    }
}

#[test]
fn long_inputs_and_targets_run_in_chunks() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(5);
    // The longest input: several chunks forward and backward.
    let shape = [16_384, 2, 3];
    let lp = log_probs(&mut rng, shape, -2.0, 2.0, true);
    let targets = vec![vec![1, 2, 2, 1], vec![2, 2, 1]];
    Case {
        what: "T 16384".into(),
        shape,
        lp: &lp,
        targets: &targets,
        input_lengths: &[16_384, 9_001],
        padded: true,
        loss: Ctc {
            reduction: Reduction::None,
            ..Default::default()
        },
    }
    .check_with(gpu, LONG);
    // The longest target (512 labels, 1,025 states): a chunk of ~30 frames backward.
    let shape = [1_200, 3, 20];
    let lp = log_probs(&mut rng, shape, -2.0, 2.0, true);
    let targets = vec![
        target(&mut rng, 512, 20, 7, true),
        target(&mut rng, 300, 20, 7, false),
        target(&mut rng, 512, 20, 7, false),
    ];
    Case {
        what: "S 512".into(),
        shape,
        lp: &lp,
        targets: &targets,
        input_lengths: &[1_200, 1_000, 1_111],
        padded: false,
        loss: Ctc {
            blank: 7,
            reduction: Reduction::Sum,
            ..Default::default()
        },
    }
    .check_with(gpu, LONG);
}

#[test]
fn extreme_log_probs() {
    let Some(gpu) = shared_gpu() else { return };
    // Every entry −1e4: nll = 1e4·T − ln(number of alignments), exact in f32.
    let shape = [5, 1, 3];
    let lp = vec![-1e4f32; 15];
    let case = Case {
        what: "all -1e4".into(),
        shape,
        lp: &lp,
        targets: &[vec![1, 2]],
        input_lengths: &[5],
        padded: true,
        loss: Ctc {
            reduction: Reduction::Sum,
            ..Default::default()
        },
    };
    case.check(gpu);
    let loss = case.run(gpu).loss.to_vec(gpu).unwrap()[0];
    assert!((loss - 5e4).abs() < 5.0, "{loss}");

    // ±1e4 in a pattern, normalised and not, and −1e4 mixed into ordinary values.
    let mut rng = Rng::new(6);
    let shape = [12, 3, 4];
    let targets = vec![vec![1, 2, 3], vec![3, 3], vec![2]];
    let pattern: Vec<f32> = (0..144)
        .map(|i| if (i * 7) % 5 < 2 { 1e4 } else { -1e4 })
        .collect();
    let mut mixed = log_probs(&mut rng, shape, -3.0, 1.0, true);
    for (i, v) in mixed.iter_mut().enumerate() {
        let (t, c) = (i / 12, i % 4);
        if (t + c) % 3 == 0 {
            *v = -1e4;
        }
    }
    let mut normalised = pattern.clone();
    for row in normalised.chunks_mut(4) {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = f64::from(m)
            + row
                .iter()
                .map(|&v| (f64::from(v) - f64::from(m)).exp())
                .sum::<f64>()
                .ln();
        for v in row {
            *v = (f64::from(*v) - lse) as f32;
        }
    }
    for (what, lp) in [
        ("±1e4", &pattern),
        ("±1e4 normalised", &normalised),
        ("mixed -1e4", &mixed),
    ] {
        for reduction in REDUCTIONS {
            let case = Case {
                what: format!("{what} {reduction:?}"),
                shape,
                lp,
                targets: &targets,
                input_lengths: &[12, 12, 9],
                padded: false,
                loss: Ctc {
                    reduction,
                    ..Default::default()
                },
            };
            case.check_with(gpu, EXTREME);
            let out = case.run(gpu);
            assert!(out.loss.to_vec(gpu).unwrap().iter().all(|v| v.is_finite()));
            assert!(out.grad.to_vec(gpu).unwrap().iter().all(|v| v.is_finite()));
        }
    }

    // −∞ entries: alignments avoid them, and their gradient is 0.
    let mut lp = log_probs(&mut rng, [4, 2, 3], -2.0, 1.0, true);
    lp[1] = f32::NEG_INFINITY; // t 0, n 0, class 1
    lp[12] = f32::NEG_INFINITY; // t 2, n 0, blank
    lp[15] = f32::NEG_INFINITY; // t 2, n 1, blank
    lp[16] = f32::NEG_INFINITY; // t 2, n 1, class 1
    lp[17] = f32::NEG_INFINITY; // t 2, n 1, class 2
    let case = Case {
        what: "-inf entries".into(),
        shape: [4, 2, 3],
        lp: &lp,
        targets: &[vec![1], vec![1]],
        input_lengths: &[4, 4],
        padded: true,
        loss: Ctc {
            reduction: Reduction::None,
            ..Default::default()
        },
    };
    case.check(gpu);
    let out = case.run(gpu);
    let loss = out.loss.to_vec(gpu).unwrap();
    // Sample 1 has no finite class at frame 2: impossible.
    assert!(loss[0].is_finite());
    assert_eq!(loss[1], f32::INFINITY);
    let grad = out.grad.to_vec(gpu).unwrap();
    assert_eq!(grad[1], 0.0);
    assert_eq!(grad[12], 0.0);
    assert!(grad.iter().all(|g| g.is_finite()));
}

#[test]
fn nan_propagates() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(7);
    let shape = [8, 4, 5];
    let clean = log_probs(&mut rng, shape, -3.0, 1.0, true);
    let targets = vec![vec![1, 2], vec![3], vec![4, 4], vec![2]];
    let input_lengths = [8, 6, 8, 8];
    // A NaN at a label of sample 1's target inside its frames, a NaN at a class sample 2's
    // target does not use, +inf in sample 3; sample 0 stays clean.
    let mut lp = clean.clone();
    let at = |t: usize, n: usize, c: usize| (t * 4 + n) * 5 + c;
    lp[at(2, 1, 3)] = f32::NAN;
    lp[at(5, 2, 2)] = f32::NAN;
    lp[at(7, 3, 1)] = f32::INFINITY;
    // Past sample 1's input length: ignored.
    lp[at(7, 1, 3)] = f32::NAN;
    let want = wgloss_ref::ctc(
        to_f64(&clean, &shape).view(),
        &targets,
        &input_lengths,
        0,
        wgloss_ref::Reduction::None,
        false,
        1.0,
    );
    for reduction in REDUCTIONS {
        let case = Case {
            what: format!("nan {reduction:?}"),
            shape,
            lp: &lp,
            targets: &targets,
            input_lengths: &input_lengths,
            padded: true,
            loss: Ctc {
                reduction,
                ..Default::default()
            },
        };
        let out = case.run(gpu);
        let loss = out.loss.to_vec(gpu).unwrap();
        let grad = out.grad.to_vec(gpu).unwrap();
        if reduction == Reduction::None {
            assert!(
                loss[1].is_nan() && loss[2].is_nan() && loss[3].is_nan(),
                "{loss:?}"
            );
            let clean_loss = ndarray::arr1(&[want.loss[[0]]]).into_dyn();
            compare("clean sample", &loss[..1], clean_loss.view(), ELEMENTWISE).unwrap();
        } else {
            assert!(loss[0].is_nan(), "{loss:?}");
        }
        for (i, g) in grad.iter().enumerate() {
            let (t, n) = (i / 20, (i / 5) % 4);
            if n == 0 {
                let w = want.grad[[t, n, i % 5]];
                let w = if reduction == Reduction::Mean {
                    w / 8.0
                } else {
                    w
                };
                assert!(
                    (f64::from(*g) - w).abs() < 1e-5,
                    "t {t} c {}: {g} vs {w}",
                    i % 5
                );
            } else if t < input_lengths[n] {
                assert!(g.is_nan(), "t {t} n {n}: {g}");
            } else {
                assert_eq!(*g, 0.0, "t {t} n {n}");
            }
        }
    }
}

/// Outputs filled with 7.
fn sentinel_output(gpu: &wgloss::Gpu, shape: &[usize], loss_shape: &[usize]) -> LossOutput {
    let filled = |shape: &[usize]| {
        Tensor::from_slice(gpu, &vec![7.0; shape.iter().product()], shape).unwrap()
    };
    LossOutput {
        loss: filled(loss_shape),
        grad: filled(shape),
        status: Tensor::zeros_typed(gpu, &[1], DType::U32).unwrap(),
    }
}

fn untouched(gpu: &wgloss::Gpu, out: &LossOutput, what: &str) {
    for (name, t) in [("grad", &out.grad), ("loss", &out.loss)] {
        assert!(
            t.to_vec(gpu).unwrap().iter().all(|&v| v == 7.0),
            "{what}: {name} was written"
        );
    }
}

#[test]
fn bad_labels_are_reported_and_nothing_written() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(8);
    let shape = [6, 3, 4];
    let lp = log_probs(&mut rng, shape, -3.0, 1.0, true);
    let x = Tensor::from_slice(gpu, &lp, &shape).unwrap();
    // (targets, padded width or concatenated, first bad position, its label)
    let cases: Vec<(Vec<i32>, Option<usize>, usize, i32)> = vec![
        // Padded [3, 3]; lengths [2, 1, 3]: the padding (-1 at 2 and 4, 5) is ignored.
        (vec![1, 2, -1, 3, -1, -1, 1, 4, 2], Some(3), 7, 4),
        (vec![1, 2, -1, 0, -1, -1, 1, 2, 2], Some(3), 3, 0),
        (vec![1, -2, -1, 0, -1, -1, 9, 2, 2], Some(3), 1, -2),
        // Concatenated [6].
        (vec![1, 2, 3, 1, 2, 5], None, 5, 5),
        (vec![1, 2, 0, 1, 2, 0], None, 2, 0),
    ];
    let target_lengths = [2, 1, 3];
    for (labels, width, position, label) in cases {
        let t_shape = match width {
            Some(w) => vec![3, w],
            None => vec![labels.len()],
        };
        let t = Tensor::from_labels(gpu, &labels, &t_shape).unwrap();
        for reduction in REDUCTIONS {
            let loss = Ctc {
                reduction,
                ..Default::default()
            };
            let what = format!("{labels:?} {reduction:?}");
            let loss_shape = if reduction == Reduction::None {
                vec![3]
            } else {
                vec![]
            };
            let out = sentinel_output(gpu, &shape, &loss_shape);
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            loss.encode(gpu, &mut encoder, &x, &t, &[6, 6, 6], &target_lengths, &out)
                .unwrap();
            gpu.submit_and_wait(encoder).unwrap();
            assert_eq!(out.first_bad_label(gpu).unwrap(), Some(position), "{what}");
            untouched(gpu, &out, &what);
            match loss.compute(gpu, &x, &t, &[6, 6, 6], &target_lengths) {
                Err(Error::LabelOutOfRange {
                    position: p,
                    label: l,
                    classes: 4,
                }) if p == position && l == i64::from(label) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}

#[test]
fn bad_arguments_are_rejected_and_nothing_written() {
    let Some(gpu) = shared_gpu() else { return };
    let shape = [5, 2, 4];
    let x = Tensor::from_slice(gpu, &[-1.0; 40], &shape).unwrap();
    let padded = Tensor::from_labels(gpu, &[1, 2, 3, 1, 0, 0], &[2, 3]).unwrap();
    let concat = Tensor::from_labels(gpu, &[1, 2, 3, 1], &[4]).unwrap();
    let three_rows = Tensor::from_labels(gpu, &[1; 9], &[3, 3]).unwrap();
    let as_floats = Tensor::from_slice(gpu, &[1.0; 6], &[2, 3]).unwrap();
    let x_2d = Tensor::from_slice(gpu, &[-1.0; 40], &[10, 4]).unwrap();
    let out = sentinel_output(gpu, &shape, &[]);
    let out_none = sentinel_output(gpu, &shape, &[2]);
    let wrong_grad = sentinel_output(gpu, &[5, 2, 5], &[]);
    let wrong_loss = sentinel_output(gpu, &shape, &[3]);
    let too_long = Tensor::from_slice(gpu, &vec![-1.0; 16_385 * 2], &[16_385, 1, 2]).unwrap();
    let long_target = Tensor::from_labels(gpu, &[1; 513], &[513]).unwrap();
    let long_out = sentinel_output(gpu, &[16_385, 1, 2], &[]);
    let default = Ctc::default();
    type Outcome = (&'static str, wgloss::Result<()>, &'static str);
    let run = |loss: Ctc,
               x: &Tensor,
               t: &Tensor,
               il: &[usize],
               tl: &[usize],
               out: &LossOutput|
     -> wgloss::Result<()> {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let r = loss.encode(gpu, &mut encoder, x, t, il, tl, out);
        gpu.submit_and_wait(encoder).unwrap();
        r
    };
    let cases: Vec<Outcome> = vec![
        (
            "input_lengths count",
            run(default, &x, &padded, &[5], &[3, 1], &out),
            "input_lengths",
        ),
        (
            "target_lengths count",
            run(default, &x, &padded, &[5, 5], &[3, 1, 0], &out),
            "target_lengths",
        ),
        (
            "input length above T",
            run(default, &x, &padded, &[5, 6], &[3, 1], &out),
            "input_lengths",
        ),
        (
            "target length above the padding",
            run(default, &x, &padded, &[5, 5], &[4, 1], &out),
            "target_lengths",
        ),
        (
            "concatenated lengths",
            run(default, &x, &concat, &[5, 5], &[3, 2], &out),
            "targets",
        ),
        (
            "padded rows",
            run(default, &x, &three_rows, &[5, 5], &[3, 1], &out),
            "targets",
        ),
        (
            "targets dtype",
            run(default, &x, &as_floats, &[5, 5], &[3, 1], &out),
            "targets",
        ),
        (
            "log_probs rank",
            run(default, &x_2d, &padded, &[5, 5], &[3, 1], &out),
            "log_probs",
        ),
        (
            "blank",
            run(
                Ctc {
                    blank: 4,
                    ..default
                },
                &x,
                &padded,
                &[5, 5],
                &[3, 1],
                &out,
            ),
            "blank",
        ),
        (
            "grad_scale",
            run(
                Ctc {
                    grad_scale: f32::NAN,
                    ..default
                },
                &x,
                &padded,
                &[5, 5],
                &[3, 1],
                &out,
            ),
            "grad_scale",
        ),
        (
            "grad shape",
            run(default, &x, &padded, &[5, 5], &[3, 1], &wrong_grad),
            "grad",
        ),
        (
            "loss shape under none",
            run(
                Ctc {
                    reduction: Reduction::None,
                    ..default
                },
                &x,
                &padded,
                &[5, 5],
                &[3, 1],
                &wrong_loss,
            ),
            "loss",
        ),
        (
            "loss shape under mean",
            run(default, &x, &padded, &[5, 5], &[3, 1], &out_none),
            "loss",
        ),
        (
            "more than 16,384 frames",
            run(default, &too_long, &concat, &[16_385], &[4], &long_out),
            "log_probs",
        ),
        (
            "more than 512 labels",
            run(default, &x, &long_target, &[5, 5], &[513, 0], &out),
            "target_lengths",
        ),
    ];
    for (what, result, name) in cases {
        let got = match &result {
            Err(Error::InvalidParameter { name, .. })
            | Err(Error::ShapeMismatch { name, .. })
            | Err(Error::InvalidShape { name, .. })
            | Err(Error::DTypeMismatch { name, .. }) => *name,
            other => panic!("{what}: {other:?}"),
        };
        assert_eq!(got, name, "{what}: {result:?}");
    }
    for (o, what) in [
        (&out, "out"),
        (&out_none, "out_none"),
        (&wrong_grad, "wrong_grad"),
        (&wrong_loss, "wrong_loss"),
    ] {
        untouched(gpu, o, what);
    }
}

#[test]
fn empty_batch_and_empty_inputs() {
    let Some(gpu) = shared_gpu() else { return };
    let empty_lp = Tensor::from_slice(gpu, &[], &[7, 0, 3]).unwrap();
    let no_labels = Tensor::from_labels(gpu, &[], &[0]).unwrap();
    let no_rows = Tensor::from_labels(gpu, &[], &[0, 4]).unwrap();
    for reduction in REDUCTIONS {
        for t in [&no_labels, &no_rows] {
            let out = Ctc {
                reduction,
                ..Default::default()
            }
            .compute(gpu, &empty_lp, t, &[], &[])
            .unwrap();
            let loss = out.loss.to_vec(gpu).unwrap();
            match reduction {
                Reduction::None => assert!(loss.is_empty()),
                _ => assert_eq!(loss, vec![0.0]),
            }
            assert!(out.grad.is_empty());
        }
    }
    // No frames at all: 0 for an empty target, +inf otherwise.
    let no_frames = Tensor::from_slice(gpu, &[], &[0, 2, 3]).unwrap();
    let targets = Tensor::from_labels(gpu, &[2], &[1]).unwrap();
    let out = Ctc {
        reduction: Reduction::None,
        ..Default::default()
    }
    .compute(gpu, &no_frames, &targets, &[0, 0], &[0, 1])
    .unwrap();
    assert_eq!(out.loss.to_vec(gpu).unwrap(), vec![0.0, f32::INFINITY]);
    let out = Ctc {
        reduction: Reduction::Sum,
        zero_infinity: true,
        ..Default::default()
    }
    .compute(gpu, &no_frames, &targets, &[0, 0], &[0, 1])
    .unwrap();
    assert_eq!(out.loss.to_vec(gpu).unwrap(), vec![0.0]);
}

/// Targets of lengths 0..=10 (with repeats) and input lengths over [0, T], some too short.
fn chunked_batch(
    rng: &mut Rng,
    [frames, n, classes]: [usize; 3],
    blank: usize,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let targets: Vec<Vec<usize>> = (0..n)
        .map(|i| target(rng, (i * 7) % 11, classes, blank, i % 3 == 0))
        .collect();
    let input_lengths = (0..n)
        .map(|i| match i % 9 {
            0 => frames,
            1 => 0,
            2 => 3,
            _ => ((rng.unit() * (frames + 1) as f64) as usize).min(frames),
        })
        .collect();
    (targets, input_lengths)
}

#[test]
fn batch_past_one_binding_runs_in_chunks() {
    let Some(gpu) = small_binding_gpu() else {
        return;
    };
    let max_words = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
    let mut rng = Rng::new(11);
    let shape = [50, 300, 40];
    assert!(
        shape.iter().product::<usize>() > 2 * max_words,
        "three chunks or more"
    );
    let lp = log_probs(&mut rng, shape, -3.0, 1.0, true);
    let (targets, input_lengths) = chunked_batch(&mut rng, shape, 0);
    for padded in [true, false] {
        for reduction in REDUCTIONS {
            for zero_infinity in [false, true] {
                Case {
                    what: format!("chunks padded {padded} {reduction:?} zi {zero_infinity}"),
                    shape,
                    lp: &lp,
                    targets: &targets,
                    input_lengths: &input_lengths,
                    padded,
                    loss: Ctc {
                        reduction,
                        zero_infinity,
                        grad_scale: 0.5,
                        ..Default::default()
                    },
                }
                .check(gpu);
            }
        }
    }
}

#[test]
fn chunks_of_odd_shapes_and_non_finite_inputs() {
    let Some(gpu) = small_binding_gpu() else {
        return;
    };
    let mut rng = Rng::new(12);
    // A frame of the whole batch ([N, C]) past one binding: one window of the gradient per
    // frame.
    for shape in [[3, 7000, 41], [20, 333, 77]] {
        let [frames, n, c] = shape;
        let mut lp = log_probs(&mut rng, shape, -3.0, 1.0, true);
        lp[(n + 17) * c] = f32::NEG_INFINITY;
        let (targets, input_lengths) = chunked_batch(&mut rng, shape, 3);
        for reduction in REDUCTIONS {
            Case {
                what: format!("{shape:?} {reduction:?}"),
                shape,
                lp: &lp,
                targets: &targets,
                input_lengths: &input_lengths,
                padded: false,
                loss: Ctc {
                    reduction,
                    blank: 3,
                    zero_infinity: true,
                    ..Default::default()
                },
            }
            .check(gpu);
        }
        // NaN and +inf in samples of the first and last chunks: those samples (and the reduced
        // loss) are NaN over their first T_n frames, every other value is unchanged.
        let case = |lp: &[f32], reduction| {
            Case {
                what: format!("{shape:?} non-finite"),
                shape,
                lp,
                targets: &targets,
                input_lengths: &input_lengths,
                padded: true,
                loss: Ctc {
                    reduction,
                    blank: 3,
                    ..Default::default()
                },
            }
            .run(gpu)
        };
        let clean = case(&lp, Reduction::None);
        let (clean_loss, clean_grad) = (
            clean.loss.to_vec(gpu).unwrap(),
            clean.grad.to_vec(gpu).unwrap(),
        );
        let poisoned = [
            (0, 9, 5, f32::NAN),
            (frames - 1, (n - 1) / 9 * 9, 1, f32::INFINITY),
        ];
        let mut dirty = lp.clone();
        for &(t, i, k, v) in &poisoned {
            assert!(t < input_lengths[i], "poison inside the input");
            dirty[(t * n + i) * c + k] = v;
        }
        let out = case(&dirty, Reduction::None);
        let (loss, grad) = (out.loss.to_vec(gpu).unwrap(), out.grad.to_vec(gpu).unwrap());
        let bad = |i: usize| poisoned.iter().any(|p| p.1 == i);
        for i in 0..n {
            if bad(i) {
                assert!(loss[i].is_nan(), "sample {i}: {}", loss[i]);
            } else {
                assert_eq!(loss[i].to_bits(), clean_loss[i].to_bits(), "sample {i}");
            }
        }
        for (at, (&g, &want)) in grad.iter().zip(&clean_grad).enumerate() {
            let (t, i) = (at / c / n, at / c % n);
            if bad(i) && t < input_lengths[i] {
                assert!(g.is_nan(), "t {t} n {i}: {g}");
            } else {
                assert_eq!(g.to_bits(), want.to_bits(), "t {t} n {i}");
            }
        }
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let out = case(&dirty, reduction);
            assert!(out.loss.to_vec(gpu).unwrap()[0].is_nan(), "{reduction:?}");
        }
    }
}

#[test]
fn bad_label_in_the_last_chunk_is_reported_and_nothing_written() {
    let Some(gpu) = small_binding_gpu() else {
        return;
    };
    let mut rng = Rng::new(13);
    let shape = [50, 300, 40];
    let lp = log_probs(&mut rng, shape, -3.0, 1.0, true);
    let x = Tensor::from_slice(gpu, &lp, &shape).unwrap();
    let (targets, input_lengths) = chunked_batch(&mut rng, shape, 0);
    let target_lengths = lengths(&targets);
    let width = target_lengths.iter().copied().max().unwrap();
    let starts: Vec<usize> = target_lengths
        .iter()
        .scan(0, |at, &len| {
            let first = *at;
            *at += len;
            Some(first)
        })
        .collect();
    // (sequence, label index, label): the first position reported is the smallest.
    let cases: [&[(usize, usize, i32)]; 3] = [
        &[(298, 3, 40)],
        &[(299, 0, 0), (298, 5, -1)],
        &[(296, 2, 0), (2, 1, 99)],
    ];
    for padded in [true, false] {
        for bad in cases {
            let mut data: Vec<i32> = if padded {
                let mut data = vec![-7; shape[1] * width];
                for (row, t) in data.chunks_mut(width).zip(&targets) {
                    for (d, &l) in row.iter_mut().zip(t) {
                        *d = l as i32;
                    }
                }
                data
            } else {
                targets.iter().flatten().map(|&l| l as i32).collect()
            };
            let position = |n: usize, j: usize| {
                assert!(j < target_lengths[n]);
                if padded {
                    n * width + j
                } else {
                    starts[n] + j
                }
            };
            for &(n, j, label) in bad {
                data[position(n, j)] = label;
            }
            let (want, label) = bad
                .iter()
                .map(|&(n, j, label)| (position(n, j), label))
                .min()
                .unwrap();
            let t_shape = if padded {
                vec![shape[1], width]
            } else {
                vec![data.len()]
            };
            let t = Tensor::from_labels(gpu, &data, &t_shape).unwrap();
            for reduction in REDUCTIONS {
                let loss = Ctc {
                    reduction,
                    ..Default::default()
                };
                let what = format!("padded {padded} {bad:?} {reduction:?}");
                let loss_shape = if reduction == Reduction::None {
                    vec![shape[1]]
                } else {
                    vec![]
                };
                let out = sentinel_output(gpu, &shape, &loss_shape);
                let mut encoder = gpu.device().create_command_encoder(&Default::default());
                loss.encode(
                    gpu,
                    &mut encoder,
                    &x,
                    &t,
                    &input_lengths,
                    &target_lengths,
                    &out,
                )
                .unwrap();
                gpu.submit_and_wait(encoder).unwrap();
                assert_eq!(out.first_bad_label(gpu).unwrap(), Some(want), "{what}");
                untouched(gpu, &out, &what);
                match loss.compute(gpu, &x, &t, &input_lengths, &target_lengths) {
                    Err(Error::LabelOutOfRange {
                        position: p,
                        label: l,
                        classes: 40,
                    }) if p == want && l == i64::from(label) => {}
                    other => panic!("{what}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn sequence_past_one_binding_is_a_typed_error() {
    let Some(gpu) = small_binding_gpu() else {
        return;
    };
    let max_words = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
    // One sequence's frames alone exceed a binding.
    let shape = [max_words / 64 + 1, 2, 64];
    let x = Tensor::zeros(gpu, &shape).unwrap();
    let t = Tensor::from_labels(gpu, &[1, 2], &[2, 1]).unwrap();
    let out = sentinel_output(gpu, &shape, &[]);
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let r = Ctc::default().encode(gpu, &mut encoder, &x, &t, &[shape[0]; 2], &[1, 1], &out);
    gpu.submit_and_wait(encoder).unwrap();
    assert!(matches!(r, Err(Error::InvalidShape { .. })), "{r:?}");
    untouched(gpu, &out, "one sequence past a binding");
}

/// 16-bit log-probabilities go through an f32 copy: the loss is the f32 call's on the rounded
/// values, bit for bit, and the gradient its rounding to their type; an f32 gradient for them is
/// a dtype error.
#[test]
fn half_log_probs_match_the_f32_call() {
    let Some(gpu) = shared_gpu() else { return };
    let mut rng = Rng::new(12);
    let shape = [21, 5, 7];
    let targets: Vec<Vec<usize>> = (0..5)
        .map(|i| target(&mut rng, 2 + i, 7, 0, i % 2 == 0))
        .collect();
    let input_lengths = vec![21, 20, 17, 21, 12];
    let target_lengths = lengths(&targets);
    let t = upload_targets(gpu, &targets, true);
    for dtype in [DType::F16, DType::BF16] {
        let lp: Vec<f32> = log_probs(&mut rng, shape, -3.0, 1.0, true)
            .into_iter()
            .map(|x| dtype.round(x))
            .collect();
        let loss = Ctc::default();
        let x32 = Tensor::from_slice(gpu, &lp, &shape).unwrap();
        let x16 = Tensor::from_slice_as(gpu, &lp, &shape, dtype).unwrap();
        let want = loss
            .compute(gpu, &x32, &t, &input_lengths, &target_lengths)
            .unwrap();
        let got = loss
            .compute(gpu, &x16, &t, &input_lengths, &target_lengths)
            .unwrap();
        assert_like_f32_call(
            gpu,
            &format!("{dtype:?}"),
            (&got.loss, &[&got.grad]),
            (&want.loss, &[&want.grad]),
            dtype,
        );
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let r = loss.encode(
            gpu,
            &mut encoder,
            &x16,
            &t,
            &input_lengths,
            &target_lengths,
            &want,
        );
        assert!(
            matches!(r, Err(Error::DTypeMismatch { name: "grad", .. })),
            "{r:?}"
        );
    }
}
