//! The segmented GPU sort against a CPU sort: several segment lengths (below, at and above a
//! workgroup block, and a radix tile of every width), many segments, duplicate keys (ties in
//! input order), signed zeros, infinities and NaN keys (last).

use wgloss::{encode_sort, DType, Gpu, Tensor, TENSOR_USAGES};
use wgloss_suite::check::Rng;
use wgloss_suite::shared_gpu;
use wgpu::util::DeviceExt;

fn sorted_on_gpu(
    gpu: &Gpu,
    keys: &[f32],
    vals: &[u32],
    segment_len: usize,
) -> (Vec<f32>, Vec<u32>) {
    let k = Tensor::from_slice(gpu, keys, &[keys.len()]).unwrap();
    let buffer = gpu
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("vals"),
            contents: bytemuck::cast_slice(vals),
            usage: TENSOR_USAGES,
        });
    let v = Tensor::new_typed(buffer, 0, &[vals.len()], DType::U32).unwrap();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encode_sort(gpu, &mut encoder, &k, &v, segment_len).unwrap();
    gpu.submit_and_wait(encoder).unwrap();
    let vals = v
        .to_labels(gpu)
        .unwrap()
        .iter()
        .map(|&x| x as u32)
        .collect();
    (k.to_vec(gpu).unwrap(), vals)
}

/// Each segment sorted by decreasing key, stably (-0 equal to +0), NaN keys last.
fn sorted_on_cpu(keys: &[f32], vals: &[u32], segment_len: usize) -> (Vec<f32>, Vec<u32>) {
    let mut pairs: Vec<(f32, u32)> = keys.iter().copied().zip(vals.iter().copied()).collect();
    for seg in pairs.chunks_mut(segment_len) {
        // `sort_by` is stable.
        seg.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => b.0.partial_cmp(&a.0).unwrap(),
        });
    }
    pairs.into_iter().unzip()
}

#[test]
fn segments_sort_like_the_cpu() {
    let Some(gpu) = shared_gpu() else { return };
    for (segment_len, segments) in [
        (1usize, 512usize),
        (8, 128),
        (512, 3),
        (1024, 2),
        (2048, 3),
        (4096, 5),
        (1 << 15, 2),
        (1 << 17, 2),
    ] {
        let total = segment_len * segments;
        let total = total.div_ceil(512) * 512;
        let mut rng = Rng::new(segment_len as u64);
        // Keys on a coarse grid so that ties are common, both signs, some of them special;
        // values distinct within a segment, in no order.
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        let keys: Vec<f32> = rng
            .uniform(total, -32.0, 32.0)
            .iter()
            .enumerate()
            .map(|(i, x)| match i % 13 {
                0 => specials[(i / 13) % specials.len()],
                _ => x.floor() / 8.0,
            })
            .collect();
        let vals: Vec<u32> = (0..total).map(|i| ((i * 7919) % total) as u32).collect();
        let (want_keys, want_vals) = sorted_on_cpu(&keys, &vals, segment_len);
        let bits = |k: &[f32]| k.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // The radix tiles of a CPU adapter (a SIMD group), of a GPU (a whole workgroup), and
        // between.
        for lanes in [2, 16, 256] {
            let gpu = gpu.with_lanes(lanes);
            let (got_keys, got_vals) = sorted_on_gpu(&gpu, &keys, &vals, segment_len);
            assert!(
                bits(&got_keys) == bits(&want_keys) && got_vals == want_vals,
                "segment_len {segment_len}, lanes {lanes}: the GPU order differs from the CPU's"
            );
        }
    }
}

#[test]
fn nan_keys_go_last_and_bad_lengths_are_rejected() {
    let Some(gpu) = shared_gpu() else { return };
    let mut keys = Rng::new(3).uniform(1024, -1.0, 1.0);
    keys[5] = f32::NAN;
    keys[700] = f32::NAN;
    let vals: Vec<u32> = (0..1024).collect();
    let (k, v) = sorted_on_gpu(gpu, &keys, &vals, 1024);
    assert!(k[1022].is_nan() && k[1023].is_nan());
    assert_eq!(&v[1022..], &[5, 700]);
    assert!(k[..1022].windows(2).all(|w| w[0] >= w[1]));

    let k = Tensor::from_slice(gpu, &[0.0; 1000], &[1000]).unwrap();
    let v = Tensor::zeros_typed(gpu, &[1000], DType::U32).unwrap();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let r = encode_sort(gpu, &mut encoder, &k, &v, 8);
    assert!(
        matches!(r, Err(wgloss::Error::InvalidShape { .. })),
        "{r:?}"
    );
}
