//! F1, regression: element-wise losses of `pred` and `target` of equal shape, r = pred − target.
//! Gradients are w.r.t. `pred`.

mod balanced_l1;
mod dynamic_smooth_l1;
mod huber;
mod log_cosh;
mod mae;
mod mse;
mod quantile;
mod rmse;
mod rmsle;
mod self_adjusting_smooth_l1;
mod smooth_l1;

pub use balanced_l1::*;
pub use dynamic_smooth_l1::*;
pub use huber::*;
pub use log_cosh::*;
pub use mae::*;
pub use mse::*;
pub use quantile::*;
pub use rmse::*;
pub use rmsle::*;
pub use self_adjusting_smooth_l1::*;
pub use smooth_l1::*;
