//! Benchmark runner behind `cargo xtask bench` and `cargo xtask list`.
//!
//! Every registered loss runs fused forward+backward (default parameters, reduction mean) at 1M
//! and 16M elements on the adapter the environment selects. Kernel time comes from timestamp
//! queries around a batch of calls where the adapter has them, else from the wall clock around
//! the submission of a batch. Effective bandwidth counts the minimal bytes: both inputs read once
//! and the gradient written once (12 bytes per element). A plain copy kernel of the same size
//! (8 bytes per element), in the same run, is the roofline the ratio refers to: the faster of a
//! one-element and a four-element-per-step copy, each timed in rounds alternating with the loss.
//! The reports: `report.md` (the table), `report.json` and `report.svg` (the ratios as bars).

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wgloss::{DType, Gpu, Reduction, Tensor};
use wgloss_suite::check::Rng;
use wgloss_suite::registry::{Inputs, Layout};
use wgloss_suite::{Entry, REGISTRY};

struct Row {
    name: String,
    elements: usize,
    seconds: f64,
    bytes: f64,
    /// Bandwidth of the copy kernel measured alongside this row.
    copy_gbps: f64,
    /// Device memory the call allocates for itself (scratch), when the backend reports it.
    call_bytes: Option<u64>,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes / self.seconds / 1e9
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for e in REGISTRY {
                println!("{}\t{}\t{}", e.name, e.family, e.anchor);
            }
            Ok(())
        }
        Some("bench") => bench(&args[1..]),
        _ => bail!("usage: wgloss-bench list | bench [--backend B] [--filter NAME] [--quick]"),
    }
}

/// Records `calls` calls of `record` into one encoder, submits, waits, and returns the seconds
/// the batch took: from timestamp queries where the adapter has them, else the wall clock around
/// submission and wait.
fn time_batch(gpu: &Gpu, calls: usize, record: &mut Recorder<'_>) -> Result<f64> {
    let timestamps = gpu.device().features().contains(
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
    );
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let queries = timestamps.then(|| {
        let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        (set, resolve)
    });
    if let Some((set, _)) = &queries {
        encoder.write_timestamp(set, 0);
    }
    for _ in 0..calls {
        record(&mut encoder)?;
    }
    if let Some((set, resolve)) = &queries {
        encoder.write_timestamp(set, 1);
        encoder.resolve_query_set(set, 0..2, resolve, 0);
    }
    let start = Instant::now();
    gpu.submit_and_wait(encoder)?;
    let wall = start.elapsed().as_secs_f64();
    Ok(match &queries {
        Some((_, resolve)) => {
            let t = Tensor::new(resolve.clone(), 0, &[4])?.to_vec(gpu)?;
            let ticks: [u64; 2] = bytemuck::cast([t[0], t[1], t[2], t[3]]);
            let ns = ticks[1].wrapping_sub(ticks[0]) as f64
                * f64::from(gpu.queue().get_timestamp_period());
            if ns > 0.0 {
                ns * 1e-9
            } else {
                wall
            }
        }
        None => wall,
    })
}

type Recorder<'a> = dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()> + 'a;

/// Seconds per call of each recorder: a warm-up, batches sized to about 50 ms, and rounds that
/// alternate between the recorders so that both see the same machine conditions; the best
/// round of each counts.
fn time_paired(gpu: &Gpu, recorders: &mut [&mut Recorder<'_>]) -> Result<Vec<f64>> {
    let mut calls = Vec::new();
    let mut onces = Vec::new();
    for r in recorders.iter_mut() {
        let once = time_batch(gpu, 1, *r)?;
        onces.push(once);
        calls.push(((0.05 / once.max(1e-7)) as usize).clamp(1, 200));
    }
    let slowest = onces.iter().fold(0.0f64, |a, &b| a.max(b));
    // Calls of seconds (all-pairs losses on a software adapter): fewer rounds, and for calls of
    // minutes the first timed call alone (the caller has run one call before, which compiled
    // the pipelines).
    let rounds = match slowest {
        s if s > 20.0 => 0,
        s if s > 2.0 => 2,
        _ => 5,
    };
    let mut best = vec![f64::INFINITY; recorders.len()];
    if rounds == 0 {
        return Ok(onces);
    }
    for _ in 0..rounds {
        for (i, r) in recorders.iter_mut().enumerate() {
            best[i] = best[i].min(time_batch(gpu, calls[i], *r)? / calls[i] as f64);
        }
    }
    Ok(best)
}

fn bench(args: &[String]) -> Result<()> {
    let mut filter = None;
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => filter = Some(it.next().context("--filter needs a value")?.clone()),
            "--quick" => quick = true,
            "--backend" => {
                it.next();
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let gpu = Gpu::new()?;
    let adapter = gpu.adapter_name();
    println!("adapter: {adapter}");
    let sizes: &[usize] = if quick {
        &[1 << 16]
    } else {
        &[1 << 20, 1 << 24]
    };
    let selected: Vec<&Entry> = REGISTRY
        .iter()
        .filter(|e| filter.as_ref().is_none_or(|f| e.name.contains(f.as_str())))
        .collect();
    let mut rows = Vec::new();
    let mut copies = Vec::new();
    for &n in sizes {
        let mut best_copy = f64::INFINITY;
        for entry in &selected {
            if entry.layout.on_grid() {
                // All pairs of the batch: benchmarked at its own shapes only.
                continue;
            }
            let inputs = entry.inputs(n, 2);
            let row = measure(
                &gpu,
                entry,
                entry.name.into(),
                &inputs,
                DType::F32,
                &mut best_copy,
            )?;
            rows.push(row);
            for dtype in half_types(entry) {
                let name = format!("{} {}", entry.name, format!("{dtype:?}").to_lowercase());
                rows.push(measure(&gpu, entry, name, &inputs, dtype, &mut best_copy)?);
            }
        }
        if best_copy.is_finite() {
            copies.push(copy_row(n, best_copy));
        }
    }
    if !quick {
        for entry in &selected {
            for shape in entry.bench_shapes {
                let inputs = entry.inputs_shaped(shape, 2);
                for dtype in [DType::F32].into_iter().chain(half_types(entry)) {
                    let name = match dtype {
                        DType::F32 => format!("{} {shape:?}", entry.name),
                        _ => format!(
                            "{} {shape:?} {}",
                            entry.name,
                            format!("{dtype:?}").to_lowercase()
                        ),
                    };
                    let mut best_copy = f64::INFINITY;
                    rows.push(measure(&gpu, entry, name, &inputs, dtype, &mut best_copy)?);
                }
            }
        }
    }
    write_reports(&adapter, &copies, &rows)
}

/// The 16-bit types a loss is benchmarked in besides f32: both where its kernels take them
/// (not through f32 copies).
fn half_types(entry: &Entry) -> Vec<DType> {
    if entry.half && !entry.half_copies {
        vec![DType::F16, DType::BF16]
    } else {
        Vec::new()
    }
}

fn copy_row(n: usize, seconds: f64) -> Row {
    Row {
        name: "copy".into(),
        elements: n,
        seconds,
        bytes: 8.0 * n as f64,
        copy_gbps: 8.0 * n as f64 / seconds / 1e9,
        call_bytes: Some(0),
    }
}

/// Times one loss on `inputs` (predictions and value targets stored as `dtype`) against the f32
/// copies of as many elements as its prediction, alternating rounds, and prints its row.
fn measure(
    gpu: &Gpu,
    entry: &Entry,
    name: String,
    inputs: &Inputs,
    dtype: DType,
    best_copy: &mut f64,
) -> Result<Row> {
    let len = inputs.pred.len();
    // The vec4 copy moves whole aligned units: round the copy down to a multiple of 64.
    let n = (len / 64 * 64).max(64);
    let src = Tensor::from_slice(gpu, &Rng::new(1).uniform(n, -1.0, 1.0), &[n])?;
    let dst = Tensor::zeros(gpu, &[n])?;
    // Two copies, one and four elements per step: the faster is the roofline.
    let mut copy =
        |enc: &mut wgpu::CommandEncoder| Ok(wgloss::encode_copy(gpu, enc, &src, &dst, false)?);
    let mut copy4 =
        |enc: &mut wgpu::CommandEncoder| Ok(wgloss::encode_copy(gpu, enc, &src, &dst, true)?);
    let inst = (entry.make)(gpu, 0, Reduction::Mean)?;
    let (mut pred, mut target) = inputs.upload(gpu)?;
    if dtype != DType::F32 {
        pred = Tensor::from_slice_as(gpu, &inputs.pred, &inputs.pred_shape, dtype)?;
        if target.dtype() == DType::F32 && !matches!(entry.layout, Layout::Classes { .. }) {
            target = Tensor::from_slice_as(gpu, &inputs.target, &inputs.target_shape, dtype)?;
        }
    }
    let out = inst.loss.output_for(gpu, &pred, &target)?;
    // Inputs read once, the gradient written once, each in its stored type.
    let bytes = (2 * pred.byte_len() + target.byte_len()) as f64;
    // What one call allocates beyond its inputs and outputs: the allocator's total while the
    // call's buffers are alive (recorded, not yet submitted) minus the total before it.
    let allocated = || {
        gpu.device()
            .generate_allocator_report()
            .map(|r| r.total_allocated_bytes)
    };
    let before = allocated();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    inst.loss.encode(gpu, &mut encoder, &pred, &target, &out)?;
    let call_bytes = before.zip(allocated()).map(|(b, a)| a.saturating_sub(b));
    gpu.submit_and_wait(encoder)?;
    let mut loss =
        |enc: &mut wgpu::CommandEncoder| Ok(inst.loss.encode(gpu, enc, &pred, &target, &out)?);
    let t = time_paired(gpu, &mut [&mut copy, &mut copy4, &mut loss])?;
    let (copy_seconds, seconds) = (t[0].min(t[1]), t[2]);
    *best_copy = best_copy.min(copy_seconds);
    let row = Row {
        name,
        elements: len,
        seconds,
        bytes,
        copy_gbps: 8.0 * n as f64 / copy_seconds / 1e9,
        call_bytes,
    };
    println!(
        "{:<40} {:>10} {:>10.1} us {:>8.2} GB/s {:>6.0} % of copy ({:.2} GB/s) {}",
        row.name,
        label(len),
        row.seconds * 1e6,
        row.gbps(),
        100.0 * row.gbps() / row.copy_gbps,
        row.copy_gbps,
        mib(row.call_bytes)
    );
    Ok(row)
}

/// A byte count in MiB, or "n/a" where the backend reports no allocations.
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

fn write_reports(adapter: &str, copies: &[Row], rows: &[Row]) -> Result<()> {
    let dir = match std::env::var_os("WGLOSS_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wgloss-bench"),
    };
    std::fs::create_dir_all(&dir)?;
    let mut md = format!(
        "Adapter: {adapter}\n\n| loss | elements | time (µs) | effective GB/s | paired copy GB/s | % of copy | allocated by the call |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    let mut json = format!("{{\n  \"adapter\": {adapter:?},\n  \"copy\": [");
    for (i, c) in copies.iter().enumerate() {
        writeln!(
            md,
            "| copy | {} | {:.1} | {:.2} | {:.2} | 100 | 0 |",
            label(c.elements),
            c.seconds * 1e6,
            c.gbps(),
            c.gbps()
        )?;
        let sep = if i == 0 { "" } else { "," };
        write!(
            json,
            "{sep}\n    {{\"elements\": {}, \"seconds\": {:e}, \"gbps\": {:.3}}}",
            c.elements,
            c.seconds,
            c.gbps()
        )?;
    }
    json.push_str("\n  ],\n  \"losses\": [");
    for (i, r) in rows.iter().enumerate() {
        let ratio = r.gbps() / r.copy_gbps;
        writeln!(
            md,
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {} |",
            r.name,
            label(r.elements),
            r.seconds * 1e6,
            r.gbps(),
            r.copy_gbps,
            100.0 * ratio,
            mib(r.call_bytes)
        )?;
        let sep = if i == 0 { "" } else { "," };
        write!(
            json,
            "{sep}\n    {{\"loss\": {:?}, \"elements\": {}, \"seconds\": {:e}, \"gbps\": {:.3}, \"copy_gbps\": {:.3}, \"copy_ratio\": {:.4}, \"call_bytes\": {}}}",
            r.name,
            r.elements,
            r.seconds,
            r.gbps(),
            r.copy_gbps,
            ratio,
            r.call_bytes.map_or("null".into(), |b| b.to_string())
        )?;
    }
    json.push_str("\n  ]\n}\n");
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(dir.join("report.json"), &json)?;
    std::fs::write(dir.join("report.svg"), svg_chart(adapter, rows)?)?;
    println!("\nwrote {}", dir.join("report.md").display());
    Ok(())
}

/// A bar per row of its ratio to the paired copy kernel, with the copy's 100 % and 80 % of it
/// marked: the report at a glance.
fn svg_chart(adapter: &str, rows: &[Row]) -> Result<String, std::fmt::Error> {
    // Pixels: the names' column, the plot's width, a bar's pitch, the title's band.
    const LABEL: f64 = 340.0;
    const PLOT: f64 = 600.0;
    const BAR: f64 = 16.0;
    const TOP: f64 = 40.0;
    let pct = |r: &Row| 100.0 * r.gbps() / r.copy_gbps;
    // The axis reaches the largest ratio, and at least the copy's 100 %, in steps of 20 %.
    let most = rows.iter().map(pct).fold(100.0, f64::max);
    let axis = (most / 20.0).ceil() * 20.0;
    let scale = PLOT / axis;
    let (width, height) = (LABEL + PLOT + 60.0, TOP + BAR * rows.len() as f64 + 30.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"4\" y=\"16\" font-size=\"13\">Effective bandwidth as % of the copy kernel: {}</text>\n",
        escape(adapter)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + BAR * i as f64;
        let p = pct(r);
        let name = format!("{} {}", r.name, label(r.elements));
        // Past 80 %: the kernel is within reach of the copy's bandwidth.
        let fill = if p >= 80.0 { "#3a7d44" } else { "#c0803a" };
        writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL}\" y=\"{:.0}\" width=\"{:.1}\" height=\"{:.0}\" fill=\"{fill}\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\">{p:.0}</text>",
            LABEL - 6.0,
            y + BAR - 4.0,
            escape(&name),
            y + 2.0,
            p.max(0.0) * scale,
            BAR - 4.0,
            LABEL + p.max(0.0) * scale + 4.0,
            y + BAR - 4.0,
        )?;
    }
    let bottom = TOP + BAR * rows.len() as f64;
    for (mark, dash) in [(80.0, "4 3"), (100.0, "none")] {
        let x = LABEL + mark * scale;
        writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{:.0}\" x2=\"{x:.1}\" y2=\"{bottom:.0}\" stroke=\"#333\" stroke-dasharray=\"{dash}\"/>\
             <text x=\"{x:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{mark:.0} %</text>",
            TOP - 4.0,
            bottom + 16.0,
        )?;
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// `text` with XML's special characters escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, seconds: f64) -> Row {
        Row {
            name: name.into(),
            elements: 1 << 20,
            seconds,
            bytes: 12.0 * (1 << 20) as f64,
            copy_gbps: 10.0,
            call_bytes: None,
        }
    }

    /// One bar per row, as long as its ratio on an axis that reaches the largest one; names
    /// and the adapter escaped.
    #[test]
    fn chart_has_a_bar_per_row_scaled_to_the_largest_ratio() {
        // 12 MiB in 1.2583 ms: 10 GB/s, 100 %; in 2.5166 ms, 50 %; in 1.0486 ms, 120 %.
        let rows = [
            row("a<b", 1.2583e-3),
            row("c", 2.5166e-3),
            row("d", 1.0486e-3),
        ];
        let svg = svg_chart("x & y", &rows).unwrap();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("a&lt;b 1M") && svg.contains("x &amp; y"));
        // The axis ends at 120 %: 600 px, so 100 % is 500 px and 50 % 250 px.
        let widths: Vec<f64> = svg
            .match_indices("width=\"")
            .skip(1)
            .map(|(at, _)| {
                let rest = &svg[at + 7..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(widths.len(), 3);
        for (got, want) in widths.iter().zip([500.0, 250.0, 600.0]) {
            assert!((got - want).abs() < 0.5, "{widths:?}");
        }
    }
}
