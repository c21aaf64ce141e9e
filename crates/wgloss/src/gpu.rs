//! The GPU context: the one place that creates devices, plus the pipeline cache and the
//! submit / wait / download helpers every loss uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};

/// Printed whenever no adapter can be found.
pub const INSTALL_HINT: &str =
    "install a Vulkan driver, e.g. `apt-get install -y mesa-vulkan-drivers` \
(Mesa's software adapter lavapipe) on Debian/Ubuntu, or run `cargo xtask test`, which installs it";

/// Loop iterations one invocation may run in a dispatch. Software adapters (lavapipe) stop a
/// shader's loops after 65,535 iterations, the iterations of nested loops counting together, so
/// every kernel spreads its work over enough workgroups to stay well below.
pub(crate) const MAX_ITERATIONS: usize = 16_384;

/// The most classes a row may have for one invocation to take it whole: its two sweeps stay
/// within [`MAX_ITERATIONS`].
pub(crate) const MAX_WHOLE_ROW_CLASSES: usize = (MAX_ITERATIONS - 1) / 2;

/// Invocations per workgroup of every kernel (the shaders' `WG`).
pub(crate) const WG: usize = 256;

/// Key of a cached compute pipeline: kernel, entry point and override constants (booleans as
/// 0 and 1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: &'static str,
    pub entry: &'static str,
    pub overrides: Vec<(&'static str, u32)>,
}

/// A device and queue plus everything wgloss caches for them.
///
/// Create one with [`Gpu::new`] (adapter chosen from the environment) or adopt a caller's device
/// with [`Gpu::from_wgpu`]. Cloning is cheap and shares the cache.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
    max_workgroups: usize,
    vec4: bool,
    lanes: u32,
    whole_row_classes: usize,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    layouts: Mutex<HashMap<&'static str, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter_name())
            .finish()
    }
}

/// The value of the environment variable `name`, where it is set and parses.
fn env_setting<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gpu {
    /// Picks an adapter honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`,
    /// falling back to a software adapter when that is all there is, and requests a device with
    /// the adapter's real limits (storage binding and buffer sizes included).
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = Self::pick_adapter(&instance).await?;
        let wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgloss"),
                required_features: adapter.features() & wanted,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await?;
        Ok(Self::build(device, queue))
    }

    async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
        let no_adapter = |reason: String| Error::NoAdapter {
            reason,
            hint: INSTALL_HINT,
        };
        if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
            let wanted = wanted.to_lowercase();
            let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            return adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
                .ok_or_else(|| {
                    no_adapter(format!(
                        "WGPU_ADAPTER_NAME={wanted} matches none of {names:?}"
                    ))
                });
        }
        let power_preference = wgpu::PowerPreference::from_env().unwrap_or_default();
        let mut last = None;
        for force_fallback_adapter in [false, true] {
            match instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference,
                    force_fallback_adapter,
                    ..Default::default()
                })
                .await
            {
                Ok(adapter) => return Ok(adapter),
                Err(e) => last = Some(e.to_string()),
            }
        }
        Err(no_adapter(last.unwrap_or_default()))
    }

    /// Adopts a caller's device and queue, so wgloss lives inside an existing pipeline. Kernels
    /// respect the device's limits as they were requested, and take the same settings for the
    /// device's adapter (a CPU adapter's walks and workgroup counts) as [`Gpu::new`] would.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self::build(device, queue)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        // A CPU adapter (lavapipe) runs a workgroup's invocations as coroutines on one thread
        // per core of this host, where every barrier costs a round of switches and every
        // launched workgroup of a kernel with barriers costs its setup (about 8 µs on lavapipe):
        // a few workgroups per core, each striding over many elements, are fastest there (on
        // two cores 16 rather than 64: mse at 1M 2.0 -> 1.65 ms, the same at 16M; four per core
        // is faster still at 1M, but a pass that needs one workgroup more than that then loads
        // one core with more than the other, cross-entropy over 17 classes at 16M 98 -> 110 ms).
        // A GPU needs thousands of workgroups to fill its cores.
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let max_workgroups = env_setting("WGLOSS_MAX_WORKGROUPS")
            .filter(|&n: &usize| (1..=65_535).contains(&n))
            .unwrap_or(if cpu {
                (8 * cores).clamp(8, 64)
            } else {
                Self::GPU_MAX_WORKGROUPS
            });
        // 16-byte accesses, on every adapter.
        let vec4 = std::env::var("WGLOSS_VEC4").as_deref() != Ok("0");
        // A CPU adapter runs each group of SIMD-width invocations through its whole loop before
        // the next group starts: with a whole-workgroup stride each group would touch a few
        // bytes of every kilobyte of the block, so there neighbouring pairs of invocations walk
        // runs of their own (the fastest of 1-256 on lavapipe, for one- and four-element steps
        // alike). On a GPU the whole workgroup steps through its block together, each step one
        // coalesced access.
        let lanes = env_setting("WGLOSS_LANES")
            .filter(|&n: &u32| n.is_power_of_two() && n as usize <= WG)
            .unwrap_or(if cpu { 2 } else { WG as u32 });
        // A workgroup per class row pays a tree of barriers per row, which a CPU adapter runs as
        // a round of coroutine switches each (about 25 µs a row on lavapipe): there one
        // invocation takes every row its loop budget allows ([32768, 1000] 910 -> 145 ms,
        // [524288, 64] 13.2 -> 0.16 s, [4096, 8000] 209 -> 142 ms). A GPU gives rows of more
        // than a few classes a workgroup, whose invocations stream the row together.
        let whole_row_classes = env_setting("WGLOSS_WHOLE_ROW_CLASSES")
            .unwrap_or(if cpu {
                MAX_WHOLE_ROW_CLASSES
            } else {
                Self::GPU_WHOLE_ROW_CLASSES
            })
            .min(MAX_WHOLE_ROW_CLASSES);
        Self {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                modules: Mutex::default(),
                pipelines: Mutex::default(),
                layouts: Mutex::default(),
            }),
            max_workgroups,
            vec4,
            lanes,
            whole_row_classes,
        }
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.inner.device.limits()
    }

    /// Storage buffers per shader stage that the kernels bind at most, and so need: wgpu's
    /// default limit (its downlevel limits allow four).
    pub const STORAGE_BUFFERS: u32 = 8;

    /// Most workgroups one element-wise dispatch uses; invocations stride over the rest. Eight per
    /// core of this host (8 to 64) on a CPU adapter, 4096 otherwise; `WGLOSS_MAX_WORKGROUPS`
    /// overrides it (1..=65535).
    pub fn max_workgroups(&self) -> usize {
        self.max_workgroups
    }

    /// The default of [`Gpu::max_workgroups`] on a GPU adapter.
    pub const GPU_MAX_WORKGROUPS: usize = 4096;

    /// The same device and caches with [`Gpu::max_workgroups`] set explicitly (clamped to
    /// 1..=65535).
    pub fn with_max_workgroups(&self, workgroups: usize) -> Self {
        Self {
            max_workgroups: workgroups.clamp(1, 65_535),
            ..self.clone()
        }
    }

    /// Whether element-wise kernels move four elements per step with 16-byte accesses (the
    /// default on every adapter; `WGLOSS_VEC4=0` turns it off).
    pub fn vec4(&self) -> bool {
        self.vec4
    }

    /// The same device and caches with the element-wise step width set explicitly (both widths
    /// compute the same values; the conformance suite checks each).
    pub fn with_vec4(&self, vec4: bool) -> Self {
        Self {
            vec4,
            ..self.clone()
        }
    }

    /// How many neighbouring invocations of a workgroup walk one contiguous run of its block
    /// together: the whole workgroup (256) on GPU adapters, 2 on CPU adapters;
    /// `WGLOSS_LANES` (a power of two up to 256) overrides it. Every value visits every element
    /// once; only the order of the sums' terms changes.
    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    /// The same device and caches with [`Gpu::lanes`] set explicitly (rounded down to a power of
    /// two in 1..=256).
    pub fn with_lanes(&self, lanes: u32) -> Self {
        let lanes = lanes.clamp(1, WG as u32);
        Self {
            lanes: 1 << lanes.ilog2(),
            ..self.clone()
        }
    }

    /// The largest class count whose rows the class-row losses (cross-entropy, poly1,
    /// softmax_focal, multiclass_hinge) give one invocation each; longer rows get a workgroup.
    /// [`Gpu::GPU_WHOLE_ROW_CLASSES`] on GPU adapters, 8,191 (the most one invocation's loop
    /// budget allows) on CPU adapters; `WGLOSS_WHOLE_ROW_CLASSES` overrides it. Both paths
    /// compute the same values up to the order of a row's sums.
    pub fn whole_row_classes(&self) -> usize {
        self.whole_row_classes
    }

    /// The default of [`Gpu::whole_row_classes`] on a GPU adapter.
    pub const GPU_WHOLE_ROW_CLASSES: usize = 32;

    /// The same device and caches with [`Gpu::whole_row_classes`] set explicitly (at most
    /// 8,191).
    pub fn with_whole_row_classes(&self, classes: usize) -> Self {
        Self {
            whole_row_classes: classes.min(MAX_WHOLE_ROW_CLASSES),
            ..self.clone()
        }
    }

    /// Information on the device's adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// A human-readable adapter name ("llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)").
    pub fn adapter_name(&self) -> String {
        let i = &self.inner.info;
        format!("{} ({:?}, {})", i.name, i.backend, i.driver_info)
    }

    /// Runs `f`, which records or creates what a kernel needs, inside validation and
    /// out-of-memory error scopes and returns the first error wgpu reports, or `f`'s own result.
    /// A device that allows fewer than [`Gpu::STORAGE_BUFFERS`] storage buffers per shader stage
    /// gets [`Error::StorageBindings`] before `f` runs.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_storage_buffers()?;
        self.error_scoped(f)
    }

    /// Fails with [`Error::StorageBindings`] unless the device allows
    /// [`Gpu::STORAGE_BUFFERS`] storage buffers per shader stage.
    pub(crate) fn check_storage_buffers(&self) -> Result<()> {
        let got = self.limits().max_storage_buffers_per_shader_stage;
        if got < Self::STORAGE_BUFFERS {
            return Err(Error::StorageBindings {
                needed: Self::STORAGE_BUFFERS,
                got,
            });
        }
        Ok(())
    }

    /// [`Gpu::scoped`] without the storage-buffer check, for uploads, downloads and submits,
    /// which any device can run.
    pub(crate) fn error_scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self
            .device()
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = validation.or(oom) {
            return Err(e.into());
        }
        out
    }

    /// Submits `encoder` and blocks until the device has finished it.
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.error_scoped(|| {
            self.queue().submit([encoder.finish()]);
            Ok(())
        })?;
        self.device().poll(wgpu::PollType::wait_indefinitely())?;
        Ok(())
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host.
    pub(crate) fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.error_scoped(|| {
            let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgloss download"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self.device().create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
            self.queue().submit([encoder.finish()]);
            Ok(staging)
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device().poll(wgpu::PollType::wait_indefinitely())?;
        rx.recv()
            .map_err(|_| Error::Internal("map callback dropped".into()))??;
        let bytes = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Internal(format!("mapped range: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// The shader module of `kernel`, composed from its source parts and cached.
    fn module(&self, kernel: &crate::kernel::Kernel) -> wgpu::ShaderModule {
        let mut modules = lock(&self.inner.modules);
        modules
            .entry(kernel.name)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.name),
                    source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
                };
                // Bounds checks stay on. Loop bounding and division guards are dropped: they cost
                // a counter and a branch per iteration and element on every adapter.
                let checks = wgpu::ShaderRuntimeChecks {
                    force_loop_bounding: false,
                    int_div_checks: false,
                    ..wgpu::ShaderRuntimeChecks::checked()
                };
                // SAFETY: every loop of every wgloss kernel runs to a count read from a uniform
                // or a constant (the element count of a segment, the partial count, k, D), so
                // none is infinite; every integer divisor is a workgroup count, the workgroup
                // size or `coords`, which the host validates to be at least 1.
                unsafe { self.device().create_shader_module_trusted(desc, checks) }
            })
            .clone()
    }

    /// The bind group layout and pipeline layout named `name`, built once.
    pub(crate) fn layout(
        &self,
        name: &'static str,
        entries: &[wgpu::BindGroupLayoutEntry],
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        self.layout_of(name, None, entries)
    }

    /// A second bind group layout named `name` and the pipeline layout of `first` followed by
    /// it, built once.
    pub(crate) fn layout_after(
        &self,
        name: &'static str,
        first: &wgpu::BindGroupLayout,
        entries: &[wgpu::BindGroupLayoutEntry],
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        self.layout_of(name, Some(first), entries)
    }

    fn layout_of(
        &self,
        name: &'static str,
        first: Option<&wgpu::BindGroupLayout>,
        entries: &[wgpu::BindGroupLayoutEntry],
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut layouts = lock(&self.inner.layouts);
        layouts
            .entry(name)
            .or_insert_with(|| {
                let bgl =
                    self.device()
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(name),
                            entries,
                        });
                let groups: Vec<Option<&wgpu::BindGroupLayout>> =
                    first.into_iter().chain([&bgl]).map(Some).collect();
                let pl = self
                    .device()
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(name),
                        bind_group_layouts: &groups,
                        immediate_size: 0,
                    });
                (bgl, pl)
            })
            .clone()
    }

    /// The compute pipeline for `key`, compiled once per (kernel, entry, overrides).
    pub(crate) fn pipeline(
        &self,
        kernel: &crate::kernel::Kernel,
        key: PipelineKey,
        layout: &wgpu::PipelineLayout,
    ) -> wgpu::ComputePipeline {
        let mut key = key;
        key.overrides.push(("LANES", self.lanes));
        if let Some(p) = lock(&self.inner.pipelines).get(&key) {
            return p.clone();
        }
        let module = self.module(kernel);
        let constants: Vec<(&str, f64)> = key
            .overrides
            .iter()
            .map(|&(name, value)| (name, f64::from(value)))
            .collect();
        let pipeline = self
            .device()
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key.entry),
                layout: Some(layout),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        lock(&self.inner.pipelines).insert(key, pipeline.clone());
        pipeline
    }
}
