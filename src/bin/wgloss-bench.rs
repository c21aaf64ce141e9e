//! Benchmark runner behind `cargo xtask bench` and `cargo xtask list`.
//!
//! Every registered loss runs fused forward+backward (default parameters, reduction mean) at 1M
//! and 16M elements on the adapter the environment selects. Kernel time comes from timestamp
//! queries around a batch of calls where the adapter has them, else from the wall clock around
//! the submission of a batch. Effective bandwidth counts the minimal bytes: both inputs read once
//! and the gradient written once (12 bytes per element). A plain copy kernel of the same size
//! (8 bytes per element), in the same run, is the roofline the ratio refers to.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wgloss::{Gpu, LossOutput, Reduction, Tensor};
use wgloss_suite::check::Rng;
use wgloss_suite::REGISTRY;

struct Row {
    name: String,
    elements: usize,
    seconds: f64,
    bytes: f64,
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

/// Times `record` (which records one call into the encoder) and returns seconds per call.
fn time_per_call(
    gpu: &Gpu,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let timestamps = gpu.device().features().contains(
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
    );
    let batch = |calls: usize,
                 record: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>|
     -> Result<f64> {
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
                let ns = (ticks[1].wrapping_sub(ticks[0])) as f64
                    * f64::from(gpu.queue().get_timestamp_period());
                if ns > 0.0 {
                    ns * 1e-9
                } else {
                    wall
                }
            }
            None => wall,
        })
    };
    // Warm-up (pipeline compilation, first touch), then size batches to about 50 ms.
    let once = batch(1, &mut record)?;
    let calls = ((0.05 / once.max(1e-7)) as usize).clamp(1, 200);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(batch(calls, &mut record)? / calls as f64);
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
    let mut rows = Vec::new();
    let mut copies = Vec::new();
    for &n in sizes {
        let src = Tensor::from_slice(&gpu, &Rng::new(1).uniform(n, -1.0, 1.0), &[n])?;
        let dst = Tensor::zeros(&gpu, &[n])?;
        let seconds = time_per_call(&gpu, |enc| Ok(wgloss::encode_copy(&gpu, enc, &src, &dst)?))?;
        let copy = Row {
            name: "copy".into(),
            elements: n,
            seconds,
            bytes: 8.0 * n as f64,
        };
        println!(
            "{:<28} {:>10} {:>10.1} us {:>8.1} GB/s",
            "copy",
            label(n),
            seconds * 1e6,
            copy.gbps()
        );
        copies.push(copy);
        for entry in REGISTRY {
            if filter
                .as_ref()
                .is_some_and(|f| !entry.name.contains(f.as_str()))
            {
                continue;
            }
            let inst = (entry.make)(&gpu, 0, Reduction::Mean)?;
            let shape = entry.shape(n);
            let len: usize = shape.iter().product();
            let mut rng = Rng::new(2);
            let (lo, hi) = entry.domain;
            let pred = Tensor::from_slice(&gpu, &rng.uniform(len, lo, hi), &shape)?;
            let target = Tensor::from_slice(&gpu, &rng.uniform(len, lo, hi), &shape)?;
            let out = LossOutput::new(&gpu, &shape, inst.loss.reduction())?;
            let seconds = time_per_call(&gpu, |enc| {
                Ok(inst.loss.encode(&gpu, enc, &pred, &target, &out)?)
            })?;
            let row = Row {
                name: entry.name.into(),
                elements: len,
                seconds,
                bytes: 12.0 * len as f64,
            };
            println!(
                "{:<28} {:>10} {:>10.1} us {:>8.1} GB/s {:>6.0} % of copy",
                entry.name,
                label(len),
                seconds * 1e6,
                row.gbps(),
                100.0 * row.gbps() / copies.last().map_or(f64::NAN, Row::gbps)
            );
            rows.push(row);
        }
    }
    write_reports(&adapter, &copies, &rows)
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

fn write_reports(adapter: &str, copies: &[Row], rows: &[Row]) -> Result<()> {
    let copy_for = |n: usize| {
        copies
            .iter()
            .find(|c| c.elements == n || (n / 4) * 4 == c.elements)
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wgloss-bench");
    std::fs::create_dir_all(&dir)?;
    let mut md = format!(
        "Adapter: {adapter}\n\n| loss | elements | time (µs) | effective GB/s | % of copy |\n|---|---:|---:|---:|---:|\n"
    );
    let mut json = format!("{{\n  \"adapter\": {adapter:?},\n  \"copy\": [");
    for (i, c) in copies.iter().enumerate() {
        writeln!(
            md,
            "| copy | {} | {:.1} | {:.1} | 100 |",
            label(c.elements),
            c.seconds * 1e6,
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
        let ratio = copy_for(r.elements).map_or(f64::NAN, |c| r.gbps() / c.gbps());
        writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {:.0} |",
            r.name,
            label(r.elements),
            r.seconds * 1e6,
            r.gbps(),
            100.0 * ratio
        )?;
        let sep = if i == 0 { "" } else { "," };
        write!(
            json,
            "{sep}\n    {{\"loss\": {:?}, \"elements\": {}, \"seconds\": {:e}, \"gbps\": {:.3}, \"copy_ratio\": {:.4}}}",
            r.name,
            r.elements,
            r.seconds,
            r.gbps(),
            ratio
        )?;
    }
    json.push_str("\n  ]\n}\n");
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(dir.join("report.json"), &json)?;
    println!("\nwrote {}", dir.join("report.md").display());
    Ok(())
}
