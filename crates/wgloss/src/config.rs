//! Declarations shared by loss configs: the element-wise losses whose config is only
//! `reduction` and `grad_scale`, optionally with one scalar hyperparameter.

use crate::error::{check_param, Result};

/// Rejects a non-finite `grad_scale`.
pub(crate) fn check_grad_scale(grad_scale: f32) -> Result<()> {
    check_param("grad_scale", f64::from(grad_scale), "finite", true)
}

/// Declares an element-wise loss config of `reduction` and `grad_scale` plus, optionally, one
/// scalar hyperparameter passed to the kernel as `params.p.x`; F16 and BF16 inputs run through
/// the third kernel:
///
/// ```text
/// plain_loss!(#[doc] Name, KERNEL, KERNEL_VEC4, KERNEL_HALF);
/// plain_loss!(#[doc] Name, KERNEL, KERNEL_VEC4, KERNEL_HALF, #[doc] field: default, "domain", |v| ok);
/// ```
macro_rules! plain_loss {
    ($(#[$doc:meta])* $name:ident, $kernel:expr, $vec4:expr, $half:expr) => {
        $crate::config::plain_loss!(@struct $(#[$doc])* $name, $kernel, $vec4, $half, [], []);
    };
    (
        $(#[$doc:meta])* $name:ident, $kernel:expr, $vec4:expr, $half:expr,
        $(#[$fdoc:meta])* $field:ident: $default:expr, $domain:literal, $ok:expr
    ) => {
        $crate::config::plain_loss!(
            @struct $(#[$doc])* $name, $kernel, $vec4, $half,
            [$(#[$fdoc])* $field: $default],
            [$field, $domain, $ok]
        );
    };
    (
        @struct $(#[$doc:meta])* $name:ident, $kernel:expr, $vec4:expr, $half:expr,
        [$($(#[$fdoc:meta])* $field:ident: $default:expr)?],
        [$($cfield:ident, $domain:literal, $ok:expr)?]
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: f32,)?
            /// Reduction over elements (default `Mean`).
            pub reduction: crate::Reduction,
            /// Multiplier of the gradient: the upstream gradient or loss scale (default 1).
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $default,)?
                    reduction: crate::Reduction::Mean,
                    grad_scale: 1.0,
                }
            }
        }

        impl crate::ElementwiseLoss for $name {
            fn spec(&self, _shape: &[usize]) -> crate::Result<crate::ElementwiseSpec<'_>> {
                #[allow(unused_mut)]
                let mut p = [0.0f32; 4];
                $(
                    let ok: fn(f32) -> bool = $ok;
                    crate::error::check_param(
                        stringify!($cfield),
                        f64::from(self.$cfield),
                        $domain,
                        ok(self.$cfield),
                    )?;
                    p[0] = self.$cfield;
                )?
                crate::config::check_grad_scale(self.grad_scale)?;
                Ok(crate::ElementwiseSpec::new(&$kernel, self.reduction, self.grad_scale)
                    .params(p)
                    .vec4(&$vec4)
                    .half(&$half))
            }

            fn reduction(&self) -> crate::Reduction {
                self.reduction
            }
        }
    };
}
pub(crate) use plain_loss;
