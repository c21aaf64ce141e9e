//! F2, bounding boxes: the IoU family of losses of predicted boxes `[N, 4]` against target boxes,
//! one kernel (`shaders/boxes/boxes.wgsl`) specialised by loss and format, one invocation per
//! pair, reading each box once as a 16-byte vector (8 bytes for F16 and BF16 boxes, whose
//! gradient is of their type) and writing its gradient once.

use crate::elementwise::ElementwiseSpec;
use crate::error::{check_param, Error, Result};
use crate::kernel::{BOXES, BOXES_HALF};
use crate::Reduction;

/// Coordinates of a box.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BoxFormat {
    /// `(x1, y1, x2, y2)`, corners (torchvision's default).
    #[default]
    Xyxy,
    /// `(cx, cy, w, h)`, centre and size; the gradient is w.r.t. these.
    Cxcywh,
}

/// The validated spec of box loss `kind` (the kernel's `KIND`).
fn box_spec(
    kind: u32,
    shape: &[usize],
    format: BoxFormat,
    eps: f32,
    reduction: Reduction,
    grad_scale: f32,
) -> Result<ElementwiseSpec<'static>> {
    if shape.len() != 2 || shape[1] != 4 {
        return Err(Error::InvalidShape {
            name: "pred",
            got: shape.to_vec(),
            why: "boxes must be [N, 4]",
        });
    }
    check_param("eps", eps.into(), ">= 0", eps >= 0.0)?;
    crate::config::check_grad_scale(grad_scale)?;
    let mut spec = ElementwiseSpec::new(&BOXES, reduction, grad_scale)
        .params([eps, 0.0, 0.0, 0.0])
        .half(&BOXES_HALF);
    spec.group = 4;
    spec.overrides = vec![
        ("KIND", kind),
        ("CXCYWH", u32::from(format == BoxFormat::Cxcywh)),
    ];
    Ok(spec)
}

macro_rules! box_losses {
    ($($(#[$doc:meta])* $name:ident => $kind:literal;)*) => {$(
        $(#[$doc])*
        ///
        /// Every pair is computed in `xyxy` (a `cxcywh` input is converted and its gradient
        /// chained back). Degenerate boxes (zero width or height, identical, touching or
        /// disjoint boxes) give finite losses and gradients; a NaN coordinate makes its pair's
        /// loss NaN. A `min`/`max` whose sides tie splits the gradient evenly, as torch does.
        /// # Shapes
        /// `pred`, `target`: `[N, 4]`; gradient `[N, 4]`; loss `[N]` under reduction none.
        /// Defaults: xyxy, eps 1e-7, reduction mean (over boxes), grad_scale 1.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// Coordinates of both inputs.
            pub format: BoxFormat,
            /// Added to the union and enclosing-box denominators (≥ 0; 1e-7 as torchvision).
            pub eps: f32,
            /// Reduction over boxes.
            pub reduction: Reduction,
            /// Multiplier of the gradient.
            pub grad_scale: f32,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    format: BoxFormat::Xyxy,
                    eps: 1e-7,
                    reduction: Reduction::Mean,
                    grad_scale: 1.0,
                }
            }
        }

        impl crate::ElementwiseLoss for $name {
            fn spec(&self, shape: &[usize]) -> Result<ElementwiseSpec<'_>> {
                box_spec($kind, shape, self.format, self.eps, self.reduction, self.grad_scale)
            }

            fn reduction(&self) -> Reduction {
                self.reduction
            }
        }
    )*};
}

box_losses! {
    /// `1 − IoU`, IoU = inter / (union + eps) (torchvision `box_iou`).
    Iou => 0;
    /// Generalised IoU loss, torchvision `generalized_box_iou_loss`:
    /// `1 − IoU + (C − union) / (C + eps)`, C the enclosing box's area.
    Giou => 1;
    /// Distance IoU loss, torchvision `distance_box_iou_loss`:
    /// `1 − IoU + ρ² / (cw² + ch² + eps)`, ρ the distance of the centres, cw, ch the enclosing
    /// box's sides.
    Diou => 2;
    /// Complete IoU loss, torchvision `complete_box_iou_loss`: `diou + α v`,
    /// `v = 4/π² (atan(ŵ/ĥ) − atan(w/h))²`, `α = v / (1 − IoU + v + eps)` held constant in the
    /// backward (as torchvision's `no_grad`). As torchvision, `eps` enters α alone: IoU and the
    /// DIoU term keep their default 1e-7 whatever `eps` is.
    Ciou => 3;
    /// Efficient IoU loss (Zhang et al. 2021): `diou + (w − ŵ)² / (cw² + eps) + (h − ĥ)² / (ch² + eps)`.
    Eiou => 4;
    /// SCYLLA IoU loss, mmdet `siou_loss` with `neg_gamma = false`:
    /// `1 − clamp(IoU − (Δ + Ω)/2, −1, 1)`, angle cost Λ, distance cost
    /// `Δ = 2 − e^{γρx} − e^{γρy}` with `γ = 2 − Λ`, shape cost Ω with θ = 4, eps where mmdet
    /// puts it. With this sign (the anchor's default) Δ ≤ 0: far-apart boxes drive the value
    /// into the clamp, where loss and gradient are 0; the paper's sign is mmdet's
    /// `neg_gamma = true`.
    Siou => 5;
}
