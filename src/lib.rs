//! The loss registry and the tools the conformance suite (`tests/`) and the benchmarks
//! (`benches/`, `cargo xtask bench`) share: every implemented loss is one [`Entry`] of
//! [`REGISTRY`], which knows how to build the GPU loss and its f64 reference for each parameter
//! variant. Tests and benches iterate it; nothing is written per loss by hand.

pub mod check;
pub mod registry;
pub mod stacked;

pub use registry::{Entry, Instance, REGISTRY};

use std::sync::OnceLock;

/// The GPU shared by every test and bench of this process: the adapter the environment selects.
///
/// Without an adapter this fails with the install hint, unless `WGLOSS_ALLOW_NO_GPU=1` is set,
/// in which case `None` is returned and GPU checks are skipped with a message.
pub fn shared_gpu() -> Option<&'static wgloss::Gpu> {
    static GPU: OnceLock<Result<wgloss::Gpu, String>> = OnceLock::new();
    match GPU.get_or_init(|| wgloss::Gpu::new().map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var("WGLOSS_ALLOW_NO_GPU").as_deref() == Ok("1") => {
            eprintln!("skipping GPU check (WGLOSS_ALLOW_NO_GPU=1): {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Polls a future that wgpu's native backends complete at once.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// A device whose storage bindings hold 1 MiB, so that small batches run in chunks, with a GPU's
/// walks (whole-workgroup lanes, recursions of 256 invocations) and workgroup counts whatever the
/// adapter, so that a CPU adapter runs those too.
pub fn small_binding_gpu() -> Option<&'static wgloss::Gpu> {
    static GPU: OnceLock<wgloss::Gpu> = OnceLock::new();
    made_once(&GPU, || restricted_gpu(None))
}

/// As [`small_binding_gpu`], with storage and uniform views aligned to 256 bytes, as under
/// wgpu's default limits (`wgpu::Limits::default()`, which a caller's device may have).
pub fn wide_alignment_gpu() -> Option<&'static wgloss::Gpu> {
    static GPU: OnceLock<wgloss::Gpu> = OnceLock::new();
    made_once(&GPU, || restricted_gpu(Some(256)))
}

/// The 1 MiB-binding devices: [`small_binding_gpu`] and [`wide_alignment_gpu`].
pub fn small_binding_gpus() -> Vec<&'static wgloss::Gpu> {
    [small_binding_gpu(), wide_alignment_gpu()]
        .into_iter()
        .flatten()
        .collect()
}

/// A device with wgpu's default limits (`wgpu::DeviceDescriptor::default()`), as a caller's
/// engine may create it and hand it to [`wgloss::Gpu::from_wgpu`]: eight storage buffers per
/// shader stage, 256-byte view alignment, 128 MiB bindings.
pub fn default_limits_gpu() -> Option<&'static wgloss::Gpu> {
    static GPU: OnceLock<wgloss::Gpu> = OnceLock::new();
    made_once(&GPU, || limited_gpu(wgpu::Limits::default()))
}

/// As [`default_limits_gpu`] with seven storage buffers per shader stage, one fewer than the
/// kernels may bind ([`wgloss::Gpu::STORAGE_BUFFERS`]).
pub fn few_storage_buffers_gpu() -> Option<&'static wgloss::Gpu> {
    static GPU: OnceLock<wgloss::Gpu> = OnceLock::new();
    made_once(&GPU, || {
        limited_gpu(wgpu::Limits {
            max_storage_buffers_per_shader_stage: wgloss::Gpu::STORAGE_BUFFERS - 1,
            ..Default::default()
        })
    })
}

/// A device of the adapter with `limits`, through [`wgloss::Gpu::from_wgpu`].
fn limited_gpu(limits: wgpu::Limits) -> wgloss::Gpu {
    let descriptor = wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    };
    let (device, queue) =
        block_on(adapter().request_device(&descriptor)).expect("a device with the given limits");
    wgloss::Gpu::from_wgpu(device, queue)
}

/// The device `cell` holds, made by `make` on first use; `None` where [`shared_gpu`] skips GPU
/// checks.
fn made_once(
    cell: &'static OnceLock<wgloss::Gpu>,
    make: impl FnOnce() -> wgloss::Gpu,
) -> Option<&'static wgloss::Gpu> {
    shared_gpu()?;
    Some(cell.get_or_init(make))
}

/// The adapter the environment selects, else the fallback adapter.
fn adapter() -> wgpu::Adapter {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        force_fallback_adapter: false,
        ..Default::default()
    }))
    .or_else(|_| {
        block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            force_fallback_adapter: true,
            ..Default::default()
        }))
    })
    .expect("an adapter")
}

/// A device of 1 MiB storage bindings (and views aligned to `align` bytes, where given) with a
/// GPU's walks and workgroup counts.
fn restricted_gpu(align: Option<u32>) -> wgloss::Gpu {
    let adapter = adapter();
    let limits = adapter.limits();
    let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("small bindings"),
        required_limits: wgpu::Limits {
            max_storage_buffer_binding_size: 1 << 20,
            min_storage_buffer_offset_alignment:
                align.unwrap_or(limits.min_storage_buffer_offset_alignment),
            min_uniform_buffer_offset_alignment:
                align.unwrap_or(limits.min_uniform_buffer_offset_alignment),
            ..limits
        },
        ..Default::default()
    }))
    .expect("a device");
    wgloss::Gpu::from_wgpu(device, queue)
        .with_lanes(256)
        .with_max_workgroups(wgloss::Gpu::GPU_MAX_WORKGROUPS)
}
