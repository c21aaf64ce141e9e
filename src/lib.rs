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
