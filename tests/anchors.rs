//! The losses against their anchors' own numbers: `tests/anchors/*.txt` hold loss values and
//! gradients computed by the anchors (torch, torchvision, optax, geomloss, smp, kornia,
//! pytorch-metric-learning, mmdet, AdaFace's and RetinaMask's code in float64; TensorFlow
//! Addons in float32, its only precision) on float32 inputs (`tests/anchors/generate.py` writes
//! them). Each case names a registry entry, a variant and a reduction; the f64 reference must
//! agree with the anchor to rounding, and the GPU kernels within the entry's tolerances. A
//! fixture of no case, an unknown entry or a malformed line fails the test.

use ndarray::{ArrayD, IxDyn};
use wgloss::{DType, Reduction};
use wgloss_ref::LossGrad;
use wgloss_suite::check::{compare_f64, compare_output, loss_tolerance, to_f64, Tolerance};
use wgloss_suite::registry::{Entry, REGISTRY};
use wgloss_suite::shared_gpu;

/// The reference against an anchor evaluated in float64: the same formula up to rounding and
/// summation order (a stable form may differ from the anchor's by a few ulps of the terms it
/// cancels).
const REFERENCE: Tolerance = Tolerance {
    rtol: 1e-10,
    atol_frac: 1e-12,
};

/// One array of a case: its shape and values.
struct Values {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// One fixture case: what it runs and what the anchor computed.
struct Case {
    entry: &'static Entry,
    /// The shape the entry's layout is given (`Entry::inputs_shaped`), where it differs from
    /// the prediction's (inputs stacked into one prediction: clouds, tuples, heads).
    layout: Option<Vec<usize>>,
    /// Probability targets of the prediction's shape where the entry's layout has labels
    /// (cross-entropy).
    probs: bool,
    /// The reference's tolerance against the anchor: [`REFERENCE`] unless the fixture sets
    /// one (`reference-tolerance RTOL ATOL_FRAC`) for an anchor that computes in float32.
    reference: Tolerance,
    variant: usize,
    reduction: Reduction,
    pred: Values,
    target: Values,
    labels: bool,
    loss: Values,
    grad: Values,
}

fn parse_values(line: &str, key: &str) -> Result<(Values, bool), String> {
    let mut words = line.split_whitespace();
    let (Some(k), Some(kind), Some(shape)) = (words.next(), words.next(), words.next()) else {
        return Err(format!("short line: {line:.60}"));
    };
    if k != key {
        return Err(format!("expected `{key}`, found `{k}`"));
    }
    let shape: Vec<usize> = match shape {
        "scalar" => Vec::new(),
        s => s
            .split('x')
            .map(|d| d.parse().map_err(|e| format!("{key} shape {s}: {e}")))
            .collect::<Result<_, _>>()?,
    };
    let data: Vec<f64> = words
        .map(|w| w.parse().map_err(|e| format!("{key} value {w}: {e}")))
        .collect::<Result<_, _>>()?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(format!("{key}: {} values for shape {shape:?}", data.len()));
    }
    Ok((Values { shape, data }, kind == "i32"))
}

fn parse(text: &str) -> Result<Vec<Case>, String> {
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let mut cases = Vec::new();
    let mut reference = REFERENCE;
    while let Some(head) = lines.next() {
        let words: Vec<&str> = head.split_whitespace().collect();
        if let ["reference-tolerance", rtol, atol_frac] = words[..] {
            // An anchor that computes in float32 only: the reference is held to its rounding.
            let num = |w: &str| w.parse::<f64>().map_err(|e| format!("{head}: {e}"));
            reference = Tolerance {
                rtol: num(rtol)?,
                atol_frac: num(atol_frac)?,
            };
            continue;
        }
        let (name, variant, reduction, option) = match words[..] {
            ["case", name, variant, reduction] => (name, variant, reduction, None),
            ["case", name, variant, reduction, option] => (name, variant, reduction, Some(option)),
            _ => {
                return Err(format!(
                    "expected `case ENTRY VARIANT REDUCTION [layout=SHAPE | probs]`, found \
                     {head:.60}"
                ))
            }
        };
        let probs = option == Some("probs");
        let layout = match option.and_then(|o| o.strip_prefix("layout=")) {
            Some(dims) => Some(
                dims.split('x')
                    .map(|d| d.parse().map_err(|e| format!("{head}: {e}")))
                    .collect::<Result<Vec<usize>, String>>()?,
            ),
            None if option.is_some() && !probs => {
                return Err(format!("{head}: expected layout=SHAPE or probs"))
            }
            None => None,
        };
        let entry = REGISTRY
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("`{name}` is not registered"))?;
        let variant: usize = variant.parse().map_err(|e| format!("{head}: {e}"))?;
        if variant >= entry.variants.len() {
            return Err(format!(
                "{head}: {name} has {} variants",
                entry.variants.len()
            ));
        }
        let reduction = match reduction {
            "none" => Reduction::None,
            "mean" => Reduction::Mean,
            "sum" => Reduction::Sum,
            r => return Err(format!("{head}: unknown reduction {r}")),
        };
        let mut next = |key: &str| {
            let line = lines
                .next()
                .ok_or_else(|| format!("{head}: no `{key}` line"))?;
            parse_values(line, key)
        };
        let (pred, _) = next("pred")?;
        let (target, labels) = next("target")?;
        let (loss, _) = next("loss")?;
        let (grad, _) = next("grad")?;
        cases.push(Case {
            entry,
            layout,
            probs,
            reference,
            variant,
            reduction,
            pred,
            target,
            labels,
            loss,
            grad,
        });
    }
    Ok(cases)
}

fn array(v: &Values) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&v.shape), v.data.clone()).expect("checked by parse")
}

fn f32s(v: &Values) -> Vec<f32> {
    v.data.iter().map(|&x| x as f32).collect()
}

/// Runs one case on the reference and the GPU; the mismatches found.
fn check(gpu: &wgloss::Gpu, case: &Case) -> Vec<String> {
    let e = case.entry;
    let what = format!(
        "{} {} {:?}",
        e.name, e.variants[case.variant], case.reduction
    );
    let want = LossGrad {
        loss: array(&case.loss),
        grad: array(&case.grad),
    };
    let mut failures = Vec::new();
    // The entry's own input layout (labels, boxes), with the fixture's values.
    let mut inputs = e.inputs_shaped(case.layout.as_ref().unwrap_or(&case.pred.shape), 0);
    if case.probs {
        inputs.labels = false;
        inputs.target_shape = inputs.pred_shape.clone();
    }
    let labels = inputs.target_dtype() == DType::I32;
    if labels != case.labels
        || inputs.target_shape != case.target.shape
        || inputs.pred_shape != case.pred.shape
    {
        return vec![format!(
            "{what}: the fixture's pred {:?} and target {:?} (labels {}) are not the entry's \
             ({:?}, {:?}, labels {})",
            case.pred.shape,
            case.target.shape,
            case.labels,
            inputs.pred_shape,
            inputs.target_shape,
            labels
        )];
    }
    inputs.pred = f32s(&case.pred);
    inputs.target = f32s(&case.target);
    let mut instance = match (e.make)(gpu, case.variant, case.reduction) {
        Ok(i) => i,
        Err(err) => return vec![format!("{what}: {err}")],
    };
    let got = (instance.reference)(
        to_f64(&inputs.pred, &inputs.pred_shape).view(),
        to_f64(&inputs.target, &inputs.target_shape).view(),
    );
    for (part, g, w) in [
        ("loss", &got.loss, &want.loss),
        ("grad", &got.grad, &want.grad),
    ] {
        let what = format!("{what} reference {part}");
        let checked = if g.shape() == w.shape() {
            compare_f64(
                &what,
                &g.iter().copied().collect::<Vec<_>>(),
                w.view(),
                case.reference,
            )
        } else {
            Err(format!(
                "{what}: shape {:?}, expected {:?}",
                g.shape(),
                w.shape()
            ))
        };
        failures.extend(checked.err());
    }
    let run = inputs
        .upload(gpu)
        .and_then(|(p, t)| instance.loss.compute(gpu, &p, &t));
    match run {
        Ok(out) => failures.extend(compare_output(
            gpu,
            &format!("{what} GPU"),
            &out,
            &want,
            loss_tolerance(case.reduction),
            e.tolerance,
        )),
        Err(err) => failures.push(format!("{what} GPU: {err}")),
    }
    failures
}

/// The fixture files, one or more per anchor library (`tests/anchors/generate.py`).
const FIXTURES: &[&str] = &[
    "adaface",
    "geomloss",
    "kornia",
    "mmdet",
    "optax",
    "pml",
    "retinamask",
    "smp",
    "torch",
    "tf_addons",
    "torch_metric",
    "torchvision",
];

/// Every case of every fixture (`WGLOSS_ANCHORS=name` runs that file alone, listed or not);
/// fails listing every mismatch, and when the files present differ from [`FIXTURES`].
#[test]
fn losses_match_their_anchors() {
    let Some(gpu) = shared_gpu() else { return };
    let dir = format!("{}/tests/anchors", env!("CARGO_MANIFEST_DIR"));
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|f| {
            let name = f.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".txt")?.to_string())
        })
        .collect();
    present.sort();
    let only = std::env::var("WGLOSS_ANCHORS").ok();
    let mut failures = Vec::new();
    let mut count = 0;
    for name in &present {
        if only.as_ref().is_some_and(|o| o != name) {
            continue;
        }
        let path = format!("{dir}/{name}.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let cases = parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!cases.is_empty(), "{path}: no case");
        count += cases.len();
        failures.extend(
            cases
                .iter()
                .flat_map(|c| check(gpu, c))
                .map(|f| format!("{name}: {f}")),
        );
    }
    assert!(count > 0, "no fixture {only:?} in {dir}");
    assert!(
        failures.is_empty(),
        "{} checks failed over {count} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    if only.is_none() {
        let mut expected: Vec<&str> = FIXTURES.to_vec();
        expected.sort();
        assert_eq!(present, expected, "fixture files in {dir}");
    }
}
