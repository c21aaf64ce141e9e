//! Metric learning (F5): losses over a batch of embeddings.

mod in_batch;

pub use in_batch::*;
