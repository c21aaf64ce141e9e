//! F6, generative models: divergences and objectives of generative training.

mod diffusion_mse;
mod kl_div;

pub use diffusion_mse::*;
pub use kl_div::*;
