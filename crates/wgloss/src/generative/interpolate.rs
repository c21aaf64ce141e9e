use crate::error::{Error, Result};
use crate::metric::info_nce::{combine, Mix};
use crate::{DType, Gpu, Tensor};

/// Records WGAN-GP's interpolates `out = eps_i · real + (1 − eps_i) · fake`, one `eps` per
/// sample (Gulrajani et al. 2017: `eps ~ U[0, 1]`), into `out`, the point at which the
/// critic's gradients for [`GradientPenalty`](crate::GradientPenalty) are taken.
/// # Shapes
/// `real`, `fake`, `out`: `[N, ...]`, equal (f32, each within one storage binding); `eps`: `[N]`.
pub fn gan_interpolate(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    real: &Tensor,
    fake: &Tensor,
    eps: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let shape = real.shape();
    let Some(&samples) = shape.first() else {
        return Err(Error::InvalidShape {
            name: "real",
            got: shape.to_vec(),
            why: "expected a batch [N, ...]",
        });
    };
    for (t, name) in [(fake, "fake"), (out, "out")] {
        if t.shape() != shape {
            return Err(Error::ShapeMismatch {
                name,
                expected: shape.to_vec(),
                got: t.shape().to_vec(),
            });
        }
    }
    if eps.shape() != [samples] {
        return Err(Error::ShapeMismatch {
            name: "eps",
            expected: vec![samples],
            got: eps.shape().to_vec(),
        });
    }
    for (t, name) in [(real, "real"), (fake, "fake"), (eps, "eps"), (out, "out")] {
        t.check_dtype(name, DType::F32)?;
        t.check_bindable(gpu, name)?;
    }
    let n = real.len();
    if 4 * n as u64 > gpu.limits().max_storage_buffer_binding_size {
        return Err(Error::InvalidShape {
            name: "real",
            got: shape.to_vec(),
            why: "the batch must fit one storage binding",
        });
    }
    if n == 0 {
        return Ok(());
    }
    gpu.scoped(|| {
        let per_sample = n / samples;
        combine(
            gpu,
            encoder,
            real.binding(0, n),
            fake.binding(0, n),
            out.binding(0, n),
            n,
            Mix::PerSample(eps.binding(0, samples), per_sample),
        );
        Ok(())
    })
}
