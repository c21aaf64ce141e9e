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
/// The sort's parameters and key order, shared by its two kernels.
const SORT_COMMON: &str = shader!("util/sort.wgsl");
/// Driver of the element-wise family: parameters, reductions, the `reduce` pass.
pub(crate) const ELEMENTWISE: &str = shader!("elementwise.wgsl");
/// Element-wise passes one element per step.
pub(crate) const ELEMENTWISE_F32: &str = shader!("elementwise_f32.wgsl");
/// Element-wise passes four elements per step (16-byte accesses).
pub(crate) const ELEMENTWISE_VEC4: &str = shader!("elementwise_vec4.wgsl");
/// Conversions of 16-bit floats packed two per 32-bit word.
const HALF: &str = shader!("util/half.wgsl");
/// Element-wise passes over 16-bit floats, two per step (32-bit words).
pub(crate) const ELEMENTWISE_HALF: &str = shader!("elementwise_half.wgsl");
/// Element-wise passes over 16-bit floats, four per step (8-byte accesses).
pub(crate) const ELEMENTWISE_HALF4: &str = shader!("elementwise_half4.wgsl");
/// The walk of the four-per-step widths.
const ELEMENTWISE_QUADS: &str = shader!("elementwise_quads.wgsl");
/// Plain copy kernels, one and four elements per step: the bandwidth roofline the benchmarks
/// compare against.
pub const COPY: Kernel = Kernel {
    name: "copy",
    parts: &[PRELUDE, shader!("copy.wgsl")],
};
/// See [`COPY`].
pub const COPY_VEC4: Kernel = Kernel {
    name: "copy.vec4",
    parts: &[PRELUDE, shader!("copy_vec4.wgsl")],
};

macro_rules! family_source {
    ($dir:literal, $file:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/",
            $dir,
            "/",
            $file,
            ".wgsl"
        ))
    };
}

/// Losses over a class dimension (cross-entropy, poly1, softmax focal, multi-class hinge): their
/// own driver (rows, labels, status word), one logit per step.
pub(crate) const CLASS_ROWS: Kernel = Kernel {
    name: "class_rows",
    parts: &[
        PRELUDE,
        shader!("classification/class_rows.wgsl"),
        shader!("classification/class_rows_f32.wgsl"),
        CLASS_ROWS_SWEEPS,
    ],
};
/// The one-logit-per-step sweeps of the widths with an f32 gradient array.
const CLASS_ROWS_SWEEPS: &str = shader!("classification/class_rows_sweeps.wgsl");
/// The two sweeps of the four-per-step class-row widths.
const CLASS_ROWS_QUADS: &str = shader!("classification/class_rows_quads.wgsl");
/// [`CLASS_ROWS`] four logits per step, for contiguous rows of a multiple of four classes.
pub(crate) const CLASS_ROWS_VEC4: Kernel = Kernel {
    name: "class_rows.vec4",
    parts: &[
        PRELUDE,
        shader!("classification/class_rows.wgsl"),
        shader!("classification/class_rows_vec4.wgsl"),
        CLASS_ROWS_QUADS,
    ],
};
/// [`CLASS_ROWS`] over 16-bit logits, two per step, for contiguous rows (of any class count:
/// `shared_words` packs the words two rows of an odd count share).
pub(crate) const CLASS_ROWS_HALF: Kernel = Kernel {
    name: "class_rows.half",
    parts: &[
        PRELUDE,
        shader!("classification/class_rows.wgsl"),
        HALF,
        shader!("classification/class_rows_half.wgsl"),
    ],
};
/// [`CLASS_ROWS`] over 16-bit logits with trailing dims of an odd size: the gradient in an f32
/// staging array, packed by [`NARROW`].
pub(crate) const CLASS_ROWS_STAGED: Kernel = Kernel {
    name: "class_rows.staged",
    parts: &[
        PRELUDE,
        shader!("classification/class_rows.wgsl"),
        HALF,
        shader!("classification/class_rows_staged.wgsl"),
        CLASS_ROWS_SWEEPS,
    ],
};
/// Packs an f32 staging gradient into a 16-bit one.
pub(crate) const NARROW: Kernel = Kernel {
    name: "narrow",
    parts: &[PRELUDE, HALF, shader!("util/narrow.wgsl")],
};
/// Widens 16-bit values into an f32 array.
pub(crate) const WIDEN: Kernel = Kernel {
    name: "widen",
    parts: &[PRELUDE, HALF, shader!("util/widen.wgsl")],
};
/// [`CLASS_ROWS_HALF`] four logits per step, for contiguous rows of a multiple of four classes.
pub(crate) const CLASS_ROWS_HALF4: Kernel = Kernel {
    name: "class_rows.half4",
    parts: &[
        PRELUDE,
        shader!("classification/class_rows.wgsl"),
        HALF,
        shader!("classification/class_rows_half4.wgsl"),
        CLASS_ROWS_QUADS,
    ],
};

/// Box losses (IoU family): the element-wise driver's reductions with a pass over boxes.
pub(crate) const BOXES: Kernel = Kernel {
    name: "boxes",
    parts: &[
        PRELUDE,
        ELEMENTWISE,
        shader!("boxes/boxes.wgsl"),
        shader!("boxes/boxes_f32.wgsl"),
    ],
};

/// [`BOXES`] over 16-bit coordinates and gradient, two words per box.
pub(crate) const BOXES_HALF_KERNEL: Kernel = Kernel {
    name: "boxes.half",
    parts: &[
        PRELUDE,
        ELEMENTWISE,
        HALF,
        shader!("boxes/boxes.wgsl"),
        shader!("boxes/boxes_half.wgsl"),
    ],
};

/// The box losses' 16-bit kernels: one box per step at either of the driver's widths.
pub(crate) const BOXES_HALF: HalfKernels = HalfKernels {
    two: BOXES_HALF_KERNEL,
    four: BOXES_HALF_KERNEL,
};

/// Overlap losses of segmentation (dice, jaccard, tversky, sensitivity_specificity, combo).
pub(crate) const OVERLAP: Kernel = Kernel {
    name: "overlap",
    parts: &[
        PRELUDE,
        shader!("segmentation/overlap.wgsl"),
        shader!("segmentation/overlap_f32.wgsl"),
        OVERLAP_GRADS_F32,
    ],
};
/// The gradient pass of the overlap widths with an f32 gradient array.
const OVERLAP_GRADS_F32: &str = shader!("segmentation/overlap_grads_f32.wgsl");
/// [`OVERLAP`] over 16-bit logits in multiclass mode with trailing dims of an odd size: the
/// gradient in an f32 staging array, packed by [`NARROW`].
pub(crate) const OVERLAP_STAGED: Kernel = Kernel {
    name: "overlap.staged",
    parts: &[
        PRELUDE,
        shader!("segmentation/overlap.wgsl"),
        HALF,
        shader!("segmentation/overlap_staged.wgsl"),
        OVERLAP_GRADS_F32,
    ],
};

/// [`OVERLAP`] over 16-bit logits and gradient: two elements (or, multiclass, two pixels) per
/// step of the gradient pass.
pub(crate) const OVERLAP_HALF: Kernel = Kernel {
    name: "overlap.half",
    parts: &[
        PRELUDE,
        shader!("segmentation/overlap.wgsl"),
        HALF,
        shader!("segmentation/overlap_half.wgsl"),
    ],
};

/// SSIM: Gaussian blurs, the SSIM map and the blur's adjoint.
pub(crate) const SSIM: Kernel = Kernel {
    name: "ssim",
    parts: &[PRELUDE, shader!("segmentation/ssim.wgsl")],
};

/// Segmented key-value sort, segments of up to a block: a bitonic network in workgroup memory.
pub(crate) const SORT: Kernel = Kernel {
    name: "sort",
    parts: &[PRELUDE, SORT_COMMON, shader!("util/sort_local.wgsl")],
};

/// Segmented key-value sort, longer segments: the radix sort's passes.
pub(crate) const RADIX_SORT: Kernel = Kernel {
    name: "radix_sort",
    parts: &[PRELUDE, SORT_COMMON, shader!("util/radix.wgsl")],
};

/// Lovász losses: errors into sort slots, running sums, the Lovász gradient.
pub(crate) const LOVASZ: Kernel = Kernel {
    name: "lovasz",
    parts: &[PRELUDE, shader!("segmentation/lovasz.wgsl")],
};

/// In-batch contrastive losses (supcon, nt_xent): tiled similarities, never stored.
pub(crate) const METRIC_COMMON: &str = shader!("metric/common.wgsl");

pub(crate) const IN_BATCH: Kernel = Kernel {
    name: "in_batch",
    parts: &[PRELUDE, METRIC_COMMON, shader!("metric/in_batch.wgsl")],
};

pub(crate) const COMBINE: Kernel = Kernel {
    name: "combine",
    parts: &[PRELUDE, shader!("metric/combine.wgsl")],
};

pub(crate) const STYLE: Kernel = Kernel {
    name: "style",
    parts: &[PRELUDE, shader!("generative/style.wgsl")],
};

pub(crate) const SINKHORN: Kernel = Kernel {
    name: "sinkhorn",
    parts: &[PRELUDE, shader!("generative/sinkhorn.wgsl")],
};

/// CTC: label checks, α and β recursions per sequence, the gradient and the reductions.
pub(crate) const CTC: Kernel = Kernel {
    name: "ctc",
    parts: &[PRELUDE, shader!("generative/ctc.wgsl")],
};

pub(crate) const ROW_TUPLES: Kernel = Kernel {
    name: "row_tuples",
    parts: &[PRELUDE, METRIC_COMMON, shader!("metric/row_tuples.wgsl")],
};

pub(crate) const MARGIN_HEADS: Kernel = Kernel {
    name: "margin_heads",
    parts: &[PRELUDE, METRIC_COMMON, shader!("metric/margin_heads.wgsl")],
};

/// A loss's kernels over 16-bit inputs: two values per step (any length) and four (the aligned
/// prefix).
#[derive(Debug)]
pub struct HalfKernels {
    pub two: Kernel,
    pub four: Kernel,
}

macro_rules! elementwise_kernels {
    (
    others: [$($other:ident),*]
    $(
        $family:ident in $dir:literal {
            $($name:ident, $vec4:ident $(, $half:ident)? => $file:literal),* $(,)?
        }
    )*) => {
        $(
            /// Composed kernels of one element-wise family: one element per step, four, and
            /// for the losses that take 16-bit inputs two and four of those (every pass over the input
            /// runs through the driver's `walk`, `steps` and `step_inputs`, or `elem_inputs`).
            pub(crate) mod $family {
                use super::*;
                $(
                    pub(crate) const $name: Kernel = Kernel {
                        name: $file,
                        parts: &[PRELUDE, ELEMENTWISE, ELEMENTWISE_F32, family_source!($dir, $file)],
                    };
                    pub(crate) const $vec4: Kernel = Kernel {
                        name: concat!($file, ".vec4"),
                        parts: &[PRELUDE, ELEMENTWISE, ELEMENTWISE_VEC4, ELEMENTWISE_QUADS, family_source!($dir, $file)],
                    };
                    $(
                        pub(crate) const $half: HalfKernels = HalfKernels {
                            two: Kernel {
                                name: concat!($file, ".half"),
                                parts: &[PRELUDE, ELEMENTWISE, HALF, ELEMENTWISE_HALF, family_source!($dir, $file)],
                            },
                            four: Kernel {
                                name: concat!($file, ".half4"),
                                parts: &[PRELUDE, ELEMENTWISE, HALF, ELEMENTWISE_HALF4, ELEMENTWISE_QUADS, family_source!($dir, $file)],
                            },
                        };
                    )?
                )*
            }
        )*
        /// Every composed kernel of the crate.
        pub const KERNELS: &[Kernel] = &[
            COPY,
            COPY_VEC4,
            $($other,)*
            $(
                $($family::$name, $family::$vec4, $($family::$half.two, $family::$half.four,)?)*
            )*
        ];
    };
}

elementwise_kernels! {
    others: [CLASS_ROWS, CLASS_ROWS_VEC4, CLASS_ROWS_HALF, CLASS_ROWS_HALF4, CLASS_ROWS_STAGED, NARROW, WIDEN, BOXES, BOXES_HALF_KERNEL, OVERLAP, OVERLAP_HALF, OVERLAP_STAGED, SSIM, SORT, RADIX_SORT, LOVASZ, IN_BATCH, MARGIN_HEADS, ROW_TUPLES, COMBINE, STYLE, SINKHORN, CTC]
    regression in "regression" {
        MAE, MAE_VEC4, MAE_HALF => "mae",
        MSE, MSE_VEC4, MSE_HALF => "mse",
        RMSE, RMSE_VEC4, RMSE_HALF => "rmse",
        RMSLE, RMSLE_VEC4, RMSLE_HALF => "rmsle",
        LOG_COSH, LOG_COSH_VEC4, LOG_COSH_HALF => "log_cosh",
        HUBER, HUBER_VEC4, HUBER_HALF => "huber",
        SMOOTH_L1, SMOOTH_L1_VEC4, SMOOTH_L1_HALF => "smooth_l1",
        QUANTILE, QUANTILE_VEC4, QUANTILE_HALF => "quantile",
        BALANCED_L1, BALANCED_L1_VEC4, BALANCED_L1_HALF => "balanced_l1",
        DYNAMIC_SMOOTH_L1, DYNAMIC_SMOOTH_L1_VEC4, DYNAMIC_SMOOTH_L1_HALF => "dynamic_smooth_l1",
        SELF_ADJUSTING_SMOOTH_L1, SELF_ADJUSTING_SMOOTH_L1_VEC4, SELF_ADJUSTING_SMOOTH_L1_HALF =>
            "self_adjusting_smooth_l1",
    }
    classification in "classification" {
        BCE_WITH_LOGITS, BCE_WITH_LOGITS_VEC4, BCE_WITH_LOGITS_HALF => "bce_with_logits",
        SIGMOID_FOCAL, SIGMOID_FOCAL_VEC4, SIGMOID_FOCAL_HALF => "sigmoid_focal",
        HINGE, HINGE_VEC4, HINGE_HALF => "hinge",
        SQUARED_HINGE, SQUARED_HINGE_VEC4, SQUARED_HINGE_HALF => "squared_hinge",
        SMOOTHED_HINGE, SMOOTHED_HINGE_VEC4, SMOOTHED_HINGE_HALF => "smoothed_hinge",
        RAMP, RAMP_VEC4, RAMP_HALF => "ramp",
        EXPONENTIAL, EXPONENTIAL_VEC4, EXPONENTIAL_HALF => "exponential",
        GHM_C, GHM_C_VEC4, GHM_C_HALF => "ghm_c",
    }
    generative in "generative" {
        DIFFUSION_MSE, DIFFUSION_MSE_VEC4, DIFFUSION_MSE_HALF => "diffusion_mse",
        GAN, GAN_VEC4 => "gan",
        KL_DIV, KL_DIV_VEC4, KL_DIV_HALF => "kl_div",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every composed kernel parses and validates with naga, and naga's SPIR-V writer (the
    /// Vulkan path's) translates it with its pipeline constants at their defaults: no adapter
    /// needed. A writer panic would surface at pipeline creation otherwise.
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
            let info = match validator.validate(&module) {
                Ok(info) => info,
                Err(e) => {
                    failures.push(format!("{}: {}", kernel.name, e.emit_to_string(&source)));
                    continue;
                }
            };
            let written = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                None,
                &Default::default(),
            )
            .map_err(|e| e.to_string())
            .and_then(|(module, info)| {
                naga::back::spv::write_vec(&module, &info, &Default::default(), None)
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = written {
                failures.push(format!("{}: SPIR-V: {e}", kernel.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// No kernel binds more storage buffers than `Gpu::STORAGE_BUFFERS` (wgpu's default limit,
    /// which `Gpu::scoped` checks the device for), so that every loss runs on a device a caller
    /// created with wgpu's default limits.
    #[test]
    fn every_kernel_fits_default_storage_limits() {
        let mut failures = Vec::new();
        for kernel in KERNELS {
            let module = naga::front::wgsl::parse_str(&kernel.source()).expect("parses");
            let storage = module
                .global_variables
                .iter()
                .filter(|(_, v)| matches!(v.space, naga::AddressSpace::Storage { .. }))
                .count();
            if storage > crate::Gpu::STORAGE_BUFFERS as usize {
                failures.push(format!("{}: {storage} storage buffers", kernel.name));
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
        assert!(!files.is_empty(), "no shader found under shaders/");
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
