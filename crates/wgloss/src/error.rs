//! The one error type of the crate.

/// Everything a wgloss call can fail with.
///
/// Argument errors are returned before anything is recorded or written; device errors are
/// captured with wgpu error scopes around the call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter could be found; the message carries the install hint.
    #[error("no GPU adapter found ({reason}); {hint}")]
    NoAdapter { reason: String, hint: &'static str },
    /// The adapter refused to create a device with the requested limits.
    #[error("device request failed: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),
    /// Two tensors that must agree in shape do not.
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        name: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("dtype mismatch for `{name}`: expected {expected:?}, got {got:?}")]
    DTypeMismatch {
        name: &'static str,
        expected: crate::DType,
        got: crate::DType,
    },
    /// A class label outside [0, C) that is not the ignore index, found by the kernel; the call's
    /// outputs were not written.
    #[error(
        "label {label} at position {position} is outside [0, {classes}) and is not ignore_index"
    )]
    LabelOutOfRange {
        position: usize,
        label: i64,
        classes: usize,
    },
    /// A tensor has the wrong rank or a dimension outside what the loss accepts.
    #[error("invalid shape for `{name}`: {got:?} ({why})")]
    InvalidShape {
        name: &'static str,
        got: Vec<usize>,
        why: &'static str,
    },
    /// The input is empty where the loss needs at least one element.
    #[error("`{name}` is empty; this loss needs at least one element")]
    Empty { name: &'static str },
    /// A hyperparameter is non-finite or outside its domain.
    #[error("invalid parameter `{name}` = {value}: must be {domain}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        domain: &'static str,
    },
    /// A tensor view does not fit its buffer or is misaligned.
    #[error("invalid view of `{name}`: {why}")]
    InvalidView { name: &'static str, why: String },
    /// The buffer lacks a usage the call needs.
    #[error("buffer of `{name}` lacks usage {missing:?}")]
    MissingUsage {
        name: &'static str,
        missing: wgpu::BufferUsages,
    },
    /// The device allows fewer storage buffers per shader stage than the kernels bind
    /// ([`crate::Gpu::STORAGE_BUFFERS`], as wgpu's default limits allow; [`crate::Gpu::new`]
    /// requests the adapter's own).
    #[error(
        "the device allows {got} storage buffers per shader stage; wgloss's kernels bind up to \
         {needed} (request wgpu's default limits or the adapter's, as `Gpu::new` does)"
    )]
    StorageBindings { needed: u32, got: u32 },
    /// wgpu reported a validation error inside the call.
    #[error("wgpu validation error: {0}")]
    Validation(String),
    /// The device ran out of memory inside the call.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// wgpu reported an internal error inside the call.
    #[error("wgpu internal error: {0}")]
    Internal(String),
    /// Waiting for the device failed (device lost or timeout).
    #[error("device poll failed: {0}")]
    Poll(#[from] wgpu::PollError),
    /// Mapping a buffer for reading failed.
    #[error("buffer map failed: {0}")]
    Map(#[from] wgpu::BufferAsyncError),
}

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        // The description alone is often just "Validation Error": keep the whole source chain.
        fn chain(mut source: &(dyn std::error::Error + 'static)) -> String {
            let mut out = source.to_string();
            while let Some(next) = source.source() {
                out.push_str(": ");
                out.push_str(&next.to_string());
                source = next;
            }
            out
        }
        match e {
            wgpu::Error::OutOfMemory { source } => Error::OutOfMemory(chain(source.as_ref())),
            wgpu::Error::Validation { source, .. } => Error::Validation(chain(source.as_ref())),
            wgpu::Error::Internal { source, .. } => Error::Internal(chain(source.as_ref())),
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Rejects a non-finite value or one for which `ok` is false.
pub(crate) fn check_param(
    name: &'static str,
    value: f64,
    domain: &'static str,
    ok: bool,
) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value,
            domain,
        })
    }
}
