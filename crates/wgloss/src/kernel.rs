//! WGSL sources and their composition. WGSL has no `#include`: a kernel is the shared prelude
//! (stable math), a family driver (bindings, reductions, entry points) and the loss's own element
//! function, concatenated. Every composed kernel is listed in [`KERNELS`] so that naga validates
//! each one without an adapter.

/// A composed compute shader.
#[derive(Debug)]
pub struct Kernel {
    /// Unique name: also the shader module label and the pipeline cache key.
    pub name: &'static str,
    /// Source parts, concatenated in order.
    pub parts: &'static [&'static str],
}

impl Kernel {
    /// The full WGSL source.
    pub fn source(&self) -> String {
        self.parts.join("\n")
    }
}

macro_rules! shader {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/",
            $path
        ))
    };
}

/// Stable math shared by every kernel.
pub(crate) const PRELUDE: &str = shader!("prelude.wgsl");
/// Driver of the element-wise family: bindings, grid-stride loops, tree reductions.
pub(crate) const ELEMENTWISE: &str = shader!("elementwise.wgsl");
/// Plain copy kernel: the bandwidth roofline the benchmarks compare against.
pub const COPY: Kernel = Kernel {
    name: "copy",
    parts: &[PRELUDE, shader!("copy.wgsl")],
};

macro_rules! elementwise_kernels {
    ($($name:ident => $file:literal),* $(,)?) => {
        /// Composed kernels of the regression family, one per loss.
        pub(crate) mod regression {
            use super::*;
            $(pub(crate) const $name: Kernel = Kernel {
                name: $file,
                parts: &[PRELUDE, ELEMENTWISE, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/regression/", $file, ".wgsl"))],
            };)*
        }
        /// Every composed kernel of the crate.
        pub const KERNELS: &[Kernel] = &[COPY, $(regression::$name),*];
    };
}

elementwise_kernels! {
    MAE => "mae",
    MSE => "mse",
    RMSE => "rmse",
    RMSLE => "rmsle",
    LOG_COSH => "log_cosh",
    HUBER => "huber",
    SMOOTH_L1 => "smooth_l1",
    QUANTILE => "quantile",
    BALANCED_L1 => "balanced_l1",
    DYNAMIC_SMOOTH_L1 => "dynamic_smooth_l1",
    SELF_ADJUSTING_SMOOTH_L1 => "self_adjusting_smooth_l1",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every composed kernel parses and validates with naga: no adapter needed.
    #[test]
    fn every_kernel_is_naga_valid() {
        let mut failures = Vec::new();
        for kernel in KERNELS {
            let source = kernel.source();
            let module = match naga::front::wgsl::parse_str(&source) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{}: {}", kernel.name, e.emit_to_string(&source)));
                    continue;
                }
            };
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            );
            if let Err(e) = validator.validate(&module) {
                failures.push(format!("{}: {}", kernel.name, e.emit_to_string(&source)));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Every `.wgsl` file under `shaders/` is part of some kernel.
    #[test]
    fn every_shader_file_is_registered() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("shaders/ is readable") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "wgsl") {
                    files.push(std::fs::read_to_string(&path).expect("shader is readable"));
                }
            }
        }
        assert!(files.len() >= KERNELS.len());
        for text in files {
            let used = KERNELS.iter().any(|k| k.parts.contains(&text.as_str()));
            assert!(
                used,
                "a shader file is not part of any kernel:\n{}",
                &text[..text.len().min(200)]
            );
        }
    }
}
