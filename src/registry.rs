//! One list of every implemented loss: its family, anchor, parameter variants and how to build
//! both the GPU loss and its f64 reference. Adding a loss adds one entry here.

use ndarray::{ArrayD, ArrayViewD};
use wgloss::{DType, Gpu, Loss, Reduction, Tensor};
use wgloss_ref::{LossGrad, TripletMining};

use crate::check::Rng;
use crate::stacked;

/// Whether a loss term (prediction, target) lies on a kink of the loss.
pub type Kink = fn(&[f32], &[f32]) -> bool;
type RefFn = Box<dyn FnMut(ArrayViewD<'_, f64>, ArrayViewD<'_, f64>) -> LossGrad>;
/// The reference as a function of `pred` alone, with target and any state frozen.
pub type Frozen = Box<dyn Fn(ArrayViewD<'_, f64>) -> LossGrad>;
type FreezeFn = Box<dyn Fn(&ArrayD<f64>, &ArrayD<f64>) -> Frozen>;

/// A GPU loss and its reference, built for one variant and reduction. Stateful losses keep
/// their state in both, and each call advances both.
pub struct Instance {
    /// The GPU loss.
    pub loss: Box<dyn Loss>,
    /// The reference, advancing its own state exactly as the GPU loss does.
    pub reference: RefFn,
    /// For finite differences: the reference at (pred0, target) as a function of pred, with any
    /// state-derived parameter (β) held at its value for pred0, as the anchors treat it.
    pub freeze: FreezeFn,
    /// The gradient multiplier in use.
    pub grad_scale: f64,
    /// Whether each call advances a state on the GPU (the suite then checks consecutive calls).
    pub stateful: bool,
}

/// A hyperparameter value the loss must reject, and the parameter name the error must carry.
pub struct BadParam {
    pub param: &'static str,
    /// Builds the loss with the bad value: the error may come from construction or from the call.
    pub build: fn(&Gpu) -> wgloss::Result<Box<dyn Loss>>,
}

/// One registered loss.
pub struct Entry {
    /// The loss's name in every layer: shader file, module, reference function, bench id.
    pub name: &'static str,
    /// Catalogue family ("F1 regression").
    pub family: &'static str,
    /// The implementation whose semantics it follows.
    pub anchor: &'static str,
    /// Labels of the parameter variants; variant 0 is the default configuration.
    pub variants: &'static [&'static str],
    /// Reductions the loss offers.
    pub reductions: &'static [Reduction],
    /// Range test predictions (and uniform targets) are drawn from.
    pub domain: (f64, f64),
    /// How test targets are drawn.
    pub targets: Targets,
    /// Whether inputs of ±1e4 must give finite loss and gradients (false where the math itself
    /// overflows, as e^{1e4} does).
    pub extreme_finite: bool,
    /// Tolerance of the gradient against the reference.
    pub tolerance: crate::check::Tolerance,
    /// Tolerance of the gradient against the reference for inputs of ±1e4.
    pub extreme_tolerance: crate::check::Tolerance,
    /// How inputs are laid out.
    pub layout: Layout,
    /// Where the loss's derivative jumps (prediction, target): test inputs are moved off these
    /// points, where f32 and f64 may legitimately take different branches.
    /// Evaluated per loss term: an element, or a box (its four predicted and target values).
    pub jump: Option<Kink>,
    /// Moves every generated prediction onto a few values (losses that sort their inputs: ties
    /// are then exact, and sort the same in f32 and f64, instead of near ties that may not).
    pub snap: Option<fn(f32) -> f32>,
    /// Whether the loss has a four-elements-per-step path (`Gpu::vec4` changes its kernel);
    /// without one, the suite runs it at one width only.
    pub vec4: bool,
    /// Whether the loss takes F16 and BF16 inputs in the registry's form (and gives a gradient of
    /// their type); the others must reject them. The stacked forms (`stacked.rs`) take f32
    /// only: the 16-bit inputs of the tuple losses, the margin heads and Sinkhorn are tested on
    /// their own APIs (tests/metric.rs, tests/generative.rs).
    pub half: bool,
    /// Whether those 16-bit inputs go through f32 copies of them (the losses whose kernels read
    /// f32 arrays): the bench leaves out their 16-bit rows, which would time the f32 call plus
    /// the conversions.
    pub half_copies: bool,
    /// The variant run past the dispatch and binding limits: 0 (the default configuration)
    /// unless that one is too slow there on a software adapter (Lovász-softmax over the whole
    /// batch sorts 8M-pixel groups; per image, the same split paths run on short groups).
    pub limits_variant: usize,
    /// Prediction shapes benchmarked besides the 1M and 16M element runs.
    pub bench_shapes: &'static [&'static [usize]],
    /// Whether an empty input is accepted (loss 0 under mean).
    pub allows_empty: bool,
    /// Builds variant `variant` with `reduction`.
    pub make: fn(&Gpu, usize, Reduction) -> wgloss::Result<Instance>,
    /// Hyperparameters that must be rejected.
    pub bad_params: &'static [BadParam],
}

/// How test targets are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Uniform in the entry's domain, like the predictions.
    Uniform,
    /// Probabilities, uniform in [0, 1].
    Probability,
    /// Labels 0 or 1.
    Binary,
    /// Labels −1 or +1.
    Sign,
    /// Positive scales per row, uniform in [0.25, 2] (noise levels σ), as f32 values.
    Scale,
    /// Boxes `[N, 4]`, `(x1, y1, x2, y2)` with positive coordinates (so that, read as
    /// `(cx, cy, w, h)`, they are valid boxes too); predictions overlap their targets in three
    /// pairs out of four.
    Boxes,
}

/// How a loss's inputs are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Prediction and target of one shape `[n / row, row]` (`[n]` when `row` is 1).
    Elementwise { row: usize },
    /// Logits `[N, classes, inner]` (`[N, classes]` when `inner` is 1) and labels `[N, inner]`;
    /// with `ignores`, one row in eight is labelled with the ignore index.
    Classes {
        classes: usize,
        inner: usize,
        ignores: bool,
    },
    /// Images `[N, channels, height, width]`, prediction and target alike.
    Images {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// Embeddings `[N, dim]` and labels `[N]` drawn from `max(classes, ⌈N / members⌉)` values
    /// (`members` bounds the expected class size as the batch grows, as P×K sampling does).
    /// Losses over all pairs of the batch: their cost grows as N², so the suite runs them on
    /// the (N, D) grid [`EMBEDDING_SHAPES`] instead of the element counts of the other layouts.
    Embeddings {
        dim: usize,
        classes: usize,
        members: usize,
    },
    /// A margin head's embeddings `[N, dim]` stacked over its class weights `[classes, dim]`
    /// (one prediction `[N + classes, dim]`, see [`stacked::Stacked`]) and labels `[N]` in
    /// `[0, classes)`. Shapes are given as `[N, dim, classes]`; the suite runs the (N, D) grid
    /// [`EMBEDDING_SHAPES`].
    Heads { dim: usize, classes: usize },
    /// Two weighted point clouds `[N, dim]` stacked as one prediction `[2N, dim]` (see
    /// [`stacked::StackedClouds`]; coordinates drawn in the domain over √dim, so that the
    /// diameter does not grow with the dimension) and their weights stacked alike, `[2N]` f32:
    /// uniform draws, one point in five of weight 0, each cloud's weights summing to 1. Shapes are given as
    /// `[N, dim]`; costs grow as N², so the suite runs the (N, D) grid [`EMBEDDING_SHAPES`].
    Clouds { dim: usize },
    /// CTC: log-probabilities `[frames, N, classes]` and padded label sequences `[N, labels]`
    /// (i32, labels in [1, classes − 1), so that blank 0 and blank `classes − 1` are both
    /// valid; repeats are frequent), with the lengths [`stacked::ctc_lengths`] implies. A shape
    /// `[T, N, C, S]` overrides frames and labels.
    Sequences {
        classes: usize,
        frames: usize,
        labels: usize,
    },
    /// `inputs` tensors `[N, dim]` whose row i forms one tuple (a pair, a triplet), stacked as
    /// one prediction `[inputs·N, dim]` (see [`stacked::StackedTuple`]), and one label per row
    /// (`[N]`, i32, drawn as `targets` says; not read where `target` is false). Sizes count the
    /// elements of one input.
    Tuples {
        dim: usize,
        inputs: usize,
        target: bool,
        /// Losses over all pairs of the batch (info_nce): the (N, D) grid [`EMBEDDING_SHAPES`]
        /// and typed errors past the limits, as [`Layout::Embeddings`].
        all_pairs: bool,
    },
}

/// Batch shapes `[N, D]` the suite runs the in-batch losses at: N ∈ {2, 3, 257, 4096} and
/// D ∈ {1, 3, 128, 256}, not all of the product (N = 4096 at D = 256 costs 4·10⁹ multiply-adds
/// per pass on a software adapter).
pub const EMBEDDING_SHAPES: &[[usize; 2]] = &[[2, 1], [3, 3], [257, 128], [257, 256], [4096, 3]];

/// Seeded test inputs: predictions and targets with their shapes. Labels are held as f32
/// values (exact) and uploaded as i32.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub pred_shape: Vec<usize>,
    pub pred: Vec<f32>,
    pub target_shape: Vec<usize>,
    pub target: Vec<f32>,
    pub labels: bool,
    /// With `labels`: the per-row target holds f32 values (noise levels) rather than class
    /// labels; the losses are per row all the same.
    pub values: bool,
    /// Prediction elements per loss term (4 for boxes, else 1).
    pub group: usize,
    /// Log-probabilities `[T, N, C]` and padded label sequences `[N, S]` (CTC): one loss per
    /// sequence under reduction none.
    pub sequences: bool,
}

impl Inputs {
    /// Minimal bytes a fused forward+backward moves: both inputs read once, the gradient
    /// written once.
    pub fn bytes(&self) -> f64 {
        4.0 * (2 * self.pred.len() + self.target.len()) as f64
    }

    /// Uploads prediction and target.
    pub fn upload(&self, gpu: &Gpu) -> wgloss::Result<(Tensor, Tensor)> {
        let pred = Tensor::from_slice(gpu, &self.pred, &self.pred_shape)?;
        let target = if self.labels && !self.values {
            let labels: Vec<i32> = self.target.iter().map(|&x| x as i32).collect();
            Tensor::from_labels(gpu, &labels, &self.target_shape)?
        } else {
            Tensor::from_slice(gpu, &self.target, &self.target_shape)?
        };
        Ok((pred, target))
    }

    /// The target's element type.
    pub fn target_dtype(&self) -> DType {
        if self.labels && !self.values {
            DType::I32
        } else {
            DType::F32
        }
    }

    /// Shape of the loss output under `reduction`.
    pub fn loss_shape(&self, reduction: Reduction) -> Vec<usize> {
        match reduction {
            Reduction::Mean | Reduction::Sum => Vec::new(),
            Reduction::None if self.sequences => self.target_shape[..1].to_vec(),
            Reduction::None if self.labels => self.target_shape.clone(),
            Reduction::None if self.group > 1 => self.pred_shape[..1].to_vec(),
            Reduction::None => self.pred_shape.clone(),
        }
    }

    /// Index, in the loss under reduction none, of the loss that prediction element `i` feeds.
    pub fn loss_index(&self, i: usize) -> usize {
        if self.sequences {
            (i / self.pred_shape[2]) % self.pred_shape[1]
        } else if self.labels {
            let inner: usize = self.pred_shape[2..].iter().product();
            (i / (self.pred_shape[1] * inner)) * inner + i % inner
        } else {
            i / self.group
        }
    }
}

impl Layout {
    /// Whether the loss's cost grows as N² (all pairs of a batch, a batch against its classes,
    /// two point clouds): the suite then runs the (N, D) grid [`EMBEDDING_SHAPES`] and the
    /// benchmarks the entry's own shapes only.
    pub fn on_grid(&self) -> bool {
        matches!(
            self,
            Layout::Embeddings { .. }
                | Layout::Heads { .. }
                | Layout::Clouds { .. }
                | Layout::Tuples {
                    all_pairs: true,
                    ..
                }
        )
    }
}

impl Entry {
    /// The prediction shape of about `n` elements (whole rows or samples) this loss accepts.
    pub fn shape(&self, n: usize) -> Vec<usize> {
        match self.layout {
            Layout::Elementwise { row: 1 } => vec![n],
            Layout::Elementwise { row } => vec![n.div_ceil(row), row],
            Layout::Classes {
                classes, inner: 1, ..
            } => vec![n.div_ceil(classes), classes],
            Layout::Classes { classes, inner, .. } => {
                vec![n.div_ceil(classes * inner), classes, inner]
            }
            Layout::Embeddings { dim, .. } => vec![n.div_ceil(dim), dim],
            Layout::Heads { dim, classes } => vec![n.div_ceil(dim), dim, classes],
            Layout::Tuples { dim, .. } | Layout::Clouds { dim } => vec![n.div_ceil(dim), dim],
            Layout::Sequences {
                classes, frames, ..
            } => vec![frames, n.div_ceil(frames * classes), classes],
            Layout::Images {
                channels,
                height,
                width,
            } => vec![
                n.div_ceil(channels * height * width),
                channels,
                height,
                width,
            ],
        }
    }

    /// Seeded test inputs of about `n` prediction elements.
    pub fn inputs(&self, n: usize, seed: u64) -> Inputs {
        self.inputs_shaped(&self.shape(n), seed)
    }

    /// Seeded test inputs for a prediction of `pred_shape` (of this entry's layout).
    pub fn inputs_shaped(&self, pred_shape: &[usize], seed: u64) -> Inputs {
        let mut pred_shape = pred_shape.to_vec();
        let mut labels = 0;
        if let Layout::Sequences { labels: s, .. } = self.layout {
            labels = pred_shape.get(3).copied().unwrap_or(s);
            pred_shape.truncate(3);
        }
        // Prediction elements: stacked inputs for the layouts of several inputs.
        let len = match self.layout {
            Layout::Heads { .. } => (pred_shape[0] + pred_shape[2]) * pred_shape[1],
            Layout::Tuples { inputs, .. } => inputs * pred_shape[0] * pred_shape[1],
            Layout::Clouds { .. } => 2 * pred_shape[0] * pred_shape[1],
            _ => pred_shape.iter().product(),
        };
        let mut rng = Rng::new(seed);
        let (lo, hi) = self.domain;
        let mut pred = rng.uniform(len, lo, hi);
        if let Some(snap) = self.snap {
            pred.iter_mut().for_each(|x| *x = snap(*x));
        }
        if let Layout::Classes {
            classes, ignores, ..
        } = self.layout
        {
            // Logits on a grid of 1/64 offset by class: two logits of a row then differ by at
            // least 1/(128 C) from any multiple of 1/64, so margins such as 1 or 0.5 never fall
            // within rounding of a hinge's kink.
            let inner: usize = pred_shape[2..].iter().product();
            let pred: Vec<f32> = pred
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let class = (i / inner) % classes;
                    match self.snap {
                        Some(_) => x,
                        None => (x * 64.0).round() / 64.0 + class as f32 / (128 * classes) as f32,
                    }
                })
                .collect();
            let mut target_shape = pred_shape.clone();
            target_shape.remove(1);
            let rows = target_shape.iter().product();
            let ignored = if ignores { 0.125 } else { 0.0 };
            let target = rng
                .uniform(rows, 0.0, 1.0)
                .iter()
                .map(|&u| {
                    if u < ignored {
                        IGNORE as f32
                    } else {
                        ((u - ignored) / (1.0 - ignored) * classes as f32)
                            .floor()
                            .min(classes as f32 - 1.0)
                    }
                })
                .collect();
            return Inputs {
                pred_shape,
                pred,
                target_shape,
                target,
                labels: true,
                values: false,
                group: 1,
                sequences: false,
            };
        }
        if let Layout::Heads { .. } = self.layout {
            // [N, D, C]: embeddings over class weights, labels in [0, C).
            let (n, d, classes) = (pred_shape[0], pred_shape[1], pred_shape[2]);
            let target = rng
                .uniform(n, 0.0, 1.0)
                .iter()
                .map(|&u| (u * classes as f32).floor().min(classes as f32 - 1.0))
                .collect();
            return Inputs {
                pred_shape: vec![n + classes, d],
                pred,
                target_shape: vec![n],
                target,
                labels: true,
                values: false,
                group: 1,
                sequences: false,
            };
        }
        if let Layout::Tuples { inputs, .. } = self.layout {
            // [N, D] per input: the inputs stacked, one label per row.
            let (n, d) = (pred_shape[0], pred_shape[1]);
            let target = rng
                .uniform(n, 0.0, 1.0)
                .iter()
                .map(|&u| match (self.targets, u < 0.5) {
                    (Targets::Scale, _) => 0.25 + 1.75 * u,
                    (Targets::Sign, true) => -1.0,
                    (Targets::Sign, false) => 1.0,
                    (_, true) => 0.0,
                    (_, false) => 1.0,
                })
                .collect();
            return Inputs {
                pred_shape: vec![inputs * n, d],
                pred,
                target_shape: vec![n],
                target,
                labels: true,
                values: self.targets == Targets::Scale,
                group: 1,
                sequences: false,
            };
        }
        if let Layout::Sequences { .. } = self.layout {
            let (n, classes) = (pred_shape[1], pred_shape[2]);
            let target = rng
                .uniform(n * labels, 0.0, 1.0)
                .iter()
                .map(|&u| 1.0 + (u * (classes - 2) as f32).floor().min((classes - 3) as f32))
                .collect();
            return Inputs {
                pred_shape,
                pred,
                target_shape: vec![n, labels],
                target,
                labels: true,
                values: false,
                group: 1,
                sequences: true,
            };
        }
        if let Layout::Clouds { .. } = self.layout {
            let (n, d) = (pred_shape[0], pred_shape[1]);
            let shrink = (d as f32).sqrt();
            pred.iter_mut().for_each(|v| *v /= shrink);
            let mut target = Vec::with_capacity(2 * n);
            for _ in 0..2 {
                let mut w = rng.uniform(n, 0.05, 1.0);
                w.iter_mut().skip(1).step_by(5).for_each(|v| *v = 0.0);
                let sum: f32 = w.iter().sum();
                target.extend(w.iter().map(|v| v / sum));
            }
            return Inputs {
                pred_shape: vec![2 * n, d],
                pred,
                target_shape: vec![2 * n],
                target,
                labels: true,
                values: true,
                group: 1,
                sequences: false,
            };
        }
        if let Layout::Embeddings {
            classes, members, ..
        } = self.layout
        {
            let rows = pred_shape[0];
            let classes = classes.max(rows.div_ceil(members));
            let target = rng
                .uniform(rows, 0.0, 1.0)
                .iter()
                .map(|&u| (u * classes as f32).floor().min(classes as f32 - 1.0))
                .collect();
            return Inputs {
                target_shape: vec![rows],
                pred_shape,
                pred,
                target,
                labels: true,
                values: false,
                group: 1,
                sequences: false,
            };
        }
        if self.targets == Targets::Boxes {
            let (mut pred, target) = boxes(&mut rng, len / 4);
            if let Some(jump) = self.jump {
                for (p, t) in pred.chunks_exact_mut(4).zip(target.chunks_exact(4)) {
                    // Slide the prediction sideways until it is off the kink.
                    while jump(p, t) {
                        p[0] += 0.01;
                        p[2] += 0.01;
                    }
                }
            }
            return Inputs {
                target_shape: pred_shape.clone(),
                pred_shape,
                pred,
                target,
                labels: false,
                values: false,
                group: 4,
                sequences: false,
            };
        }
        let target = match self.targets {
            Targets::Boxes => unreachable!("boxes are drawn above"),
            Targets::Uniform => rng.uniform(len, lo, hi),
            Targets::Probability => rng.uniform(len, 0.0, 1.0),
            Targets::Scale => rng.uniform(len, 0.25, 2.0),
            // (u < 0.5 rather than floor(2u): a uniform draw in f32 may round up to its bound.)
            Targets::Binary => rng
                .uniform(len, 0.0, 1.0)
                .iter()
                .map(|&u| if u < 0.5 { 0.0 } else { 1.0 })
                .collect(),
            Targets::Sign => rng
                .uniform(len, 0.0, 1.0)
                .iter()
                .map(|&x| if x < 0.5 { -1.0 } else { 1.0 })
                .collect(),
        };
        if let Some(jump) = self.jump {
            for (p, t) in pred.iter_mut().zip(&target) {
                if jump(std::slice::from_ref(p), std::slice::from_ref(t)) {
                    *p += 1e-3;
                }
            }
        }
        Inputs {
            target_shape: pred_shape.clone(),
            pred_shape,
            pred,
            target,
            labels: false,
            values: false,
            group: 1,
            sequences: false,
        }
    }
}

/// `n` predicted and target boxes, `(x1, y1, x2, y2)`, flattened.
fn boxes(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut pred = Vec::with_capacity(4 * n);
    let mut target = Vec::with_capacity(4 * n);
    for _ in 0..n {
        let u = rng.uniform(9, 0.0, 1.0);
        let (x, y, w, h) = (8.0 * u[0], 8.0 * u[1], 0.2 + 3.8 * u[2], 0.2 + 3.8 * u[3]);
        target.extend([x, y, x + w, y + h]);
        let (px, py, pw, ph) = if u[4] < 0.75 {
            // Overlapping: a jittered centre and size.
            let (cx, cy) = (
                x + w / 2.0 + (u[5] - 0.5) * w,
                y + h / 2.0 + (u[6] - 0.5) * h,
            );
            let (pw, ph) = (w * (0.5 + u[7]), h * (0.5 + u[8]));
            (cx - pw / 2.0, cy - ph / 2.0, pw, ph)
        } else {
            (8.0 * u[5], 8.0 * u[6], 0.2 + 3.8 * u[7], 0.2 + 3.8 * u[8])
        };
        // Keep every coordinate positive (valid read as cxcywh too).
        let (px, py) = (px.max(0.05), py.max(0.05));
        pred.extend([px, py, px + pw, py + ph]);
    }
    (pred, target)
}

/// The ignore index of the registry's label losses (torch's default).
pub const IGNORE: i64 = -100;

/// Defaults of the box family's entries: `[N, 4]` boxes.
const F2: Entry = Entry {
    family: "F2 bounding boxes",
    vec4: false,
    half: true,
    targets: Targets::Boxes,
    layout: Layout::Elementwise { row: 4 },
    variants: &["xyxy", "cxcywh", "eps=0.01,grad_scale=2"],
    bench_shapes: &[&[1_000_000, 4]],
    ..F1
};

/// An entry of box loss `$kind` (`wgloss::$ty`), with CIoU's α frozen for finite differences.
macro_rules! box_entry {
    ($name:literal, $ty:ident, $kind:ident, $anchor:literal) => {
        box_entry!($name, $ty, $kind, $anchor, None)
    };
    ($name:literal, $ty:ident, $kind:ident, $anchor:literal, $jump:expr) => {
        Entry {
            name: $name,
            anchor: $anchor,
            jump: $jump,
            make: |_, v, reduction| {
                let (format, eps, grad_scale) = [
                    (wgloss::BoxFormat::Xyxy, 1e-7f32, 1.0f32),
                    (wgloss::BoxFormat::Cxcywh, 1e-7, 1.0),
                    (wgloss::BoxFormat::Xyxy, 0.01, 2.0),
                ][v];
                let loss = wgloss::$ty {
                    format,
                    eps,
                    reduction,
                    grad_scale,
                };
                let fmt = match format {
                    wgloss::BoxFormat::Xyxy => wgloss_ref::BoxFormat::Xyxy,
                    wgloss::BoxFormat::Cxcywh => wgloss_ref::BoxFormat::Cxcywh,
                };
                let (e, r, gs) = (f64::from(eps), reduction.into_ref(), f64::from(grad_scale));
                let reference = move |p: ArrayViewD<'_, f64>, t: ArrayViewD<'_, f64>| {
                    wgloss_ref::box_loss(wgloss_ref::BoxKind::$kind, p, t, fmt, e, r, gs)
                };
                let mut instance = stateless(loss, reference, grad_scale)?;
                if wgloss_ref::BoxKind::$kind == wgloss_ref::BoxKind::Ciou {
                    instance.freeze = Box::new(move |p0, t| {
                        let alpha = wgloss_ref::ciou_alphas(p0.view(), t.view(), fmt, e);
                        let t = t.clone();
                        Box::new(move |p| {
                            wgloss_ref::ciou_with_alpha(p, t.view(), &alpha, fmt, e, r, gs)
                        })
                    });
                }
                Ok(instance)
            },
            bad_params: &[BadParam {
                param: "eps",
                build: |_| {
                    Ok(Box::new(wgloss::$ty {
                        eps: -1.0,
                        ..Default::default()
                    }))
                },
            }],
            ..F2
        }
    };
}

/// Defaults of the segmentation family's entries: multiclass logits `[N, 5, 12]` (one class
/// never labelled in most batches, so absent classes are exercised), labels with one pixel in
/// eight ignored; the loss is a scalar.
const F4: Entry = Entry {
    family: "F4 segmentation",
    vec4: false,
    half: false,
    domain: (-4.0, 4.0),
    reductions: &[Reduction::Mean],
    layout: Layout::Classes {
        classes: 5,
        inner: 12,
        ignores: true,
    },
    bench_shapes: &[&[8, 21, 512, 512]],
    ..F1
};

/// The reference's options for a multiclass variant.
fn seg_options(smooth: f32, eps: f32, per_image: bool) -> wgloss_ref::SegOptions {
    wgloss_ref::SegOptions {
        mode: wgloss_ref::SegMode::Multiclass,
        smooth: smooth.into(),
        eps: eps.into(),
        ignore_index: Some(IGNORE),
        per_image,
    }
}

/// An entry of an overlap loss: variants (smooth, per_image) = (0, false), (1, false), (0, true).
macro_rules! overlap_entry {
    ($name:literal, $anchor:literal, |$smooth:ident, $per_image:ident| $loss:expr, $kind:expr) => {
        Entry {
            name: $name,
            anchor: $anchor,
            half: true,
            variants: &["ignore_index=-100", "smooth=1", "per_image"],
            make: |_, v, _| {
                let ($smooth, $per_image) = [(0.0f32, false), (1.0, false), (0.0, true)][v];
                let loss = $loss;
                let eps = loss.eps;
                let opts = seg_options($smooth, eps, $per_image);
                stateless(
                    loss,
                    move |p, t| wgloss_ref::overlap_loss($kind, p, t, opts, 1.0),
                    1.0,
                )
            },
            bad_params: &[BadParam {
                param: "eps",
                build: |_| {
                    Ok(Box::new(wgloss::Dice {
                        eps: 0.0,
                        ..Default::default()
                    }))
                },
            }],
            ..F4
        }
    };
}

/// An SSIM variant: (window, padding, max_val, grad_scale).
const SSIM_VARIANTS: [(usize, wgloss::SsimPadding, f32, f32); 3] = [
    (11, wgloss::SsimPadding::Same, 1.0, 1.0),
    (5, wgloss::SsimPadding::Valid, 1.0, 1.0),
    (3, wgloss::SsimPadding::Same, 2.0, 0.5),
];

/// Every implemented loss.
pub static REGISTRY: &[Entry] = &[
    Entry {
        name: "mae",
        half: true,
        variants: &["default", "grad_scale=0.5"],
        anchor: "torch l1_loss",
        make: |_, v, reduction| {
            let grad_scale = [1.0, 0.5][v];
            stateless(
                wgloss::Mae {
                    reduction,
                    grad_scale,
                },
                move |p, t| wgloss_ref::mae(p, t, reduction.into_ref(), f64::from(grad_scale)),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::Mae {
                    grad_scale: f32::INFINITY,
                    ..Default::default()
                }))
            },
        }],
        ..F1
    },
    Entry {
        name: "mse",
        half: true,
        variants: &["default", "grad_scale=2"],
        anchor: "torch mse_loss",
        make: |_, v, reduction| {
            let grad_scale = [1.0, 2.0][v];
            stateless(
                wgloss::Mse {
                    reduction,
                    grad_scale,
                },
                move |p, t| wgloss_ref::mse(p, t, reduction.into_ref(), f64::from(grad_scale)),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::Mse {
                    grad_scale: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F1
    },
    Entry {
        name: "rmse",
        half: true,
        variants: &["default", "grad_scale=0.25"],
        anchor: "sqrt of torch mse_loss",
        reductions: &[Reduction::Mean],
        make: |_, v, _| {
            let grad_scale = [1.0, 0.25][v];
            stateless(
                wgloss::Rmse { grad_scale },
                move |p, t| wgloss_ref::rmse(p, t, f64::from(grad_scale)),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::Rmse {
                    grad_scale: f32::NAN,
                }))
            },
        }],
        ..F1
    },
    Entry {
        name: "rmsle",
        half: true,
        variants: &["default", "grad_scale=3"],
        anchor: "seeds (no library has it)",
        reductions: &[Reduction::Mean],
        domain: (0.0, 5.0),
        make: |_, v, _| {
            let grad_scale = [1.0, 3.0][v];
            stateless(
                wgloss::Rmsle { grad_scale },
                move |p, t| wgloss_ref::rmsle(p, t, f64::from(grad_scale)),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::Rmsle {
                    grad_scale: f32::NEG_INFINITY,
                }))
            },
        }],
        ..F1
    },
    Entry {
        name: "log_cosh",
        half: true,
        variants: &["default", "grad_scale=0.5"],
        anchor: "optax log_cosh",
        make: |_, v, reduction| {
            let grad_scale = [1.0, 0.5][v];
            stateless(
                wgloss::LogCosh {
                    reduction,
                    grad_scale,
                },
                move |p, t| wgloss_ref::log_cosh(p, t, reduction.into_ref(), f64::from(grad_scale)),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::LogCosh {
                    grad_scale: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F1
    },
    Entry {
        name: "huber",
        half: true,
        variants: &["delta=1", "delta=0.5", "delta=2.5,grad_scale=0.25"],
        anchor: "torch huber_loss",
        make: |_, v, reduction| {
            let (delta, grad_scale) = [(1.0, 1.0), (0.5, 1.0), (2.5, 0.25)][v];
            stateless(
                wgloss::Huber {
                    delta,
                    reduction,
                    grad_scale,
                },
                move |p, t| {
                    wgloss_ref::huber(p, t, delta.into(), reduction.into_ref(), grad_scale.into())
                },
                grad_scale,
            )
        },
        bad_params: &[
            BadParam {
                param: "delta",
                build: |_| {
                    Ok(Box::new(wgloss::Huber {
                        delta: 0.0,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "delta",
                build: |_| {
                    Ok(Box::new(wgloss::Huber {
                        delta: f32::NAN,
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F1
    },
    Entry {
        name: "smooth_l1",
        half: true,
        variants: &["beta=1", "beta=0", "beta=0.3"],
        anchor: "torch smooth_l1_loss",
        make: |_, v, reduction| {
            let beta = [1.0, 0.0, 0.3][v];
            stateless(
                wgloss::SmoothL1 {
                    beta,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| wgloss_ref::smooth_l1(p, t, beta.into(), reduction.into_ref(), 1.0),
                1.0,
            )
        },
        bad_params: &[
            BadParam {
                param: "beta",
                build: |_| {
                    Ok(Box::new(wgloss::SmoothL1 {
                        beta: -0.5,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "beta",
                build: |_| {
                    Ok(Box::new(wgloss::SmoothL1 {
                        beta: f32::INFINITY,
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F1
    },
    Entry {
        name: "quantile",
        half: true,
        variants: &["quantile=0.5", "quantile=0.1", "quantile=0.9"],
        anchor: "standard pinball loss",
        make: |_, v, reduction| {
            let q = [0.5, 0.1, 0.9][v];
            stateless(
                wgloss::Quantile {
                    quantile: q,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| wgloss_ref::quantile(p, t, q.into(), reduction.into_ref(), 1.0),
                1.0,
            )
        },
        bad_params: &[
            BadParam {
                param: "quantile",
                build: |_| {
                    Ok(Box::new(wgloss::Quantile {
                        quantile: 1.0,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "quantile",
                build: |_| {
                    Ok(Box::new(wgloss::Quantile {
                        quantile: 0.0,
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F1
    },
    Entry {
        name: "balanced_l1",
        half: true,
        variants: &["default", "alpha=0.25,gamma=1,beta=0.5"],
        anchor: "mmdet balanced_l1_loss",
        make: |_, v, reduction| {
            let (alpha, gamma, beta) = [(0.5, 1.5, 1.0), (0.25, 1.0, 0.5)][v];
            stateless(
                wgloss::BalancedL1 {
                    alpha,
                    gamma,
                    beta,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| {
                    let r = reduction.into_ref();
                    wgloss_ref::balanced_l1(p, t, alpha.into(), gamma.into(), beta.into(), r, 1.0)
                },
                1.0,
            )
        },
        bad_params: &[
            BadParam {
                param: "alpha",
                build: |_| {
                    Ok(Box::new(wgloss::BalancedL1 {
                        alpha: 0.0,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "beta",
                build: |_| {
                    Ok(Box::new(wgloss::BalancedL1 {
                        beta: f32::NAN,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "gamma / alpha",
                build: |_| {
                    Ok(Box::new(wgloss::BalancedL1 {
                        alpha: 1e-3,
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F1
    },
    Entry {
        name: "dynamic_smooth_l1",
        half: true,
        variants: &["default", "initial_beta=0.5,k=3,update_iters=2"],
        anchor: "mmdet DynamicRoIHead",
        allows_empty: false,
        make: |gpu, v, reduction| {
            let (initial_beta, k, update_iters) = [(1.0f32, 10u32, 100u32), (0.5, 3, 2)][v];
            let config = wgloss::DynamicSmoothL1Config {
                initial_beta,
                k,
                update_iters,
                reduction,
                grad_scale: 1.0,
            };
            let loss = wgloss::DynamicSmoothL1::new(gpu, config)?;
            let mut state = wgloss_ref::DynamicSmoothL1State::new(
                initial_beta.into(),
                k as usize,
                update_iters as usize,
            );
            let r = reduction.into_ref();
            let beta_now = std::rc::Rc::new(std::cell::Cell::new(f64::from(initial_beta)));
            let beta_seen = beta_now.clone();
            Ok(Instance {
                loss: Box::new(loss),
                reference: Box::new(move |p, t| {
                    beta_now.set(state.beta);
                    wgloss_ref::dynamic_smooth_l1(p, t, &mut state, r, 1.0)
                }),
                // β of the most recent reference call: the one its gradient used.
                freeze: Box::new(move |_, t| {
                    let (t, beta) = (t.clone(), beta_seen.get());
                    Box::new(move |p| wgloss_ref::smooth_l1(p, t.view(), beta, r, 1.0))
                }),
                grad_scale: 1.0,
                stateful: true,
            })
        },
        bad_params: &[
            BadParam {
                param: "k",
                build: |gpu| {
                    let config = wgloss::DynamicSmoothL1Config {
                        k: 17,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::DynamicSmoothL1::new(gpu, config)?))
                },
            },
            BadParam {
                param: "update_iters",
                build: |gpu| {
                    let config = wgloss::DynamicSmoothL1Config {
                        update_iters: 0,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::DynamicSmoothL1::new(gpu, config)?))
                },
            },
            BadParam {
                param: "initial_beta",
                build: |gpu| {
                    let config = wgloss::DynamicSmoothL1Config {
                        initial_beta: f32::NAN,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::DynamicSmoothL1::new(gpu, config)?))
                },
            },
        ],
        ..F1
    },
    Entry {
        name: "self_adjusting_smooth_l1",
        half: true,
        variants: &["default", "beta_max=0.5,momentum=0.5"],
        anchor: "RetinaMask",
        domain: (-0.1, 0.1),
        layout: Layout::Elementwise { row: 4 },
        allows_empty: false,
        make: |gpu, v, reduction| {
            let (beta_max, momentum) = [(1.0f32 / 9.0, 0.1f32), (0.5, 0.5)][v];
            let config = wgloss::SelfAdjustingSmoothL1Config {
                num_features: 4,
                beta_max,
                momentum,
                reduction,
                grad_scale: 1.0,
            };
            let loss = wgloss::SelfAdjustingSmoothL1::new(gpu, config)?;
            let (bm, m, r) = (
                f64::from(beta_max),
                f64::from(momentum),
                reduction.into_ref(),
            );
            let mut state = wgloss_ref::SelfAdjustingState::new(4, bm);
            let before = std::rc::Rc::new(std::cell::RefCell::new(state.clone()));
            let seen = before.clone();
            Ok(Instance {
                loss: Box::new(loss),
                reference: Box::new(move |p, t| {
                    *before.borrow_mut() = state.clone();
                    wgloss_ref::self_adjusting_smooth_l1(p, t, &mut state, m, bm, r, 1.0)
                }),
                // β as the most recent reference call computed it from (pred0, target).
                freeze: Box::new(move |p0, t| {
                    let mut s = seen.borrow().clone();
                    wgloss_ref::self_adjusting_smooth_l1(
                        p0.view(),
                        t.view(),
                        &mut s,
                        m,
                        bm,
                        r,
                        1.0,
                    );
                    let (t, betas) = (t.clone(), s.betas(bm));
                    Box::new(move |p| wgloss_ref::smooth_l1_per_coord(p, t.view(), &betas, r, 1.0))
                }),
                grad_scale: 1.0,
                stateful: true,
            })
        },
        bad_params: &[
            BadParam {
                param: "momentum",
                build: |gpu| {
                    let config = wgloss::SelfAdjustingSmoothL1Config {
                        momentum: 1.5,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::SelfAdjustingSmoothL1::new(gpu, config)?))
                },
            },
            BadParam {
                param: "beta_max",
                build: |gpu| {
                    let config = wgloss::SelfAdjustingSmoothL1Config {
                        beta_max: 0.0,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::SelfAdjustingSmoothL1::new(gpu, config)?))
                },
            },
            BadParam {
                param: "num_features",
                build: |gpu| {
                    let config = wgloss::SelfAdjustingSmoothL1Config {
                        num_features: 0,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::SelfAdjustingSmoothL1::new(gpu, config)?))
                },
            },
        ],
        ..F1
    },
    box_entry!("iou", Iou, Iou, "torchvision box_iou"),
    box_entry!("giou", Giou, Giou, "torchvision generalized_box_iou_loss"),
    box_entry!("diou", Diou, Diou, "torchvision distance_box_iou_loss"),
    box_entry!("ciou", Ciou, Ciou, "torchvision complete_box_iou_loss"),
    box_entry!("eiou", Eiou, Eiou, "Zhang et al. 2021 (no library has it)"),
    box_entry!(
        "siou",
        Siou,
        Siou,
        "mmdet siou_loss (neg_gamma = false)",
        // The gradient drops to 0 where the value enters its clamp at ±1.
        Some(|p, t| {
            let pair = |b: &[f32]| [0, 1, 2, 3].map(|k| f64::from(b[k]));
            // Both formats and both eps of the variants.
            [wgloss_ref::BoxFormat::Xyxy, wgloss_ref::BoxFormat::Cxcywh]
                .iter()
                .flat_map(|&f| [1e-7, 0.01].map(|eps| (f, eps)))
                .any(|(f, eps)| {
                    let s = wgloss_ref::siou_unclamped_value(pair(p), pair(t), f, eps);
                    (s.abs() - 1.0).abs() < 1e-4
                })
        })
    ),
    Entry {
        name: "bce_with_logits",
        half: true,
        variants: &["default", "pos_weight", "pos_weight,weight,grad_scale=0.5"],
        anchor: "torch binary_cross_entropy_with_logits",
        targets: Targets::Probability,
        layout: Layout::Elementwise { row: 3 },
        make: |_, v, reduction| {
            let pos_weight = [
                None,
                Some(vec![2.0f32, 0.5, 1.0]),
                Some(vec![3.0, 1.0, 0.25]),
            ][v]
                .clone();
            let weight = [None, None, Some(vec![0.5f32, 2.0, 1.0])][v].clone();
            let grad_scale = [1.0, 1.0, 0.5][v];
            let loss = wgloss::BceWithLogits {
                pos_weight: pos_weight.clone(),
                weight: weight.clone(),
                reduction,
                grad_scale,
            };
            let to64 = |w: Option<Vec<f32>>| {
                w.map(|w| w.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>())
            };
            let (pw, w) = (to64(pos_weight), to64(weight));
            stateless(
                loss,
                move |p, t| {
                    wgloss_ref::bce_with_logits(
                        p,
                        t,
                        pw.as_deref(),
                        w.as_deref(),
                        reduction.into_ref(),
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "pos_weight",
            build: |_| {
                Ok(Box::new(wgloss::BceWithLogits {
                    pos_weight: Some(vec![1.0, f32::NAN, 1.0]),
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "sigmoid_focal",
        half: true,
        variants: &[
            "alpha=0.25,gamma=2",
            "alpha=-1,gamma=0.5",
            "alpha=0.75,gamma=0",
        ],
        anchor: "torchvision sigmoid_focal_loss",
        targets: Targets::Binary,
        make: |_, v, reduction| {
            let (alpha, gamma) = [(0.25f32, 2.0f32), (-1.0, 0.5), (0.75, 0.0)][v];
            stateless(
                wgloss::SigmoidFocal {
                    alpha,
                    gamma,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| {
                    wgloss_ref::sigmoid_focal(
                        p,
                        t,
                        alpha.into(),
                        gamma.into(),
                        reduction.into_ref(),
                        1.0,
                    )
                },
                1.0,
            )
        },
        bad_params: &[
            BadParam {
                param: "gamma",
                build: |_| {
                    Ok(Box::new(wgloss::SigmoidFocal {
                        gamma: -1.0,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "alpha",
                build: |_| {
                    Ok(Box::new(wgloss::SigmoidFocal {
                        alpha: 1.5,
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F3
    },
    Entry {
        name: "hinge",
        half: true,
        variants: &["margin=1", "margin=0.5"],
        anchor: "optax hinge_loss",
        make: |_, v, reduction| {
            let margin = [1.0f32, 0.5][v];
            stateless(
                wgloss::Hinge {
                    margin,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| wgloss_ref::hinge(p, t, margin.into(), reduction.into_ref(), 1.0),
                1.0,
            )
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(wgloss::Hinge {
                    margin: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "squared_hinge",
        half: true,
        variants: &["margin=1", "margin=2,grad_scale=0.5"],
        anchor: "seeds",
        make: |_, v, reduction| {
            let (margin, grad_scale) = [(1.0f32, 1.0f32), (2.0, 0.5)][v];
            stateless(
                wgloss::SquaredHinge {
                    margin,
                    reduction,
                    grad_scale,
                },
                move |p, t| {
                    wgloss_ref::squared_hinge(
                        p,
                        t,
                        margin.into(),
                        reduction.into_ref(),
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(wgloss::SquaredHinge {
                    margin: f32::INFINITY,
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "smoothed_hinge",
        half: true,
        variants: &["gamma=1", "gamma=0.25"],
        anchor: "Rennie & Srebro 2005",
        make: |_, v, reduction| {
            let gamma = [1.0f32, 0.25][v];
            stateless(
                wgloss::SmoothedHinge {
                    gamma,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| {
                    wgloss_ref::smoothed_hinge(p, t, gamma.into(), reduction.into_ref(), 1.0)
                },
                1.0,
            )
        },
        bad_params: &[BadParam {
            param: "gamma",
            build: |_| {
                Ok(Box::new(wgloss::SmoothedHinge {
                    gamma: 0.0,
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "ramp",
        half: true,
        variants: &["s_cap=-1", "s_cap=0"],
        anchor: "Collobert et al. 2006",
        // The slope drops from −y to 0 where y·s = s_cap.
        jump: Some(|s, y| (y[0] * s[0] + 1.0).abs() < 1e-4 || (y[0] * s[0]).abs() < 1e-4),
        make: |_, v, reduction| {
            let s_cap = [-1.0f32, 0.0][v];
            stateless(
                wgloss::Ramp {
                    s_cap,
                    reduction,
                    grad_scale: 1.0,
                },
                move |p, t| wgloss_ref::ramp(p, t, s_cap.into(), reduction.into_ref(), 1.0),
                1.0,
            )
        },
        bad_params: &[BadParam {
            param: "s_cap",
            build: |_| {
                Ok(Box::new(wgloss::Ramp {
                    s_cap: 1.0,
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "exponential",
        half: true,
        variants: &["default", "grad_scale=0.25"],
        anchor: "seeds (AdaBoost)",
        domain: (-3.0, 3.0),
        extreme_finite: false,
        make: |_, v, reduction| {
            let grad_scale = [1.0f32, 0.25][v];
            stateless(
                wgloss::Exponential {
                    reduction,
                    grad_scale,
                },
                move |p, t| wgloss_ref::exponential(p, t, reduction.into_ref(), grad_scale.into()),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::Exponential {
                    grad_scale: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "ghm_c",
        vec4: true,
        half: true,
        variants: &[
            "bins=10",
            "bins=30,momentum=0.75",
            "bins=7,momentum=0.5,grad_scale=0.5",
        ],
        anchor: "mmdet GHMC",
        targets: Targets::Binary,
        // The weight jumps where g = |σ(x) − t| crosses a bin edge k / bins.
        jump: Some(|x, t| {
            let g = (1.0 / (1.0 + (-f64::from(x[0])).exp()) - f64::from(t[0])).abs();
            [7.0, 10.0, 30.0]
                .iter()
                .any(|&b: &f64| ((g * b).round() - g * b).abs() < 2e-5 * b)
        }),
        make: |gpu, v, reduction| {
            let (bins, momentum, grad_scale) =
                [(10usize, 0.0f32, 1.0f32), (30, 0.75, 1.0), (7, 0.5, 0.5)][v];
            let config = wgloss::GhmCConfig {
                bins,
                momentum,
                reduction,
                grad_scale,
            };
            let loss = wgloss::GhmC::new(gpu, config)?;
            let (m, r, gs) = (
                f64::from(momentum),
                reduction.into_ref(),
                f64::from(grad_scale),
            );
            let mut acc = vec![0.0; bins];
            let before = std::rc::Rc::new(std::cell::RefCell::new(acc.clone()));
            let seen = before.clone();
            Ok(Instance {
                loss: Box::new(loss),
                reference: Box::new(move |p, t| {
                    *before.borrow_mut() = acc.clone();
                    wgloss_ref::ghm_c(p, t, None, bins, m, &mut acc, r, gs)
                }),
                // The running counts as the most recent reference call found them.
                freeze: Box::new(move |_, t| {
                    let (t, acc) = (t.clone(), seen.borrow().clone());
                    Box::new(move |p| {
                        let mut acc = acc.clone();
                        wgloss_ref::ghm_c(p, t.view(), None, bins, m, &mut acc, r, gs)
                    })
                }),
                grad_scale: grad_scale.into(),
                stateful: true,
            })
        },
        bad_params: &[
            BadParam {
                param: "bins",
                build: |gpu| {
                    let config = wgloss::GhmCConfig {
                        bins: 0,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::GhmC::new(gpu, config)?))
                },
            },
            BadParam {
                param: "momentum",
                build: |gpu| {
                    let config = wgloss::GhmCConfig {
                        momentum: 1.0,
                        ..Default::default()
                    };
                    Ok(Box::new(wgloss::GhmC::new(gpu, config)?))
                },
            },
        ],
        ..F3
    },
    Entry {
        name: "cross_entropy",
        half: true,
        vec4: false,
        variants: &[
            "default",
            "weight",
            "label_smoothing=0.1",
            "weight,label_smoothing=0.2,grad_scale=0.5",
            "z_loss=0.01,logit_softcap=5",
            "weight,z_loss=0.1,logit_softcap=2",
        ],
        anchor: "torch cross_entropy",
        bench_shapes: &[&[16_384, 1000], &[4096, 32_000], &[1024, 131_072]],
        layout: Layout::Classes {
            classes: 7,
            inner: 3,
            ignores: true,
        },
        make: |_, v, reduction| {
            let weight = [None, Some(vec![0.5f32, 2.0, 1.0, 0.25, 1.5, 1.0, 3.0])]
                [usize::from(v % 2 == 1)]
            .clone();
            let label_smoothing = [0.0f32, 0.0, 0.1, 0.2, 0.0, 0.0][v];
            let grad_scale = [1.0f32, 1.0, 1.0, 0.5, 1.0, 1.0][v];
            let (z_loss, logit_softcap) = [
                (0.0f32, None),
                (0.0, None),
                (0.0, None),
                (0.0, None),
                (0.01, Some(5.0f32)),
                (0.1, Some(2.0)),
            ][v];
            let loss = wgloss::CrossEntropy {
                weight: weight.clone(),
                ignore_index: IGNORE,
                label_smoothing,
                z_loss,
                logit_softcap,
                reduction,
                grad_scale,
            };
            let w: Option<Vec<f64>> = weight.map(|w| w.iter().map(|&x| f64::from(x)).collect());
            stateless(
                loss,
                move |p, t| {
                    let r = reduction.into_ref();
                    // Probability targets (the logits' shape), as the config takes them; the
                    // suite's inputs are labels.
                    if t.shape() == p.shape() {
                        return wgloss_ref::cross_entropy_probs(
                            p,
                            t,
                            w.as_deref(),
                            label_smoothing.into(),
                            z_loss.into(),
                            logit_softcap.map(f64::from),
                            r,
                            grad_scale.into(),
                        );
                    }
                    wgloss_ref::cross_entropy_extras(
                        p,
                        t,
                        w.as_deref(),
                        IGNORE,
                        label_smoothing.into(),
                        z_loss.into(),
                        logit_softcap.map(f64::from),
                        r,
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[
            BadParam {
                param: "z_loss",
                build: |_| {
                    Ok(Box::new(wgloss::CrossEntropy {
                        z_loss: -1.0,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "logit_softcap",
                build: |_| {
                    Ok(Box::new(wgloss::CrossEntropy {
                        logit_softcap: Some(0.0),
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "label_smoothing",
                build: |_| {
                    Ok(Box::new(wgloss::CrossEntropy {
                        label_smoothing: 1.5,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "weight",
                build: |_| {
                    Ok(Box::new(wgloss::CrossEntropy {
                        weight: Some(vec![1.0; 3]),
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F3
    },
    Entry {
        name: "poly1",
        half: true,
        vec4: false,
        variants: &["epsilon=1", "epsilon=2,grad_scale=0.5", "epsilon=-0.5"],
        anchor: "Leng et al. 2022; optax poly_loss_cross_entropy",
        layout: Layout::Classes {
            classes: 7,
            inner: 3,
            ignores: true,
        },
        make: |_, v, reduction| {
            let (epsilon, grad_scale) = [(1.0f32, 1.0f32), (2.0, 0.5), (-0.5, 1.0)][v];
            stateless(
                wgloss::Poly1 {
                    epsilon,
                    ignore_index: IGNORE,
                    reduction,
                    grad_scale,
                },
                move |p, t| {
                    wgloss_ref::poly1(
                        p,
                        t,
                        epsilon.into(),
                        IGNORE,
                        reduction.into_ref(),
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "epsilon",
            build: |_| {
                Ok(Box::new(wgloss::Poly1 {
                    epsilon: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F3
    },
    Entry {
        name: "softmax_focal",
        half: true,
        vec4: false,
        variants: &["gamma=2", "gamma=0.5,alpha", "gamma=0,grad_scale=2"],
        anchor: "kornia focal_loss (per-class alpha)",
        layout: Layout::Classes {
            classes: 7,
            inner: 3,
            ignores: true,
        },
        make: |_, v, reduction| {
            let (gamma, grad_scale) = [(2.0f32, 1.0f32), (0.5, 1.0), (0.0, 2.0)][v];
            let alpha = (v == 1).then(|| vec![0.25f32, 1.0, 0.5, 2.0, 0.75, 1.0, 0.1]);
            let a64: Option<Vec<f64>> = alpha
                .as_ref()
                .map(|a| a.iter().map(|&x| x.into()).collect());
            stateless(
                wgloss::SoftmaxFocal {
                    gamma,
                    alpha,
                    ignore_index: IGNORE,
                    reduction,
                    grad_scale,
                },
                move |p, t| {
                    wgloss_ref::softmax_focal(
                        p,
                        t,
                        gamma.into(),
                        a64.as_deref(),
                        IGNORE,
                        reduction.into_ref(),
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[
            BadParam {
                param: "gamma",
                build: |_| {
                    Ok(Box::new(wgloss::SoftmaxFocal {
                        gamma: -1.0,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "alpha",
                build: |_| {
                    Ok(Box::new(wgloss::SoftmaxFocal {
                        alpha: Some(vec![1.0; 2]),
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F3
    },
    Entry {
        name: "multiclass_hinge",
        half: true,
        vec4: false,
        variants: &["p=1", "p=2,weight", "p=1,margin=0.5,grad_scale=0.5"],
        anchor: "torch multi_margin_loss",
        layout: Layout::Classes {
            classes: 7,
            inner: 1,
            ignores: false,
        },
        make: |_, v, reduction| {
            let (p, margin, grad_scale) = [(1u32, 1.0f32, 1.0f32), (2, 1.0, 1.0), (1, 0.5, 0.5)][v];
            let weight = (v == 1).then(|| vec![0.5f32, 2.0, 1.0, 0.25, 1.5, 1.0, 3.0]);
            let w64: Option<Vec<f64>> = weight
                .as_ref()
                .map(|w| w.iter().map(|&x| x.into()).collect());
            stateless(
                wgloss::MulticlassHinge {
                    p,
                    margin,
                    weight,
                    reduction,
                    grad_scale,
                },
                move |x, t| {
                    wgloss_ref::multiclass_hinge(
                        x,
                        t,
                        p,
                        margin.into(),
                        w64.as_deref(),
                        reduction.into_ref(),
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[
            BadParam {
                param: "p",
                build: |_| {
                    Ok(Box::new(wgloss::MulticlassHinge {
                        p: 3,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "margin",
                build: |_| {
                    Ok(Box::new(wgloss::MulticlassHinge {
                        margin: f32::INFINITY,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "weight",
                build: |_| {
                    Ok(Box::new(wgloss::MulticlassHinge {
                        weight: Some(vec![1.0; 3]),
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F3
    },
    overlap_entry!(
        "dice",
        "smp DiceLoss",
        |smooth, per_image| wgloss::Dice {
            smooth,
            per_image,
            ignore_index: Some(IGNORE),
            ..Default::default()
        },
        wgloss_ref::Overlap::Dice
    ),
    overlap_entry!(
        "jaccard",
        "smp JaccardLoss",
        |smooth, per_image| wgloss::Jaccard {
            smooth,
            per_image,
            ignore_index: Some(IGNORE),
            ..Default::default()
        },
        wgloss_ref::Overlap::Jaccard
    ),
    overlap_entry!(
        "tversky",
        "smp TverskyLoss",
        |smooth, per_image| wgloss::Tversky {
            alpha: 0.3,
            beta: 0.7,
            gamma: 1.5,
            smooth,
            per_image,
            ignore_index: Some(IGNORE),
            ..Default::default()
        },
        // The config's f32 values, as the kernel sees them.
        wgloss_ref::Overlap::Tversky {
            alpha: f64::from(0.3f32),
            beta: f64::from(0.7f32),
            gamma: 1.5
        }
    ),
    Entry {
        name: "combo",
        vec4: false,
        half: true,
        anchor: "seeds (Taghanaki 2019)",
        variants: &["alpha=0.5", "alpha=0.3,weight,smooth=1"],
        make: |_, v, _| {
            let (alpha, smooth) = [(0.5f32, 0.0f32), (0.3, 1.0)][v];
            let weight = (v == 1).then(|| vec![0.5f32, 2.0, 1.0, 0.25, 1.5]);
            let w64: Option<Vec<f64>> = weight
                .as_ref()
                .map(|w| w.iter().map(|&x| x.into()).collect());
            stateless(
                wgloss::Combo {
                    alpha,
                    weight,
                    ignore_index: IGNORE,
                    smooth,
                    ..Default::default()
                },
                move |p, t| {
                    wgloss_ref::combo(
                        p,
                        t,
                        alpha.into(),
                        w64.as_deref(),
                        Some(IGNORE),
                        smooth.into(),
                        1e-7f32.into(),
                        1.0,
                    )
                },
                1.0,
            )
        },
        bad_params: &[BadParam {
            param: "alpha",
            build: |_| {
                Ok(Box::new(wgloss::Combo {
                    alpha: 1.5,
                    ..Default::default()
                }))
            },
        }],
        ..F4
    },
    Entry {
        name: "sensitivity_specificity",
        vec4: false,
        half: true,
        anchor: "Brosch et al. 2015",
        variants: &["w=0.05", "w=0.5,per_image"],
        make: |_, v, _| {
            let (w, per_image) = [(0.05f32, false), (0.5, true)][v];
            let opts = seg_options(0.0, 1e-5, per_image);
            stateless(
                wgloss::SensitivitySpecificity {
                    w,
                    per_image,
                    ignore_index: Some(IGNORE),
                    ..Default::default()
                },
                move |p, t| {
                    wgloss_ref::overlap_loss(
                        wgloss_ref::Overlap::SensitivitySpecificity { w: w.into() },
                        p,
                        t,
                        opts,
                        1.0,
                    )
                },
                1.0,
            )
        },
        bad_params: &[BadParam {
            param: "w",
            build: |_| {
                Ok(Box::new(wgloss::SensitivitySpecificity {
                    w: -0.5,
                    ..Default::default()
                }))
            },
        }],
        ..F4
    },
    Entry {
        name: "lovasz_softmax",
        anchor: "smp LovaszLoss(multiclass)",
        half: true,
        half_copies: true,
        variants: &["ignore_index=-100", "per_image", "grad_scale=0.5"],
        // Three logit levels: a pixel's probabilities then take 43 values (86 errors with
        // 1 − p) at least 5.8e-4 apart, so errors are either exactly tied (and tie the same way
        // in f32, ranked by pixel) or far apart, and the sort order is the same as in f64.
        snap: Some(|x| {
            if x < -4.0 / 3.0 {
                -2.0
            } else if x < 4.0 / 3.0 {
                0.0
            } else {
                1.5
            }
        }),
        bench_shapes: &[&[4, 19, 512, 512]],
        limits_variant: 1,
        make: |_, v, _| {
            let (per_image, grad_scale) = [(false, 1.0f32), (true, 1.0), (false, 0.5)][v];
            let reference = move |p: ArrayViewD<'_, f64>, t: ArrayViewD<'_, f64>| {
                wgloss_ref::lovasz_softmax(p, t, per_image, Some(IGNORE), grad_scale.into())
            };
            let mut instance = stateless(
                wgloss::LovaszSoftmax {
                    per_image,
                    ignore_index: Some(IGNORE),
                    grad_scale,
                },
                reference,
                grad_scale,
            )?;
            // Tied errors: the order is held at p0 (the gradient is that of the piece of the
            // Lovász extension the sort selects).
            instance.freeze = Box::new(move |p0, t| {
                let (p0, t) = (p0.clone(), t.clone());
                Box::new(move |p| {
                    wgloss_ref::lovasz_softmax_ranked(
                        p,
                        t.view(),
                        p0.view(),
                        per_image,
                        Some(IGNORE),
                        grad_scale.into(),
                    )
                })
            });
            Ok(instance)
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::LovaszSoftmax {
                    grad_scale: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F4
    },
    Entry {
        name: "lovasz_hinge",
        anchor: "smp LovaszLoss(binary)",
        half: true,
        half_copies: true,
        variants: &["per_image", "batch", "grad_scale=0.5"],
        targets: Targets::Binary,
        layout: Layout::Images {
            channels: 1,
            height: 6,
            width: 10,
        },
        // Logits on a grid of 1/64: the errors 1 ∓ x are exact in f32, ties are exact.
        snap: Some(|x| (x * 64.0).round() / 64.0),
        // The hinge's kink, error 0.
        jump: Some(|x, t| (x[0] * (2.0 * t[0] - 1.0) - 1.0).abs() < 1e-4),
        bench_shapes: &[&[4, 1, 512, 512]],
        make: |_, v, _| {
            let (per_image, ignore_index, grad_scale) =
                [(true, None, 1.0f32), (false, None, 1.0), (true, None, 0.5)][v];
            let reference = move |p: ArrayViewD<'_, f64>, t: ArrayViewD<'_, f64>| {
                wgloss_ref::lovasz_hinge(p, t, per_image, ignore_index, grad_scale.into())
            };
            let mut instance = stateless(
                wgloss::LovaszHinge {
                    per_image,
                    ignore_index,
                    grad_scale,
                },
                reference,
                grad_scale,
            )?;
            instance.freeze = Box::new(move |p0, t| {
                let (p0, t) = (p0.clone(), t.clone());
                Box::new(move |p| {
                    wgloss_ref::lovasz_hinge_ranked(
                        p,
                        t.view(),
                        p0.view(),
                        per_image,
                        ignore_index,
                        grad_scale.into(),
                    )
                })
            });
            Ok(instance)
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::LovaszHinge {
                    grad_scale: f32::INFINITY,
                    ..Default::default()
                }))
            },
        }],
        ..F4
    },
    Entry {
        name: "supcon",
        half: true,
        half_copies: true,
        anchor: "pml SupConLoss",
        variants: &["temperature=0.1", "temperature=0.5,grad_scale=0.5"],
        make: |_, v, _| {
            let (temperature, grad_scale) = [(0.1f32, 1.0f32), (0.5, 0.5)][v];
            stateless(
                wgloss::SupCon {
                    temperature,
                    grad_scale,
                },
                move |e, y| {
                    first_grad(wgloss_ref::supcon(
                        e,
                        y,
                        temperature.into(),
                        grad_scale.into(),
                    ))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "temperature",
            build: |_| {
                Ok(Box::new(wgloss::SupCon {
                    temperature: 0.0,
                    ..Default::default()
                }))
            },
        }],
        ..F5
    },
    Entry {
        name: "nt_xent",
        half: true,
        half_copies: true,
        anchor: "pml NTXentLoss (labels); SimCLR (views, tests/metric.rs)",
        variants: &[
            "labels,temperature=0.07",
            "labels,temperature=0.5,grad_scale=2",
        ],
        make: |_, v, _| {
            let (temperature, grad_scale) = [(0.07f32, 1.0f32), (0.5, 2.0)][v];
            stateless(
                wgloss::NtXent {
                    temperature,
                    grad_scale,
                    ..Default::default()
                },
                move |e, y| {
                    first_grad(wgloss_ref::nt_xent_labels(
                        e,
                        y,
                        temperature.into(),
                        grad_scale.into(),
                    ))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "temperature",
            build: |_| {
                Ok(Box::new(wgloss::NtXent {
                    temperature: -0.1,
                    ..Default::default()
                }))
            },
        }],
        ..F5
    },
    Entry {
        name: "contrastive_batch",
        half: true,
        half_copies: true,
        anchor: "pml ContrastiveLoss (all pairs of a labelled batch)",
        variants: &[
            "pos_margin=0,neg_margin=1",
            "pos_margin=0.2,neg_margin=1.5,grad_scale=2",
        ],
        make: |_, v, _| {
            let (pos_margin, neg_margin, grad_scale) =
                [(0.0f32, 1.0f32, 1.0f32), (0.2, 1.5, 2.0)][v];
            let (p, n, g) = (pos_margin.into(), neg_margin.into(), grad_scale.into());
            stateless(
                wgloss::ContrastiveBatch {
                    pos_margin,
                    neg_margin,
                    grad_scale,
                },
                move |e, y| first_grad(wgloss_ref::contrastive_batch(e, y, p, n, g)),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "neg_margin",
            build: |_| {
                Ok(Box::new(wgloss::ContrastiveBatch {
                    neg_margin: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F5
    },
    Entry {
        name: "triplet_batch_hard",
        half: true,
        half_copies: true,
        anchor: "Hermans et al. 2017 (batch-hard mining)",
        variants: &["margin=1", "margin=0.3,squared"],
        make: |_, v, _| {
            let (margin, squared) = [(1.0f32, false), (0.3, true)][v];
            let loss = wgloss::TripletBatchHard {
                margin,
                squared,
                grad_scale: 1.0,
            };
            Ok(mined_triplet(
                Box::new(loss),
                TripletMining::BatchHard,
                margin,
                squared,
            ))
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(wgloss::TripletBatchHard {
                    margin: f32::INFINITY,
                    ..Default::default()
                }))
            },
        }],
        // Rows on a grid of 1/64: squared distances are exact in f32, so equal distances tie
        // alike on the GPU and in the reference (the lowest index wins).
        snap: Some(|x| (x * 64.0).round() / 64.0),
        ..F5
    },
    Entry {
        name: "triplet_semi_hard",
        half: true,
        half_copies: true,
        anchor: "TF Addons triplet_semihard_loss (FaceNet semi-hard mining)",
        variants: &["margin=1", "margin=0.3,squared"],
        make: |_, v, _| {
            let (margin, squared) = [(1.0f32, false), (0.3, true)][v];
            let loss = wgloss::TripletSemiHard {
                margin,
                squared,
                grad_scale: 1.0,
            };
            Ok(mined_triplet(
                Box::new(loss),
                TripletMining::SemiHard,
                margin,
                squared,
            ))
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(wgloss::TripletSemiHard {
                    margin: f32::INFINITY,
                    ..Default::default()
                }))
            },
        }],
        // Rows on a grid of 1/64: squared distances are exact in f32, so equal distances tie
        // alike on the GPU and in the reference (the lowest index wins).
        snap: Some(|x| (x * 64.0).round() / 64.0),
        // Classes of about 8 members (P×K batches): each positive pair mines its own negative,
        // one pass over the batch per 16 positives of the largest class.
        layout: Layout::Embeddings {
            dim: 3,
            classes: 4,
            members: 8,
        },
        ..F5
    },
    Entry {
        name: "cosine_embedding",
        anchor: "torch cosine_embedding_loss",
        variants: &["margin=0", "margin=0.5,grad_scale=2"],
        make: |_, v, reduction| {
            let (margin, grad_scale) = [(0.0f32, 1.0f32), (0.5, 2.0)][v];
            let loss = wgloss::CosineEmbedding {
                margin,
                reduction,
                grad_scale,
            };
            pair_instance(
                loss,
                [margin, grad_scale],
                reduction,
                wgloss_ref::cosine_embedding,
            )
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(
                    wgloss::CosineEmbedding {
                        margin: f32::NAN,
                        ..Default::default()
                    },
                )))
            },
        }],
        targets: Targets::Sign,
        ..TUPLES
    },
    Entry {
        name: "contrastive",
        anchor: "Hadsell et al. 2006 (pairs)",
        variants: &["margin=1", "margin=2.5,grad_scale=0.5"],
        make: |_, v, reduction| {
            let (margin, grad_scale) = [(1.0f32, 1.0f32), (2.5, 0.5)][v];
            let loss = wgloss::Contrastive {
                margin,
                reduction,
                grad_scale,
            };
            pair_instance(
                loss,
                [margin, grad_scale],
                reduction,
                wgloss_ref::contrastive_pairs,
            )
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(wgloss::Contrastive {
                    margin: f32::INFINITY,
                    ..Default::default()
                })))
            },
        }],
        targets: Targets::Binary,
        ..TUPLES
    },
    Entry {
        name: "triplet",
        anchor: "torch triplet_margin_loss",
        variants: &["margin=1,p=2", "margin=0.5,p=1,swap", "p=3,eps=0.1,swap"],
        make: |_, v, reduction| {
            let (margin, p, eps, swap) = [
                (1.0f32, 2.0f32, 1e-6f32, false),
                (0.5, 1.0, 1e-6, true),
                (1.0, 3.0, 0.1, true),
            ][v];
            let loss = wgloss::Triplet {
                margin,
                p,
                eps,
                swap,
                reduction,
                grad_scale: 1.0,
            };
            let (m, pp, e, r) = (margin.into(), p.into(), eps.into(), reduction.into_ref());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, _| {
                    let x = stacked::unstack(&pred, 3);
                    let (a, po, ne) = (x[0].clone(), x[1].clone(), x[2].clone());
                    stacked::stacked(wgloss_ref::triplet(a, po, ne, m, pp, e, swap, r, 1.0))
                },
                1.0,
            )
        },
        bad_params: &[BadParam {
            param: "p",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(wgloss::Triplet {
                    p: 0.5,
                    ..Default::default()
                })))
            },
        }],
        layout: Layout::Tuples {
            dim: 2,
            inputs: 3,
            target: false,
            all_pairs: false,
        },
        ..TUPLES
    },
    Entry {
        name: "info_nce",
        anchor: "seeds (InfoNCE); CLIP (symmetric); MoCo (extra negatives)",
        variants: &[
            "temperature=0.07",
            "temperature=0.2,symmetric,negatives,grad_scale=2",
            "temperature=0.5,negatives,unnormalized",
        ],
        make: |_, v, _| {
            let (temperature, symmetric, negatives, normalize, grad_scale) = [
                (0.07f32, false, false, true, 1.0f32),
                (0.2, true, true, true, 2.0),
                (0.5, false, true, false, 1.0),
            ][v];
            let loss = wgloss::InfoNce {
                temperature,
                normalize,
                symmetric,
                negatives,
                grad_scale,
            };
            let (t, g) = (temperature.into(), grad_scale.into());
            stateless(
                stacked::StackedTuple { loss, parts: 3 },
                move |p, _| {
                    let x = stacked::unstack(&p, 3);
                    let neg = negatives.then(|| x[2].clone());
                    let mut m = wgloss_ref::info_nce(
                        x[0].clone(),
                        x[1].clone(),
                        neg,
                        t,
                        normalize,
                        symmetric,
                        g,
                    );
                    if !negatives {
                        m.grads.push(ndarray::ArrayD::zeros(x[2].raw_dim()));
                    }
                    stacked::stacked(m)
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "temperature",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple {
                    loss: wgloss::InfoNce {
                        temperature: 0.0,
                        ..Default::default()
                    },
                    parts: 3,
                }))
            },
        }],
        layout: Layout::Tuples {
            dim: 3,
            inputs: 3,
            target: false,
            all_pairs: true,
        },
        reductions: &[Reduction::Mean],
        tolerance: F5.tolerance,
        extreme_tolerance: F5.extreme_tolerance,
        bench_shapes: &[&[8192, 256]],
        ..TUPLES
    },
    Entry {
        name: "cosface",
        anchor: "pml CosFaceLoss",
        variants: &["scale=64,margin=0.35", "scale=30,margin=0.2,grad_scale=0.5"],
        make: |_, v, _| {
            let (scale, margin, grad_scale) = [(64.0f32, 0.35f32, 1.0f32), (30.0, 0.2, 0.5)][v];
            let head = wgloss::CosFace {
                scale,
                margin,
                grad_scale,
            };
            scale_margin_head(head, [scale, margin, grad_scale], wgloss_ref::cosface)
        },
        bad_params: &[BadParam {
            param: "scale",
            build: |_| {
                Ok(Box::new(crate::stacked::Stacked {
                    head: wgloss::CosFace {
                        scale: f32::NAN,
                        ..Default::default()
                    },
                }))
            },
        }],
        ..HEADS
    },
    Entry {
        name: "arcface",
        anchor: "insightface CombinedMarginLoss; pml ArcFaceLoss",
        // Margin 1.2 puts a third of random targets past θ + m > π (the fallback logit).
        variants: &["scale=64,margin=0.5", "scale=16,margin=1.2,grad_scale=2"],
        make: |_, v, _| {
            let (scale, margin, grad_scale) = [(64.0f32, 0.5f32, 1.0f32), (16.0, 1.2, 2.0)][v];
            let head = wgloss::ArcFace {
                scale,
                margin,
                grad_scale,
            };
            scale_margin_head(head, [scale, margin, grad_scale], wgloss_ref::arcface)
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(crate::stacked::Stacked {
                    head: wgloss::ArcFace {
                        margin: f32::INFINITY,
                        ..Default::default()
                    },
                }))
            },
        }],
        ..HEADS
    },
    Entry {
        name: "sphereface",
        anchor: "pml SphereFaceLoss (Liu et al. 2017, no annealing)",
        variants: &["margin=4", "margin=3,grad_scale=2"],
        make: |_, v, _| {
            let (margin, grad_scale) = [(4u32, 1.0f32), (3, 2.0)][v];
            let head = wgloss::SphereFace { margin, grad_scale };
            let g = grad_scale.into();
            stateless(
                crate::stacked::Stacked { head },
                move |p, y| {
                    let (e, w) = crate::stacked::split(&p, &y);
                    crate::stacked::stacked(wgloss_ref::sphereface(e, w, y, margin, g))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "margin",
            build: |_| {
                Ok(Box::new(crate::stacked::Stacked {
                    head: wgloss::SphereFace {
                        margin: 0,
                        ..Default::default()
                    },
                }))
            },
        }],
        ..HEADS
    },
    Entry {
        name: "adaface",
        anchor: "AdaFace head.py",
        variants: &["default", "margin=0.5,h=0.5,t_alpha=1,grad_scale=0.5"],
        make: |gpu, v, _| {
            let config = [
                wgloss::AdaFaceConfig::default(),
                wgloss::AdaFaceConfig {
                    margin: 0.5,
                    h: 0.5,
                    t_alpha: 1.0,
                    grad_scale: 0.5,
                    ..Default::default()
                },
            ][v];
            let head = wgloss::AdaFace::new(gpu, config)?;
            let f = |x: f32| f64::from(x);
            let (m, h, sc, ta, g) = (
                f(config.margin),
                f(config.h),
                f(config.scale),
                f(config.t_alpha),
                f(config.grad_scale),
            );
            let mut state = wgloss_ref::AdaFaceState::default();
            let before = std::rc::Rc::new(std::cell::Cell::new(state));
            let seen = before.clone();
            Ok(Instance {
                loss: Box::new(crate::stacked::Stacked { head }),
                reference: Box::new(move |p, y| {
                    before.set(state);
                    let (e, w) = crate::stacked::split(&p, &y);
                    crate::stacked::stacked(wgloss_ref::adaface(
                        e, w, y, &mut state, m, h, sc, ta, g,
                    ))
                }),
                // The norms and the statistics as the most recent reference call took them
                // at (pred0, labels): constants for the gradient, as in head.py.
                freeze: Box::new(move |p0, y| {
                    let p0 = p0.view();
                    let (e0, w0) = crate::stacked::split(&p0, &y.view());
                    let norms = wgloss_ref::adaface_norms(&e0);
                    let mut s = seen.get();
                    wgloss_ref::adaface(e0, w0, y.view(), &mut s, m, h, sc, ta, g);
                    let y = y.clone();
                    Box::new(move |p| {
                        let (e, w) = crate::stacked::split(&p, &y.view());
                        crate::stacked::stacked(wgloss_ref::adaface_frozen(
                            e,
                            w,
                            y.view(),
                            &norms,
                            s,
                            m,
                            h,
                            sc,
                            g,
                        ))
                    })
                }),
                grad_scale: g,
                stateful: true,
            })
        },
        bad_params: &[BadParam {
            param: "t_alpha",
            build: |gpu| {
                let config = wgloss::AdaFaceConfig {
                    t_alpha: 1.5,
                    ..Default::default()
                };
                Ok(Box::new(crate::stacked::Stacked {
                    head: wgloss::AdaFace::new(gpu, config)?,
                }))
            },
        }],
        ..HEADS
    },
    Entry {
        name: "ssim",
        vec4: false,
        half: true,
        half_copies: true,
        anchor: "kornia ssim_loss",
        family: "F4 segmentation",
        variants: &[
            "window=11",
            "window=5,valid",
            "window=3,max_val=2,grad_scale=0.5",
        ],
        domain: (0.0, 1.0),
        targets: Targets::Probability,
        layout: Layout::Images {
            channels: 2,
            height: 13,
            width: 11,
        },
        bench_shapes: &[&[16, 3, 512, 512]],
        // Each gradient sums terms of both signs over the windows: where they nearly cancel (a
        // gradient 1e-3 of the largest), a device that fuses multiply-adds and divides less
        // exactly than lavapipe needs more absolute slack (an H100 over Vulkan was 4.3e-11 off
        // where 1e-6 of the largest allowed 3.7e-11, once in 100,100 values).
        tolerance: crate::check::Tolerance {
            rtol: 1e-4,
            atol_frac: 1e-5,
        },
        // Images of 1e4: σ² = E[x²] − μ² cancels about three of f32's seven digits, and each
        // gradient is a sum of such terms.
        extreme_tolerance: crate::check::Tolerance {
            rtol: 2e-3,
            atol_frac: 1e-4,
        },
        make: |_, v, reduction| {
            let (window_size, padding, max_val, grad_scale) = SSIM_VARIANTS[v];
            let pad = match padding {
                wgloss::SsimPadding::Same => wgloss_ref::SsimPadding::Same,
                wgloss::SsimPadding::Valid => wgloss_ref::SsimPadding::Valid,
            };
            stateless(
                wgloss::Ssim {
                    window_size,
                    padding,
                    max_val,
                    reduction,
                    grad_scale,
                    ..Default::default()
                },
                move |p, t| {
                    wgloss_ref::ssim_loss(
                        p,
                        t,
                        window_size,
                        1.5,
                        max_val.into(),
                        0.01,
                        0.03,
                        1e-12,
                        pad,
                        reduction.into_ref(),
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[
            BadParam {
                param: "window_size",
                build: |_| {
                    Ok(Box::new(wgloss::Ssim {
                        window_size: 4,
                        ..Default::default()
                    }))
                },
            },
            BadParam {
                param: "sigma",
                build: |_| {
                    Ok(Box::new(wgloss::Ssim {
                        sigma: 0.0,
                        ..Default::default()
                    }))
                },
            },
        ],
        ..F1
    },
    Entry {
        name: "diffusion_mse",
        half: true,
        anchor: "DDPM simple loss (per-sample weights: tests/generative.rs)",
        variants: &["default", "grad_scale=0.5"],
        make: |_, v, reduction| {
            let grad_scale = [1.0f32, 0.5][v];
            let loss = wgloss::DiffusionMse {
                weights: None,
                reduction,
                grad_scale,
            };
            stateless(
                loss,
                move |p, t| {
                    let gs = grad_scale.into();
                    wgloss_ref::diffusion_mse(p, t, None, reduction.into_ref(), gs)
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::DiffusionMse {
                    grad_scale: f32::INFINITY,
                    ..Default::default()
                }))
            },
        }],
        domain: (-3.0, 3.0),
        targets: Targets::Uniform,
        ..F6
    },
    Entry {
        name: "gaussian_kl",
        anchor: "VAE (Kingma & Welling 2014)",
        variants: &["beta=1", "beta=0.25,grad_scale=2"],
        make: |_, v, reduction| {
            let (beta, grad_scale) = [(1.0f32, 1.0f32), (0.25, 2.0)][v];
            let loss = wgloss::GaussianKl {
                beta,
                reduction,
                grad_scale,
            };
            let (b, r, g) = (beta.into(), reduction.into_ref(), grad_scale.into());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, _| {
                    let x = stacked::unstack(&pred, 2);
                    stacked::stacked(wgloss_ref::gaussian_kl(x[0].clone(), x[1].clone(), b, r, g))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "beta",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(wgloss::GaussianKl {
                    beta: f32::NAN,
                    ..Default::default()
                })))
            },
        }],
        layout: Layout::Tuples {
            dim: 4,
            inputs: 2,
            target: false,
            all_pairs: false,
        },
        // e^{log σ²} overflows at log σ² = 1e4, in the math as in f32.
        extreme_finite: false,
        ..GENERATIVE_ROWS
    },
    Entry {
        name: "gradient_penalty",
        anchor: "WGAN-GP (Gulrajani et al. 2017)",
        variants: &["lambda=10", "lambda=0.5,grad_scale=2"],
        make: |_, v, reduction| {
            let (lambda, grad_scale) = [(10.0f32, 1.0f32), (0.5, 2.0)][v];
            let loss = wgloss::GradientPenalty {
                lambda,
                reduction,
                grad_scale,
            };
            let (l, r, g) = (lambda.into(), reduction.into_ref(), grad_scale.into());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, _| wgloss_ref::gradient_penalty(pred, l, r, g),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "lambda",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(
                    wgloss::GradientPenalty {
                        lambda: f32::INFINITY,
                        ..Default::default()
                    },
                )))
            },
        }],
        layout: Layout::Tuples {
            dim: 4,
            inputs: 1,
            target: false,
            all_pairs: false,
        },
        ..GENERATIVE_ROWS
    },
    Entry {
        name: "cycle_consistency",
        anchor: "CycleGAN (Zhu et al. 2017)",
        variants: &["lambda=1", "lambda=10,grad_scale=0.5"],
        make: |_, v, _| {
            let (lambda, grad_scale) = [(1.0f32, 1.0f32), (10.0, 0.5)][v];
            let loss = wgloss::CycleConsistency { lambda, grad_scale };
            let (l, g) = (lambda.into(), grad_scale.into());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, _| {
                    let x = stacked::unstack(&pred, 4);
                    let (rx, ox, ry, oy) = (x[0].clone(), x[1].clone(), x[2].clone(), x[3].clone());
                    let m = wgloss_ref::cycle_consistency(rx, ox, ry, oy, l, g);
                    // The originals' gradients: the negatives of their reconstructions'.
                    let (gx, gy) = (&m.grads[0], &m.grads[1]);
                    let grads = vec![gx.clone(), -gx, gy.clone(), -gy];
                    stacked::stacked(wgloss_ref::MultiGrad {
                        loss: m.loss,
                        grads,
                    })
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "lambda",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(
                    wgloss::CycleConsistency {
                        lambda: f32::NAN,
                        ..Default::default()
                    },
                )))
            },
        }],
        layout: Layout::Tuples {
            dim: 4,
            inputs: 4,
            target: false,
            all_pairs: false,
        },
        reductions: &[Reduction::Mean],
        ..GENERATIVE_ROWS
    },
    Entry {
        name: "gan_generator",
        anchor: "GAN, LSGAN, WGAN, hinge GAN (seeds)",
        variants: &[
            "minimax",
            "non_saturating",
            "least_squares,c=0.5",
            "wasserstein",
            "hinge,grad_scale=2",
        ],
        make: |_, v, reduction| {
            let (kind, kind_ref) = GAN_KINDS[v];
            let (c, grad_scale) = [
                (1.0f32, 1.0f32),
                (1.0, 1.0),
                (0.5, 1.0),
                (1.0, 1.0),
                (1.0, 2.0),
            ][v];
            let loss = wgloss::GanGenerator {
                kind,
                c,
                reduction,
                grad_scale,
            };
            let (cc, r, g) = (c.into(), reduction.into_ref(), grad_scale.into());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, _| wgloss_ref::gan_generator(pred, kind_ref, cc, r, g),
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "c",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(wgloss::GanGenerator {
                    c: f32::NAN,
                    ..Default::default()
                })))
            },
        }],
        layout: Layout::Tuples {
            dim: 1,
            inputs: 1,
            target: false,
            all_pairs: false,
        },
        ..GENERATIVE_ROWS
    },
    Entry {
        name: "gan_discriminator",
        anchor: "GAN, LSGAN, WGAN, hinge GAN (seeds); reduction none: tests/generative.rs",
        variants: &[
            "minimax",
            "non_saturating",
            "least_squares,a=-1,b=1",
            "wasserstein",
            "hinge,grad_scale=2",
        ],
        make: |_, v, reduction| {
            let (kind, kind_ref) = GAN_KINDS[v];
            let (a, b, grad_scale) = [
                (0.0f32, 1.0f32, 1.0f32),
                (0.0, 1.0, 1.0),
                (-1.0, 1.0, 1.0),
                (0.0, 1.0, 1.0),
                (0.0, 1.0, 2.0),
            ][v];
            let loss = wgloss::GanDiscriminator {
                kind,
                a,
                b,
                reduction,
                grad_scale,
            };
            let (aa, bb, r, g) = (a.into(), b.into(), reduction.into_ref(), grad_scale.into());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, _| {
                    let x = stacked::unstack(&pred, 2);
                    let (real, fake) = (x[0].clone(), x[1].clone());
                    stacked::stacked(wgloss_ref::gan_discriminator(
                        real, fake, kind_ref, aa, bb, r, g,
                    ))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "b",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(
                    wgloss::GanDiscriminator {
                        b: f32::INFINITY,
                        ..Default::default()
                    },
                )))
            },
        }],
        layout: Layout::Tuples {
            dim: 1,
            inputs: 2,
            target: false,
            all_pairs: false,
        },
        // Under none the loss lists both sets' terms (2N): not the stacked form's [N].
        reductions: &[Reduction::Mean, Reduction::Sum],
        ..GENERATIVE_ROWS
    },
    Entry {
        name: "score_matching",
        anchor: "NCSN (Song & Ermon 2019)",
        variants: &["default", "grad_scale=0.5"],
        make: |_, v, reduction| {
            let grad_scale = [1.0f32, 0.5][v];
            let loss = wgloss::ScoreMatching {
                reduction,
                grad_scale,
            };
            let (r, g) = (reduction.into_ref(), grad_scale.into());
            stateless(
                stacked::StackedTuple::new(loss),
                move |pred, sigma| {
                    let x = stacked::unstack(&pred, 3);
                    let (s, noisy, clean) = (x[0].clone(), x[1].clone(), x[2].clone());
                    let out = wgloss_ref::score_matching(s, noisy, clean, sigma.view(), r, g);
                    // d/dx̃ = u/σ = (d/ds)/σ², d/dx its negative (the reference gives d/ds).
                    let mut noisy_grad = out.grad.clone();
                    for (mut row, &sg) in noisy_grad.outer_iter_mut().zip(sigma.iter()) {
                        row.mapv_inplace(|v| v / (sg * sg));
                    }
                    let clean_grad = -&noisy_grad;
                    stacked::stacked(wgloss_ref::MultiGrad {
                        loss: out.loss,
                        grads: vec![out.grad, noisy_grad, clean_grad],
                    })
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(stacked::StackedTuple::new(
                    wgloss::ScoreMatching {
                        grad_scale: f32::NAN,
                        ..Default::default()
                    },
                )))
            },
        }],
        layout: Layout::Tuples {
            dim: 4,
            inputs: 3,
            target: true,
            all_pairs: false,
        },
        targets: Targets::Scale,
        ..GENERATIVE_ROWS
    },
    Entry {
        name: "perceptual",
        anchor: "Johnson et al. 2016 (feature reconstruction); layers of other shapes: tests/generative.rs",
        variants: &["mse,weights=1,0.5", "l1,weights=2,1,grad_scale=0.5"],
        make: |_, v, _| {
            let (distance, distance_ref, weights, grad_scale): (_, _, &'static [f32], f32) = [
                (
                    wgloss::PerceptualDistance::Mse,
                    wgloss_ref::PerceptualDistance::Mse,
                    &[1.0, 0.5][..],
                    1.0,
                ),
                (
                    wgloss::PerceptualDistance::L1,
                    wgloss_ref::PerceptualDistance::L1,
                    &[2.0, 1.0][..],
                    0.5,
                ),
            ][v];
            let loss = wgloss::Perceptual {
                layer_weights: weights,
                distance,
                grad_scale,
            };
            let w: Vec<f64> = weights.iter().map(|&x| x.into()).collect();
            let g = grad_scale.into();
            stateless(
                stacked::StackedLayers { loss, layers: 2 },
                move |pred, target| {
                    let p = stacked::unstack_layers(&pred, 2);
                    let t = stacked::unstack_layers(&target, 2);
                    stacked::stacked(wgloss_ref::perceptual(&p, &t, &w, distance_ref, g))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "layer_weights",
            build: |_| {
                let loss = wgloss::Perceptual {
                    layer_weights: &[1.0, f32::NAN],
                    ..Default::default()
                };
                Ok(Box::new(stacked::StackedLayers { loss, layers: 2 }))
            },
        }],
        layout: Layout::Elementwise { row: 4 },
        reductions: &[Reduction::Mean],
        domain: (-3.0, 3.0),
        targets: Targets::Uniform,
        ..F6
    },
    Entry {
        name: "style",
        anchor: "Gatys et al. 2016; burn-vision GramMatrixLoss (layers of other shapes: tests/generative.rs)",
        variants: &["weights=1,1", "weights=2,0.5,grad_scale=0.5"],
        make: |_, v, _| {
            let (weights, grad_scale): (&'static [f32], f32) =
                [(&[1.0, 1.0][..], 1.0), (&[2.0, 0.5][..], 0.5)][v];
            let loss = wgloss::Style {
                layer_weights: weights,
                grad_scale,
            };
            let w: Vec<f64> = weights.iter().map(|&x| x.into()).collect();
            let g = grad_scale.into();
            stateless(
                stacked::StackedLayers { loss, layers: 2 },
                move |pred, target| {
                    let p = stacked::unstack_layers(&pred, 2);
                    let t = stacked::unstack_layers(&target, 2);
                    stacked::stacked(wgloss_ref::style(&p, &t, &w, g))
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "layer_weights",
            build: |_| {
                let loss = wgloss::Style {
                    layer_weights: &[f32::INFINITY, 1.0],
                    ..Default::default()
                };
                Ok(Box::new(stacked::StackedLayers { loss, layers: 2 }))
            },
        }],
        // Images [N, 3, 4, 5]: the two layers split the batch.
        layout: Layout::Images {
            channels: 3,
            height: 4,
            width: 5,
        },
        // The issue's shape: two layers of 4 maps of 256 channels, 64 × 64.
        bench_shapes: &[&[8, 256, 64, 64]],
        reductions: &[Reduction::Mean],
        domain: (-2.0, 2.0),
        targets: Targets::Uniform,
        ..F6
    },
    Entry {
        name: "sinkhorn",
        anchor: "geomloss SamplesLoss(\"sinkhorn\") (given diameter: tests/generative.rs)",
        variants: &[
            "p=2,blur=0.05,scaling=0.5,debias,weights",
            "p=1,blur=0.1,scaling=0.7,uniform,grad_scale=0.5",
            "p=2,blur=0.2,no debias,weights,grad_scale=2",
        ],
        make: |_, v, _| {
            let (p, blur, scaling, debias, weighted, grad_scale) = [
                (2, 0.05f32, 0.5f32, true, true, 1.0f32),
                (1, 0.1, 0.7, true, false, 0.5),
                (2, 0.2, 0.5, false, true, 2.0),
            ][v];
            let loss = wgloss::Sinkhorn {
                p,
                blur,
                scaling,
                debias,
                diameter: None,
                grad_scale,
            };
            let config = wgloss_ref::SinkhornConfig {
                p,
                blur: blur.into(),
                scaling: scaling.into(),
                debias,
            };
            let g = f64::from(grad_scale);
            Ok(Instance {
                loss: Box::new(stacked::StackedClouds { loss, weighted }),
                reference: Box::new(move |pred, weights| {
                    sinkhorn_step(&config, weighted, g, pred.view(), weights, pred.view())
                }),
                freeze: Box::new(move |pred0, weights| {
                    let (pred0, weights) = (pred0.clone(), weights.clone());
                    Box::new(move |pred| {
                        sinkhorn_step(&config, weighted, g, pred0.view(), weights.view(), pred)
                    })
                }),
                grad_scale: g,
                stateful: false,
            })
        },
        bad_params: &[
            BadParam {
                param: "p",
                build: |_| {
                    let loss = wgloss::Sinkhorn {
                        p: 3,
                        ..Default::default()
                    };
                    Ok(Box::new(stacked::StackedClouds { loss, weighted: true }))
                },
            },
            BadParam {
                param: "blur",
                build: |_| {
                    let loss = wgloss::Sinkhorn {
                        blur: 0.0,
                        ..Default::default()
                    };
                    Ok(Box::new(stacked::StackedClouds { loss, weighted: true }))
                },
            },
            BadParam {
                param: "scaling",
                build: |_| {
                    let loss = wgloss::Sinkhorn {
                        scaling: 1.0,
                        ..Default::default()
                    };
                    Ok(Box::new(stacked::StackedClouds { loss, weighted: true }))
                },
            },
            BadParam {
                param: "diameter",
                build: |_| {
                    let loss = wgloss::Sinkhorn {
                        diameter: Some(-1.0),
                        ..Default::default()
                    };
                    Ok(Box::new(stacked::StackedClouds { loss, weighted: true }))
                },
            },
        ],
        layout: Layout::Clouds { dim: 3 },
        reductions: &[Reduction::Mean],
        domain: (-1.0, 1.0),
        targets: Targets::Probability,
        vec4: false,
        allows_empty: false,
        tolerance: crate::check::SINKHORN,
        // At ±1e4 the costs over ε reach 1e11: rows whose mass the balanced plan splits between
        // far-apart points get their split from potentials known to ~1e-7 of 1e8, so their
        // gradient is only known in magnitude; the loss (first-order insensitive to the plan)
        // is still checked at the reduced tolerance, and every value must be finite.
        extreme_tolerance: crate::check::Tolerance {
            rtol: 0.0,
            atol_frac: 1.0,
        },
        // The issue's shape: two clouds of 10,000 points in 3-d.
        bench_shapes: &[&[10_000, 3]],
        ..F6
    },
    Entry {
        name: "ctc",
        half: true,
        half_copies: true,
        anchor: "torch ctc_loss (concatenated targets, bad labels and lengths: tests/ctc.rs)",
        variants: &["blank=0", "blank=5,zero_infinity", "blank=0,grad_scale=0.5"],
        make: |_, v, reduction| {
            let (blank, zero_infinity, grad_scale) =
                [(0u32, false, 1.0f32), (5, true, 1.0), (0, false, 0.5)][v];
            let loss = wgloss::Ctc {
                blank,
                reduction,
                zero_infinity,
                grad_scale,
            };
            stateless(
                stacked::StackedCtc { loss },
                move |log_probs, target| {
                    let (frames, n) = (log_probs.shape()[0], log_probs.shape()[1]);
                    let labels = target.shape()[1];
                    let (inputs, lengths) = stacked::ctc_lengths(frames, n, labels);
                    let targets: Vec<Vec<usize>> = target
                        .outer_iter()
                        .zip(&lengths)
                        .map(|(row, &len)| row.iter().take(len).map(|&l| l as usize).collect())
                        .collect();
                    wgloss_ref::ctc(
                        log_probs,
                        &targets,
                        &inputs,
                        blank as usize,
                        reduction.into_ref(),
                        zero_infinity,
                        grad_scale.into(),
                    )
                },
                grad_scale,
            )
        },
        bad_params: &[
            BadParam {
                param: "blank",
                build: |_| {
                    let loss = wgloss::Ctc {
                        blank: 6,
                        ..Default::default()
                    };
                    Ok(Box::new(stacked::StackedCtc { loss }))
                },
            },
            BadParam {
                param: "grad_scale",
                build: |_| {
                    let loss = wgloss::Ctc {
                        grad_scale: f32::NAN,
                        ..Default::default()
                    };
                    Ok(Box::new(stacked::StackedCtc { loss }))
                },
            },
        ],
        // Six classes, twelve frames, targets of up to four labels.
        layout: Layout::Sequences {
            classes: 6,
            frames: 12,
            labels: 4,
        },
        domain: (-6.0, 0.0),
        targets: Targets::Uniform,
        vec4: false,
        // The issue's shape: T = 500, N = 32, C = 64, targets of up to S = 100 labels.
        bench_shapes: &[&[500, 32, 64, 100]],
        ..F6
    },
    Entry {
        name: "kl_div",
        half: true,
        anchor: "torch kl_div",
        variants: &[
            "batchmean",
            "log_target",
            "batchmean,log_target,grad_scale=0.5",
        ],
        make: |_, v, reduction| {
            let (batchmean, log_target, grad_scale) =
                [(true, false, 1.0f32), (false, true, 1.0), (true, true, 0.5)][v];
            use wgloss::KlReduction as K;
            use wgloss_ref::KlReduction as R;
            let (gpu_reduction, ref_reduction) = match (reduction, batchmean) {
                (Reduction::Mean, true) => (K::BatchMean, R::BatchMean),
                (Reduction::Mean, false) => (K::Mean, R::Mean),
                (Reduction::Sum, _) => (K::Sum, R::Sum),
                (Reduction::None, _) => (K::None, R::None),
            };
            let loss = wgloss::KlDiv {
                reduction: gpu_reduction,
                log_target,
                grad_scale,
            };
            stateless(
                loss,
                move |p, t| {
                    let gs = grad_scale.into();
                    wgloss_ref::kl_div(p, t, ref_reduction, log_target, gs)
                },
                grad_scale,
            )
        },
        bad_params: &[BadParam {
            param: "grad_scale",
            build: |_| {
                Ok(Box::new(wgloss::KlDiv {
                    grad_scale: f32::NAN,
                    ..Default::default()
                }))
            },
        }],
        ..F6
    },
];

/// Defaults of the regression family's entries.
const F1: Entry = Entry {
    name: "",
    family: "F1 regression",
    anchor: "",
    variants: &["default"],
    reductions: &[Reduction::None, Reduction::Mean, Reduction::Sum],
    domain: (-3.0, 3.0),
    targets: Targets::Uniform,
    extreme_finite: true,
    tolerance: crate::check::ELEMENTWISE,
    extreme_tolerance: crate::check::ELEMENTWISE,
    vec4: true,
    half: false,
    half_copies: false,
    snap: None,
    limits_variant: 0,
    layout: Layout::Elementwise { row: 1 },
    jump: None,
    bench_shapes: &[],
    allows_empty: true,
    make: |_, _, _| unreachable!("every entry sets make"),
    bad_params: &[],
};

/// Defaults of the generative family's element-wise entries: log-probabilities in [−6, 0],
/// probabilities as targets.
const F6: Entry = Entry {
    family: "F6 generative",
    domain: (-6.0, 0.0),
    targets: Targets::Probability,
    ..F1
};

/// Defaults of the classification family's entries: logits in [−6, 6].
const F3: Entry = Entry {
    family: "F3 classification",
    domain: (-6.0, 6.0),
    targets: Targets::Sign,
    ..F1
};

/// A triplet loss mining in the batch (`mining`, margin, squared distances), its reference, and
/// the reference with the triplets mined at (pred0, labels) held fixed for finite differences.
fn mined_triplet(
    loss: Box<dyn wgloss::Loss>,
    mining: TripletMining,
    margin: f32,
    squared: bool,
) -> Instance {
    let m = margin.into();
    Instance {
        loss,
        reference: Box::new(move |e, y| {
            first_grad(wgloss_ref::triplet_mined(e, y, m, mining, squared, 1.0))
        }),
        freeze: Box::new(move |p0, y| {
            let triplets = wgloss_ref::mined_triplets(p0.view(), y.view(), mining, squared);
            Box::new(move |p| first_grad(wgloss_ref::triplet_fixed(p, &triplets, m, squared, 1.0)))
        }),
        grad_scale: 1.0,
        stateful: false,
    }
}

/// Defaults of the metric-learning family's entries: embeddings `[N, 3]` in [−2, 2], labels
/// from four classes (so that small batches have single-member classes and no positives).
const F5: Entry = Entry {
    family: "F5 metric learning",
    vec4: false,
    half: false,
    domain: (-2.0, 2.0),
    reductions: &[Reduction::Mean],
    layout: Layout::Embeddings {
        dim: 3,
        classes: 4,
        members: usize::MAX,
    },
    // A gradient row sums N terms c_ik x̂_k of both signs: in f32 its error is about
    // √N · 6e-8 of the largest term, 4e-6 at N = 4096.
    tolerance: crate::check::Tolerance {
        rtol: 1e-4,
        atol_frac: 2e-5,
    },
    // Rows of ±1e4 point in nearly the same directions: the normalisation's projection
    // (I − x̂x̂ᵀ) cancels most of each gradient row.
    extreme_tolerance: crate::check::Tolerance {
        rtol: 2e-3,
        atol_frac: 1e-4,
    },
    bench_shapes: &[&[8192, 256]],
    ..F1
};

/// The reference of a pair loss of margin: (x1, x2, y, margin, reduction, grad_scale).
type PairRef = fn(
    ArrayViewD<'_, f64>,
    ArrayViewD<'_, f64>,
    ArrayViewD<'_, f64>,
    f64,
    wgloss_ref::Reduction,
    f64,
) -> wgloss_ref::MultiGrad;

/// A stacked pair loss of `[margin, grad_scale]` and its reference.
fn pair_instance(
    loss: impl wgloss::TupleLoss + 'static,
    [margin, grad_scale]: [f32; 2],
    reduction: Reduction,
    reference: PairRef,
) -> wgloss::Result<Instance> {
    let (m, r, g) = (margin.into(), reduction.into_ref(), grad_scale.into());
    stateless(
        stacked::StackedTuple::new(loss),
        move |p, y| {
            let x = stacked::unstack(&p, 2);
            stacked::stacked(reference(x[0].clone(), x[1].clone(), y, m, r, g))
        },
        grad_scale,
    )
}

/// Defaults of the pair and triplet losses: pairs of rows `[N, 2]` (two dimensions: past the
/// binding limit a segment then needs more than 65,535 workgroups), every reduction, element
/// counts as the element-wise losses (their cost is O(N·D)).
const TUPLES: Entry = Entry {
    layout: Layout::Tuples {
        dim: 2,
        inputs: 2,
        target: true,
        all_pairs: false,
    },
    reductions: &[Reduction::Mean, Reduction::Sum, Reduction::None],
    tolerance: crate::check::Tolerance {
        rtol: 1e-4,
        atol_frac: 1e-6,
    },
    extreme_tolerance: crate::check::Tolerance {
        rtol: 1e-3,
        atol_frac: 1e-5,
    },
    bench_shapes: &[],
    ..F5
};

/// Each GAN objective in the library and in the reference.
const GAN_KINDS: [(wgloss::GanKind, wgloss_ref::GanKind); 5] = [
    (wgloss::GanKind::Minimax, wgloss_ref::GanKind::Minimax),
    (
        wgloss::GanKind::NonSaturating,
        wgloss_ref::GanKind::NonSaturating,
    ),
    (
        wgloss::GanKind::LeastSquares,
        wgloss_ref::GanKind::LeastSquares,
    ),
    (
        wgloss::GanKind::Wasserstein,
        wgloss_ref::GanKind::Wasserstein,
    ),
    (wgloss::GanKind::Hinge, wgloss_ref::GanKind::Hinge),
];

/// Defaults of the generative losses per row of one or more `[N, D]` inputs (the tuple kernel):
/// every reduction, over samples.
const GENERATIVE_ROWS: Entry = Entry {
    family: "F6 generative",
    ..TUPLES
};

/// Defaults of the margin heads: embeddings `[N, 3]` and class weights `[300, 3]` in [−2, 2]
/// (300 classes: two chunks of the class loop), labels uniform over the classes.
const HEADS: Entry = Entry {
    layout: Layout::Heads {
        dim: 3,
        classes: 300,
    },
    // Every input is the embeddings and the weights together; the gradients have the sums of
    // F5 (over C classes or N rows).
    bench_shapes: &[&[1024, 512, 100_000]],
    allows_empty: false,
    // A logit is s·cos with s up to 64: the cosine's f32 rounding, times s, moves each softmax
    // weight by ~1e-5 relative, and a gradient row sums C (or N) such terms of both signs.
    tolerance: crate::check::Tolerance {
        rtol: 1e-4,
        atol_frac: 1e-4,
    },
    // Inputs of ±1e4 in the suite's pattern make every row nearly parallel or antiparallel to
    // every other: cosines within 1e-4 of ±1, where ArcFace's ∂z/∂cos (∝ 1/sin θ) and the
    // normalisation's projection amplify the cosine's f32 rounding.
    extreme_tolerance: crate::check::Tolerance {
        rtol: 2e-2,
        atol_frac: 1e-3,
    },
    ..F5
};

/// The reference of a head of scale and margin (cosface, arcface).
type ScaleMarginRef = fn(
    ArrayViewD<'_, f64>,
    ArrayViewD<'_, f64>,
    ArrayViewD<'_, f64>,
    f64,
    f64,
    f64,
) -> wgloss_ref::MultiGrad;

/// A stacked head of `[scale, margin, grad_scale]` and its reference.
fn scale_margin_head(
    head: impl wgloss::MarginHead + 'static,
    [scale, margin, grad_scale]: [f32; 3],
    reference: ScaleMarginRef,
) -> wgloss::Result<Instance> {
    let (s, m, g) = (scale.into(), margin.into(), grad_scale.into());
    stateless(
        crate::stacked::Stacked { head },
        move |p, y| {
            let (e, w) = crate::stacked::split(&p, &y);
            crate::stacked::stacked(reference(e, w, y, s, m, g))
        },
        grad_scale,
    )
}

/// Sinkhorn's reference in the stacked form: the final step at live points `pred` with the
/// loop's potentials and the costs' second arguments held at `pred0` (what the gradient
/// differentiates; at `pred = pred0` it is the divergence and its gradient).
fn sinkhorn_step(
    config: &wgloss_ref::SinkhornConfig,
    weighted: bool,
    grad_scale: f64,
    pred0: ArrayViewD<'_, f64>,
    weights: ArrayViewD<'_, f64>,
    pred: ArrayViewD<'_, f64>,
) -> LossGrad {
    let x0 = stacked::unstack(&pred0, 2);
    let x = stacked::unstack(&pred, 2);
    let w = stacked::unstack(&weights, 2);
    let out = wgloss_ref::sinkhorn_final_step(
        x0[0].view(),
        x0[1].view(),
        weighted.then(|| w[0].view()),
        weighted.then(|| w[1].view()),
        config,
        x[0].view(),
        x[1].view(),
        grad_scale,
    );
    stacked::stacked(out)
}

/// The reference's loss and its gradient w.r.t. the first input (the embeddings).
fn first_grad(m: wgloss_ref::MultiGrad) -> LossGrad {
    let grad = m.grads.into_iter().next().expect("one gradient per input");
    LossGrad { loss: m.loss, grad }
}

/// An instance of a loss without state: the reference is a pure function.
fn stateless(
    loss: impl Loss + 'static,
    reference: impl Fn(ArrayViewD<'_, f64>, ArrayViewD<'_, f64>) -> LossGrad + Clone + 'static,
    grad_scale: f32,
) -> wgloss::Result<Instance> {
    let frozen = reference.clone();
    Ok(Instance {
        loss: Box::new(loss),
        reference: Box::new(reference),
        freeze: Box::new(move |_, t| {
            let (t, f) = (t.clone(), frozen.clone());
            Box::new(move |p| f(p, t.view()))
        }),
        grad_scale: grad_scale.into(),
        stateful: false,
    })
}

/// The reference crate's name for a reduction.
pub trait IntoRef {
    fn into_ref(self) -> wgloss_ref::Reduction;
}

impl IntoRef for Reduction {
    fn into_ref(self) -> wgloss_ref::Reduction {
        match self {
            Reduction::None => wgloss_ref::Reduction::None,
            Reduction::Mean => wgloss_ref::Reduction::Mean,
            Reduction::Sum => wgloss_ref::Reduction::Sum,
        }
    }
}
