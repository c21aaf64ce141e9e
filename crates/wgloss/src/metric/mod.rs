//! Metric learning (F5): losses over a batch of embeddings.

mod in_batch;
pub(crate) mod info_nce;
mod margin_heads;
pub(crate) mod row_tuples;

pub use in_batch::*;
pub use info_nce::*;
pub use margin_heads::*;
pub use row_tuples::*;
