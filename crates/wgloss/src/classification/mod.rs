//! F3, classification. The binary and margin losses here are element-wise over logits or scores
//! and targets of the same shape; gradients are w.r.t. the logits.

mod bce_with_logits;
mod margin;
mod sigmoid_focal;

pub use bce_with_logits::*;
pub use margin::*;
pub use sigmoid_focal::*;
mod class_rows;
pub(crate) use class_rows::{check_labels, check_labels_of, check_weight};
mod cross_entropy;
mod ghm_c;
mod multiclass_hinge;
mod softmax_focal;
pub use cross_entropy::*;
pub use ghm_c::*;
pub use multiclass_hinge::*;
pub use softmax_focal::*;
