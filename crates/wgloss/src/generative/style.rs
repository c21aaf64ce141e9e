use wgpu::util::DeviceExt;

use crate::elementwise::{self, entry, storage, uniform};
use crate::error::{Error, Result};
use crate::generative::perceptual::{
    check_layers, compute_layers, half_layers, layer_weight, weighted_sum,
};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::regression::{MSE, MSE_VEC4};
use crate::kernel::STYLE;
use crate::{DType, ElementwiseSpec, Gpu, LossOutput, Reduction, Tensor, TupleOutput};

/// Output rows and columns of a workgroup's tile in `style.wgsl`.
const TILE: usize = 64;

/// The largest C and H·W: `style.wgsl` sums over them in chunks of 32, an iteration each (and a
/// few more to store the tile).
const MAX_SIDE: usize = 32 * (MAX_ITERATIONS - 16);

/// Channel counts below this take `style.wgsl`'s one-invocation-per-output kernels (a tile would
/// stay mostly idle).
const SMALL_C: usize = 16;

/// Uniform block of `style.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    c: u32,
    s: u32,
    pad: u32,
    inv_cs: f32,
    scale: f32,
    pad1: [f32; 2],
}

/// Style loss (Gatys et al. 2016; burn-vision's `GramMatrixLoss`): the mean squared difference
/// of the Gram matrices of caller-supplied feature maps, weighted per layer.
///
/// ```text
/// G(F)[b, i, j] = Σ_s F[b, i, s] F[b, j, s] / (C·H·W)
/// loss = Σ_l w_l · mean_{b,i,j} (G(φ_l(x̂)) − G(φ_l(x)))²
/// dloss/dF̂ = w_l · 4 (G(F̂) − G(F)) F̂ / (B·C²·C·H·W)
/// ```
/// The Gram matrices and their backward run on the GPU; the gradients are w.r.t. the
/// prediction's feature maps, one per layer.
/// # Shapes
/// `pred[l]` and `target[l]`: `[B, C, ...]` (the trailing dimensions are flattened), equal; each
/// within one storage binding, C and the flattened size at most 523,776 (f32, or F16 / BF16
/// through f32 copies, the gradients in their type); the loss is a scalar.
/// Defaults: every layer weight 1 (`layer_weights` empty), grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style<'a> {
    /// One finite weight per layer; empty: 1 for every layer.
    pub layer_weights: &'a [f32],
    /// Multiplier of the gradients.
    pub grad_scale: f32,
}

impl Default for Style<'_> {
    fn default() -> Self {
        Self {
            layer_weights: &[],
            grad_scale: 1.0,
        }
    }
}

impl Style<'_> {
    /// Records the loss and the gradient of every layer into `out` (a scalar loss and one
    /// gradient per layer, of its shape). Arguments are validated before anything is recorded.
    pub fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &[&Tensor],
        target: &[&Tensor],
        out: &TupleOutput,
    ) -> Result<()> {
        let f32_call = |encoder: &mut _, p: &[&Tensor], t: &[&Tensor], out: &_| {
            self.encode(gpu, encoder, p, t, out)
        };
        if let Some(r) = half_layers(gpu, encoder, pred, target, out, f32_call) {
            // 16-bit layers through f32 copies; the gradients packed back.
            return r;
        }
        check_layers(gpu, self.grad_scale, self.layer_weights, pred, target)?;
        let layers = pred.len();
        let max_floats = (gpu.limits().max_storage_buffer_binding_size / 4) as usize;
        let mut dims = Vec::with_capacity(layers);
        for p in pred {
            let shape = p.shape();
            let (b, c) = match shape {
                [b, c, ..] => (*b, *c),
                _ => {
                    return Err(Error::InvalidShape {
                        name: "pred",
                        got: shape.to_vec(),
                        why: "feature maps [B, C, ...]",
                    })
                }
            };
            let s: usize = shape[2..].iter().product();
            if c > MAX_SIDE || s > MAX_SIDE || p.len() > max_floats || b * c * c > max_floats {
                return Err(Error::InvalidShape {
                    name: "pred",
                    got: shape.to_vec(),
                    why: "C and H·W at most 523,776, the maps and their Gram matrices within one storage binding",
                });
            }
            dims.push((b, c, s));
        }
        out.check_scalar(gpu, pred)?;
        let device = gpu.device();
        let max_dispatch = gpu.limits().max_compute_workgroups_per_dimension as usize;
        let (bgl, layout) = gpu.layout(
            "style",
            &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                uniform(3),
            ],
        );
        let pipeline = |entry: &'static str| {
            gpu.pipeline(
                &STYLE,
                PipelineKey {
                    kernel: STYLE.name,
                    entry,
                    overrides: Vec::new(),
                },
                &layout,
            )
        };
        let spare = Tensor::zeros(gpu, &[4])?;
        let status = Tensor::zeros_typed(gpu, &[1], DType::U32)?;
        let means = (0..layers)
            .map(|_| Tensor::zeros(gpu, &[]))
            .collect::<Result<Vec<_>>>()?;
        gpu.scoped(|| {
            for (l, &(b, c, s)) in dims.iter().enumerate() {
                let cs = (c * s).max(1) as f32;
                let params = Params {
                    b: b as u32,
                    c: c as u32,
                    s: s as u32,
                    pad: 0,
                    inv_cs: 1.0 / cs,
                    scale: 2.0 / cs,
                    pad1: [0.0; 2],
                };
                let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("style params"),
                    contents: bytemuck::bytes_of(&params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let grams = [
                    Tensor::zeros(gpu, &[b, c, c])?,
                    Tensor::zeros(gpu, &[b, c, c])?,
                ];
                let dgram = Tensor::zeros(gpu, &[b, c, c])?;
                // Tiled: one workgroup per output tile, x its column tile, y and z together its
                // (batch entry, row tile) pair. Few channels: one invocation per output.
                let small = c < SMALL_C && s <= MAX_ITERATIONS;
                let run = |encoder: &mut wgpu::CommandEncoder,
                           names: [&'static str; 2],
                           feats: &Tensor,
                           dg: &Tensor,
                           to: &Tensor,
                           columns: usize| {
                    let n = to.len();
                    if n == 0 || feats.is_empty() {
                        return;
                    }
                    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("style"),
                        layout: &bgl,
                        entries: &[
                            entry(0, feats.binding(0, feats.len())),
                            entry(1, dg.binding(0, dg.len().max(1))),
                            entry(2, to.binding(0, n)),
                            entry(3, uniforms.as_entire_binding()),
                        ],
                    });
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_bind_group(0, &group, &[]);
                    pass.set_pipeline(&pipeline(names[usize::from(small)]));
                    if small {
                        let workgroups = n.div_ceil(256);
                        let x = workgroups.min(gpu.max_workgroups());
                        pass.dispatch_workgroups(x as u32, workgroups.div_ceil(x) as u32, 1);
                        return;
                    }
                    let pairs = b * c.div_ceil(TILE);
                    let y = pairs.min(max_dispatch);
                    pass.dispatch_workgroups(
                        columns.div_ceil(TILE) as u32,
                        y as u32,
                        pairs.div_ceil(y) as u32,
                    );
                };
                let gram = ["gram", "gram_small"];
                run(encoder, gram, pred[l], &spare, &grams[0], c);
                run(encoder, gram, target[l], &spare, &grams[1], c);
                // mean (G(F̂) − G(F))² and its gradient w.r.t. G(F̂), times w_l·grad_scale.
                let gs = layer_weight(self.layer_weights, l) * self.grad_scale;
                let spec = ElementwiseSpec::new(&MSE, Reduction::Mean, gs).vec4(&MSE_VEC4);
                let own = LossOutput {
                    loss: means[l].clone(),
                    grad: dgram.clone(),
                    status: status.clone(),
                };
                elementwise::encode(gpu, encoder, &spec, &grams[0], &grams[1], &own)?;
                let backward = ["gram_backward", "gram_backward_small"];
                run(encoder, backward, pred[l], &dgram, &out.grads[l], s);
            }
            weighted_sum(
                gpu,
                encoder,
                &means,
                |l| layer_weight(self.layer_weights, l),
                &out.loss,
            )
        })
    }

    /// Computes the loss and the layers' gradients into new tensors and waits for the device.
    pub fn compute(&self, gpu: &Gpu, pred: &[&Tensor], target: &[&Tensor]) -> Result<TupleOutput> {
        compute_layers(gpu, pred, |encoder, out| {
            self.encode(gpu, encoder, pred, target, out)
        })
    }
}
