/// Declares a loss of the form sqrt(mean ℓ): reduction fixed to mean, config of `grad_scale`.
/// The gradient needs the total, so the kernel reads the inputs twice (reduce, then apply).
macro_rules! root_loss {
    ($(#[$doc:meta])* $name:ident, $kernel:expr, $vec4:expr, $half:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// Multiplier of the gradient (default 1).
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self { grad_scale: 1.0 }
            }
        }

        impl crate::ElementwiseLoss for $name {
            fn spec(&self, _shape: &[usize]) -> crate::Result<crate::ElementwiseSpec<'_>> {
                crate::config::check_grad_scale(self.grad_scale)?;
                Ok(
                    crate::ElementwiseSpec::new(&$kernel, crate::Reduction::Mean, self.grad_scale)
                        .plan(crate::elementwise::Plan::Root)
                        .vec4(&$vec4)
                        .half(&$half),
                )
            }

            fn reduction(&self) -> crate::Reduction {
                crate::Reduction::Mean
            }
        }
    };
}
pub(crate) use root_loss;

root_loss!(
    /// Root mean squared error: the square root of torch `mse_loss` (reduction fixed to mean).
    ///
    /// ```text
    /// loss = sqrt(mean r²),  d/dp_i = r_i / (n · loss)  (0 everywhere when loss = 0)
    /// ```
    /// # Shapes
    /// `pred`, `target`: any shape, equal; the loss is a scalar. Default grad_scale 1.
    Rmse,
    crate::kernel::regression::RMSE,
    crate::kernel::regression::RMSE_VEC4,
    crate::kernel::regression::RMSE_HALF
);
