//! Criterion benches over the loss registry: every loss, fused forward+backward (default
//! parameters, reduction mean), named `<loss>/<size>`, with the minimal bytes (inputs read once,
//! gradient written once) as throughput, plus the copy kernel as the roofline. Each sample
//! records `iters` calls into one encoder and times the submission until the device is idle.
//! Under `WGPU_TESTING=1` the sizes shrink to a smoke run.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgloss::{Gpu, Reduction, Tensor};
use wgloss_suite::check::Rng;
use wgloss_suite::{shared_gpu, REGISTRY};

fn timed(gpu: &Gpu, iters: u64, record: &mut dyn FnMut(&mut wgpu::CommandEncoder)) -> Duration {
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    for _ in 0..iters {
        record(&mut encoder);
    }
    let start = Instant::now();
    gpu.submit_and_wait(encoder).expect("submission succeeds");
    start.elapsed()
}

fn losses(c: &mut Criterion) {
    let Some(gpu) = shared_gpu() else { return };
    let sizes: &[(usize, &str)] = if std::env::var_os("WGPU_TESTING").is_some() {
        &[(1 << 12, "4K")]
    } else {
        &[(1 << 20, "1M")]
    };
    let mut group = c.benchmark_group("wgloss");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for &(n, label) in sizes {
        let src = Tensor::from_slice(gpu, &Rng::new(1).uniform(n, -1.0, 1.0), &[n]).unwrap();
        let dst = Tensor::zeros(gpu, &[n]).unwrap();
        group.throughput(Throughput::Bytes(8 * n as u64));
        group.bench_function(format!("copy/{label}"), |b| {
            b.iter_custom(|iters| {
                timed(gpu, iters, &mut |enc| {
                    wgloss::encode_copy(gpu, enc, &src, &dst, gpu.vec4()).unwrap()
                })
            })
        });
        for entry in REGISTRY {
            let inst = (entry.make)(gpu, 0, Reduction::Mean).unwrap();
            let inputs = entry.inputs(n, 2);
            let (pred, target) = inputs.upload(gpu).unwrap();
            let out = inst.loss.output(gpu, pred.shape(), target.shape()).unwrap();
            group.throughput(Throughput::Bytes(inputs.bytes() as u64));
            group.bench_function(format!("{}/{label}", entry.name), |b| {
                b.iter_custom(|iters| {
                    timed(gpu, iters, &mut |enc| {
                        inst.loss.encode(gpu, enc, &pred, &target, &out).unwrap()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, losses);
criterion_main!(benches);
