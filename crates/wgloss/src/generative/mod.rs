//! F6, generative models: divergences and objectives of generative training.

mod ctc;
mod cycle_consistency;
mod diffusion_mse;
mod gan;
mod gaussian_kl;
mod gradient_penalty;
mod interpolate;
mod kl_div;
mod perceptual;
mod score_matching;
mod sinkhorn;
mod style;

pub use ctc::*;
pub use cycle_consistency::*;
pub use diffusion_mse::*;
pub use gan::*;
pub use gaussian_kl::*;
pub use gradient_penalty::*;
pub use interpolate::*;
pub use kl_div::*;
pub use perceptual::*;
pub use score_matching::*;
pub use sinkhorn::*;
pub use style::*;
