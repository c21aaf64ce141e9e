//! F6, generative models: divergences and objectives of generative training.

mod kl_div;

pub use kl_div::*;
