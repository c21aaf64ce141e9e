//! SSIM loss (F4), kornia `ssim_loss`: the separable Gaussian blur, the SSIM map, its loss and
//! the gradient by the blur's adjoint, all on the GPU (`shaders/segmentation/ssim.wgsl`).

use wgpu::util::DeviceExt;

use crate::elementwise::{entry, storage, uniform};
use crate::error::{check_param, Error, Result};
use crate::gpu::{PipelineKey, MAX_ITERATIONS};
use crate::kernel::SSIM;
use crate::narrow::via_f32;
use crate::{DType, Gpu, Loss, LossOutput, Reduction, Tensor};

/// Which part of the SSIM map the loss covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SsimPadding {
    /// The whole image; the blur reflects at the borders (torch's `reflect`).
    #[default]
    Same,
    /// Only pixels whose window fits the image (cropped by half a window per side).
    Valid,
}

/// SSIM loss, kornia `ssim_loss`: per pixel `clamp((1 − SSIM) / 2, 0, 1)` with
///
/// ```text
/// SSIM = (2 μ1 μ2 + C1)(2 σ12 + C2) / ((μ1² + μ2² + C1)(σ1² + σ2² + C2) + eps)
/// ```
/// from Gaussian-weighted local means, variances and covariance (separable window of odd size
/// `window_size`, standard deviation `sigma`), C1 = (k1 · max_val)², C2 = (k2 · max_val)².
/// Borders reflect as torch's `reflect` padding, extended periodically so that a window larger
/// than the image (torch would refuse it) is defined too. The gradient is w.r.t. `pred`;
/// `target` is a constant.
/// # Shapes
/// `pred`, `target`: `[N, C, H, W]` (f32, or both F16 or both BF16 through f32 copies, the
/// gradient in their type); loss under reduction none: `[N, C, H', W']` (H' = H under
/// same padding, H − window + 1 under valid). Defaults: window 11, sigma 1.5, max_val 1,
/// k1 0.01, k2 0.03, eps 1e-12, same padding, reduction mean, grad_scale 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ssim {
    /// Window size (odd, ≥ 1).
    pub window_size: usize,
    /// Standard deviation of the Gaussian window (> 0).
    pub sigma: f32,
    /// Dynamic range of the images (> 0).
    pub max_val: f32,
    /// C1 = (k1 · max_val)² (≥ 0).
    pub k1: f32,
    /// C2 = (k2 · max_val)² (≥ 0).
    pub k2: f32,
    /// Added to the denominator (≥ 0).
    pub eps: f32,
    /// Same or valid.
    pub padding: SsimPadding,
    /// Reduction over the loss map.
    pub reduction: Reduction,
    /// Multiplier of the gradient.
    pub grad_scale: f32,
}

impl Default for Ssim {
    fn default() -> Self {
        Self {
            window_size: 11,
            sigma: 1.5,
            max_val: 1.0,
            k1: 0.01,
            k2: 0.03,
            eps: 1e-12,
            padding: SsimPadding::Same,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        }
    }
}

/// Uniform block of `ssim.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    planes: u32,
    height: u32,
    width: u32,
    lead: u32,
    plane_base: u32,
    wg_base: u32,
    num_partials: u32,
    per_pixel: u32,
    valid: u32,
    c1: f32,
    c2: f32,
    eps: f32,
    loss_scale: f32,
    grad_scale: f32,
    loss_lead: u32,
    pad: u32,
}

const PARAMS_STRIDE: u64 = 256;
/// Maps of the scratch buffer per pixel.
const MAPS: usize = 8;

impl Ssim {
    /// The normalised Gaussian window.
    fn window(&self) -> Vec<f32> {
        let k = self.window_size;
        let s = f64::from(self.sigma);
        let g: Vec<f64> = (0..k)
            .map(|i| {
                let x = i as f64 - (k / 2) as f64;
                (-x * x / (2.0 * s * s)).exp()
            })
            .collect();
        let total: f64 = g.iter().sum();
        g.iter().map(|v| (v / total) as f32).collect()
    }

    /// Height and width of the loss map for images of `h` × `w`.
    fn map_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        match self.padding {
            SsimPadding::Same => Ok((h, w)),
            SsimPadding::Valid => {
                let k = self.window_size;
                if h < k || w < k {
                    return Err(Error::InvalidShape {
                        name: "pred",
                        got: vec![h, w],
                        why: "valid padding needs images at least as large as the window",
                    });
                }
                Ok((h - k + 1, w - k + 1))
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let k = self.window_size;
        check_param(
            "window_size",
            k as f64,
            "odd, in 1..=63",
            k % 2 == 1 && k <= 63,
        )?;
        for (name, v, ok, domain) in [
            ("sigma", self.sigma, self.sigma > 0.0, "> 0"),
            ("max_val", self.max_val, self.max_val > 0.0, "> 0"),
            ("k1", self.k1, self.k1 >= 0.0, ">= 0"),
            ("k2", self.k2, self.k2 >= 0.0, ">= 0"),
            ("eps", self.eps, self.eps >= 0.0, ">= 0"),
        ] {
            check_param(name, v.into(), domain, ok)?;
        }
        crate::config::check_grad_scale(self.grad_scale)
    }
}

impl Loss for Ssim {
    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn output(
        &self,
        gpu: &Gpu,
        input_shape: &[usize],
        _target_shape: &[usize],
    ) -> Result<LossOutput> {
        let loss_shape = match (self.reduction, input_shape) {
            (Reduction::None, &[n, c, h, w]) => {
                let (oh, ow) = self.map_size(h, w).unwrap_or((h, w));
                vec![n, c, oh, ow]
            }
            (Reduction::None, _) => input_shape.to_vec(),
            (Reduction::Mean | Reduction::Sum, _) => Vec::new(),
        };
        LossOutput::with_loss_shape(gpu, input_shape, &loss_shape)
    }

    fn encode(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        pred: &Tensor,
        target: &Tensor,
        out: &LossOutput,
    ) -> Result<()> {
        self.validate()?;
        if pred.dtype().is_half() {
            // 16-bit images through f32 copies; the gradient packed back.
            let values = [("pred", pred), ("target", target)];
            return via_f32(gpu, encoder, &values, out, |encoder, wide, out| {
                self.encode(gpu, encoder, &wide[0], &wide[1], out)
            });
        }
        let &[n, c, h, w] = pred.shape() else {
            return Err(Error::InvalidShape {
                name: "pred",
                got: pred.shape().to_vec(),
                why: "images must be [N, C, H, W]",
            });
        };
        if target.shape() != pred.shape() {
            return Err(Error::ShapeMismatch {
                name: "target",
                expected: pred.shape().to_vec(),
                got: target.shape().to_vec(),
            });
        }
        if out.grad.shape() != pred.shape() {
            return Err(Error::ShapeMismatch {
                name: "grad",
                expected: pred.shape().to_vec(),
                got: out.grad.shape().to_vec(),
            });
        }
        let (oh, ow) = self.map_size(h, w)?;
        let loss_shape = match self.reduction {
            Reduction::None => vec![n, c, oh, ow],
            Reduction::Mean | Reduction::Sum => Vec::new(),
        };
        if out.loss.len() != loss_shape.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                name: "loss",
                expected: loss_shape,
                got: out.loss.shape().to_vec(),
            });
        }
        for (t, name) in [
            (pred, "pred"),
            (target, "target"),
            (&out.grad, "grad"),
            (&out.loss, "loss"),
        ] {
            t.check_dtype(name, DType::F32)?;
            t.check_bindable(gpu, name)?;
        }
        if !out
            .loss
            .buffer()
            .usage()
            .contains(wgpu::BufferUsages::COPY_DST)
        {
            return Err(Error::MissingUsage {
                name: "loss",
                missing: wgpu::BufferUsages::COPY_DST,
            });
        }
        let plane = h * w;
        let limits = gpu.limits();
        let max_elems = (limits.max_storage_buffer_binding_size / 4) as usize;
        if MAPS * plane > max_elems || pred.len() > u32::MAX as usize / 2 {
            return Err(Error::InvalidShape {
                name: "pred",
                got: pred.shape().to_vec(),
                why: "an image's scratch (8 maps) exceeds a storage binding",
            });
        }
        // Segments of whole planes whose scratch fits one binding (their views, an eighth of
        // that, are bound from the alignment before them).
        let planes = n * c;
        let seg_planes = (max_elems / (MAPS * plane.max(1))).max(1);
        let mut segs = Vec::new();
        let (mut first, mut wg_base) = (0, 0);
        while first < planes {
            let count = seg_planes.min(planes - first);
            let pixels = count * plane;
            let workgroups = gpu
                .max_workgroups()
                .max(pixels.div_ceil(256 * MAX_ITERATIONS))
                .min(pixels.div_ceil(256))
                .clamp(1, 65_535);
            segs.push((first, count, workgroups, wg_base));
            first += count;
            wg_base += workgroups;
        }
        let num_partials = wg_base;
        let map_elems = (planes * oh * ow) as f64;
        let loss_scale = match self.reduction {
            Reduction::Mean if map_elems > 0.0 => 1.0 / map_elems,
            _ => 1.0,
        };
        let c1 = (f64::from(self.k1) * f64::from(self.max_val)).powi(2) as f32;
        let c2 = (f64::from(self.k2) * f64::from(self.max_val)).powi(2) as f32;
        let per_pixel = self.reduction == Reduction::None;
        // Pipeline constants: the window radius, and whether a window reaches past the far side
        // of an image (a padded position then reflects more than once).
        let radius = (self.window_size / 2) as u32;
        let wide = radius as usize >= h.min(w);
        // Border passes for the reflected taps of the adjoint along a direction whose lines are
        // long enough that most of their pixels have none (at most half within r of an end).
        let split = |n: usize| !wide && n >= 4 * radius as usize + 4;
        let (split_v, split_h) = (split(h), split(w));

        gpu.scoped(|| {
            if !per_pixel {
                encoder.clear_buffer(out.loss.buffer(), out.loss.offset(), Some(4));
            }
            if planes == 0 || plane == 0 {
                return Ok(());
            }
            let device = gpu.device();
            // The segment's (first, count) of loss-map values.
            let maps = |first: usize, count: usize| (first * oh * ow, count * oh * ow);
            let mut blocks = vec![0u8; PARAMS_STRIDE as usize * segs.len()];
            for (i, &(first, count, _, wg_base)) in segs.iter().enumerate() {
                let p = Params {
                    planes: count as u32,
                    height: h as u32,
                    width: w as u32,
                    lead: pred.binding_led(gpu, (first * plane, count * plane)).1,
                    plane_base: first as u32,
                    wg_base: wg_base as u32,
                    num_partials: num_partials as u32,
                    per_pixel: u32::from(per_pixel),
                    valid: u32::from(self.padding == SsimPadding::Valid),
                    c1,
                    c2,
                    eps: self.eps,
                    loss_scale: loss_scale as f32,
                    grad_scale: (f64::from(self.grad_scale) * loss_scale) as f32,
                    loss_lead: out.loss.binding_led(gpu, maps(first, count)).1,
                    pad: 0,
                };
                let at = i * PARAMS_STRIDE as usize;
                blocks[at..at + size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
            }
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ssim params"),
                contents: &blocks,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let scratch_len = MAPS * plane * seg_planes.min(planes);
            let work = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ssim scratch"),
                size: 4 * scratch_len as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let partials = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ssim partials"),
                size: 4 * num_partials.max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            // The shader's `array<vec4<f32>, 16>`: the window padded to 64 weights.
            let mut weights = self.window();
            weights.resize(64, 0.0);
            let window = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ssim window"),
                contents: bytemuck::cast_slice(&weights),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let (bgl, pipeline_layout) = gpu.layout(
                "ssim",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, false),
                    storage(3, false),
                    storage(4, false),
                    storage(5, false),
                    uniform(6),
                    uniform(7),
                ],
            );
            let groups: Vec<wgpu::BindGroup> = segs
                .iter()
                .enumerate()
                .map(|(i, &(first, count, _, _))| {
                    let (start, len) = (first * plane, count * plane);
                    let loss = if per_pixel {
                        out.loss.binding_led(gpu, maps(first, count)).0
                    } else {
                        out.loss.binding(0, 1)
                    };
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("ssim"),
                        layout: &bgl,
                        entries: &[
                            entry(0, pred.binding_led(gpu, (start, len)).0),
                            entry(1, target.binding_led(gpu, (start, len)).0),
                            entry(2, out.grad.binding_led(gpu, (start, len)).0),
                            entry(3, loss),
                            entry(4, partials.as_entire_binding()),
                            entry(
                                5,
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &work,
                                    offset: 0,
                                    size: wgpu::BufferSize::new(4 * (MAPS * len) as u64),
                                }),
                            ),
                            entry(
                                6,
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &uniforms,
                                    offset: i as u64 * PARAMS_STRIDE,
                                    size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                                }),
                            ),
                            entry(7, window.as_entire_binding()),
                        ],
                    })
                })
                .collect();
            let pipeline = |entry: &'static str| {
                gpu.pipeline(
                    &SSIM,
                    PipelineKey {
                        kernel: SSIM.name,
                        entry,
                        overrides: vec![
                            ("RADIUS", radius),
                            ("WIDE", wide.into()),
                            ("SPLIT_V", split_v.into()),
                            ("SPLIT_H", split_h.into()),
                        ],
                    },
                    &pipeline_layout,
                )
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("ssim"),
                timestamp_writes: None,
            });
            // Each segment runs all four passes before the next reuses the scratch.
            for (&(_, _, workgroups, _), g) in segs.iter().zip(&groups) {
                pass.set_bind_group(0, g, &[]);
                for entry in [
                    "blur_h",
                    "blur_v",
                    "adjoint_v",
                    "border_v",
                    "adjoint_h",
                    "border_h",
                ] {
                    if (entry == "border_v" && !split_v) || (entry == "border_h" && !split_h) {
                        continue;
                    }
                    pass.set_pipeline(&pipeline(entry));
                    pass.dispatch_workgroups(workgroups as u32, 1, 1);
                }
            }
            if !per_pixel {
                pass.set_bind_group(0, &groups[0], &[]);
                pass.set_pipeline(&pipeline("reduce"));
                pass.dispatch_workgroups(1, 1, 1);
            }
            Ok(())
        })
    }
}
