//! Tensor views: `(buffer, byte offset, shape)` over f32 data (or 16-bit floats, two per 32-bit
//! word), so a caller's buffer slice can be bound without copying; uploads and downloads from
//! slices and ndarray arrays.

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::Gpu;

/// Usages wgloss gives the buffers it creates.
pub const TENSOR_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// Values: predictions, targets, gradients, losses.
    F32,
    /// Class labels.
    I32,
    /// Status words written by kernels.
    U32,
    /// IEEE binary16, two per 32-bit word (the first in the low half). Storage only: kernels
    /// widen to f32, compute and accumulate in f32, and round stored gradients to nearest even.
    F16,
    /// bfloat16 (the upper half of an f32), two per 32-bit word like [`DType::F16`].
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Whether this is one of the 16-bit float types.
    pub fn is_half(self) -> bool {
        self.size() == 2
    }

    /// `x` as it reads back once stored as this type: rounded to nearest even for the 16-bit
    /// types (inf past their range, NaN kept), unchanged otherwise.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F16 => f16_to_f32(f16_bits(x)),
            DType::BF16 => f32::from_bits(u32::from(bf16_bits(x)) << 16),
            DType::F32 | DType::I32 | DType::U32 => x,
        }
    }
}

/// The binary16 nearest to `x` (ties to even), as bits.
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x007f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x0200 } else { 0 };
    }
    // Biased binary16 exponent.
    let e = exp - 112;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    // Keeps `bits` shifted right by `shift`, rounded to nearest even; a carry moves into the
    // exponent (and past the largest finite value into inf), as it should.
    let round = |bits: u32, shift: u32| {
        let kept = bits >> shift;
        let rest = bits & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        kept + u32::from(rest > half || (rest == half && kept & 1 == 1))
    };
    if e <= 0 {
        // Subnormal (in units of 2^-24) or zero: the significand with its implicit bit,
        // shifted by 14 - e; below 2^-25 everything rounds to 0.
        if e < -10 {
            return sign;
        }
        return sign | round(man | 0x0080_0000, (14 - e) as u32) as u16;
    }
    sign | round(((e as u32) << 23) | man, 13) as u16
}

/// The f32 value of binary16 bits.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x03ff);
    match exp {
        0 => sign * man as f32 * 2f32.powi(-24),
        0x1f => f32::from_bits((u32::from(h & 0x8000) << 16) | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits((u32::from(h & 0x8000) << 16) | ((exp + 112) << 23) | (man << 13)),
    }
}

/// The bfloat16 nearest to `x` (ties to even), as bits; NaN stays a quiet NaN.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x0040) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A view of 4-byte elements of a buffer, row-major, starting `offset` bytes in.
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl Tensor {
    /// A view of `shape` starting `offset` bytes into `buffer`. The offset must be a multiple of
    /// 4 and the view must fit the buffer (16-bit elements: its whole 32-bit words, so an odd
    /// count includes the padding half of the last word); binding it in a kernel may further need
    /// the offset to be a multiple of the device's `min_storage_buffer_offset_alignment` (256 on
    /// most devices).
    pub fn new(buffer: wgpu::Buffer, offset: u64, shape: &[usize]) -> Result<Self> {
        Self::new_typed(buffer, offset, shape, DType::F32)
    }

    /// [`Tensor::new`] for elements of type `dtype`.
    pub fn new_typed(
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let t = Self {
            buffer,
            offset,
            shape: shape.to_vec(),
            dtype,
        };
        let end = t.word_bytes().checked_add(offset);
        if !offset.is_multiple_of(4) || end.is_none_or(|end| end > t.buffer.size()) {
            return Err(Error::InvalidView {
                name: "tensor",
                why: format!(
                    "{shape:?} at byte offset {offset} does not fit a buffer of {} bytes \
                     with 4-byte alignment",
                    t.buffer.size()
                ),
            });
        }
        Ok(t)
    }

    /// Uploads `data` as a new tensor of `shape`.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Self> {
        Self::upload(gpu, data, shape, DType::F32)
    }

    /// Uploads `data` as a new tensor of `shape` and type `dtype` (F32, F16 or BF16), each value
    /// rounded to nearest even ([`DType::round`]).
    pub fn from_slice_as(gpu: &Gpu, data: &[f32], shape: &[usize], dtype: DType) -> Result<Self> {
        let bits = |f: fn(f32) -> u16| -> Vec<u32> {
            data.chunks(2)
                .map(|w| u32::from(f(w[0])) | u32::from(w.get(1).map_or(0, |&x| f(x))) << 16)
                .collect()
        };
        match dtype {
            DType::F32 => Self::from_slice(gpu, data, shape),
            DType::F16 => Self::upload_words(gpu, &bits(f16_bits), data.len(), shape, dtype),
            DType::BF16 => Self::upload_words(gpu, &bits(bf16_bits), data.len(), shape, dtype),
            DType::I32 | DType::U32 => Err(Error::DTypeMismatch {
                name: "dtype",
                expected: DType::F32,
                got: dtype,
            }),
        }
    }

    /// Uploads class labels as a new i32 tensor of `shape`.
    pub fn from_labels(gpu: &Gpu, labels: &[i32], shape: &[usize]) -> Result<Self> {
        Self::upload(gpu, labels, shape, DType::I32)
    }

    fn upload<T: bytemuck::Pod>(
        gpu: &Gpu,
        data: &[T],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        Self::upload_words(gpu, data, data.len(), shape, dtype)
    }

    /// Uploads `data`, the 32-bit words of `elements` elements.
    fn upload_words<T: bytemuck::Pod>(
        gpu: &Gpu,
        data: &[T],
        elements: usize,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != elements {
            return Err(Error::ShapeMismatch {
                name: "data",
                expected: shape.to_vec(),
                got: vec![elements],
            });
        }
        check_buffer_size(gpu, std::mem::size_of_val(data) as u64, shape)?;
        // wgpu rejects zero-sized bindings; an empty tensor still owns a 4-byte buffer.
        let buffer = gpu.error_scoped(|| {
            Ok(if data.is_empty() {
                Self::raw_buffer(gpu, 4)
            } else {
                gpu.device()
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("wgloss tensor"),
                        contents: bytemuck::cast_slice(data),
                        usage: TENSOR_USAGES,
                    })
            })
        })?;
        Self::new_typed(buffer, 0, shape, dtype)
    }

    /// Uploads an ndarray array (any layout) as a new tensor of its shape.
    pub fn from_array(gpu: &Gpu, array: ArrayViewD<'_, f32>) -> Result<Self> {
        let data: Vec<f32> = array.iter().copied().collect();
        Self::from_slice(gpu, &data, array.shape())
    }

    /// A new zero-filled f32 tensor.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        Self::zeros_typed(gpu, shape, DType::F32)
    }

    /// A new zero-filled tensor of `dtype`.
    pub fn zeros_typed(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = (dtype.size() * shape.iter().product::<usize>()).next_multiple_of(4) as u64;
        check_buffer_size(gpu, bytes, shape)?;
        let buffer = gpu.error_scoped(|| Ok(Self::raw_buffer(gpu, bytes.max(4))))?;
        Self::new_typed(buffer, 0, shape, dtype)
    }

    fn raw_buffer(gpu: &Gpu, size: u64) -> wgpu::Buffer {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgloss tensor"),
            size,
            usage: TENSOR_USAGES,
            mapped_at_creation: false,
        })
    }

    /// Downloads the elements as f32 (16-bit ones widened; blocks until the device is idle).
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.read_bytes(&self.buffer, self.offset, self.word_bytes())?;
        let halves = || {
            bytes
                .chunks_exact(2)
                .take(self.len())
                .map(|h| u16::from_le_bytes([h[0], h[1]]))
        };
        Ok(match self.dtype {
            DType::F16 => halves().map(f16_to_f32).collect(),
            DType::BF16 => halves()
                .map(|h| f32::from_bits(u32::from(h) << 16))
                .collect(),
            DType::F32 | DType::I32 | DType::U32 => bytemuck::pod_collect_to_vec(&bytes),
        })
    }

    /// Downloads i32 or u32 elements as their bit patterns reinterpreted as i32.
    pub fn to_labels(&self, gpu: &Gpu) -> Result<Vec<i32>> {
        let bytes = gpu.read_bytes(&self.buffer, self.offset, self.byte_len())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Downloads the elements as an ndarray array of the tensor's shape.
    pub fn to_array(&self, gpu: &Gpu) -> Result<ArrayD<f32>> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.to_vec(gpu)?).map_err(|e| {
            Error::Internal(format!(
                "download of {:?} has the wrong length: {e}",
                self.shape
            ))
        })
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Byte offset of the first element.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Shape, row-major.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Checks the element type.
    pub(crate) fn check_dtype(&self, name: &'static str, expected: DType) -> Result<()> {
        if self.dtype == expected {
            Ok(())
        } else {
            Err(Error::DTypeMismatch {
                name,
                expected,
                got: self.dtype,
            })
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the elements in bytes.
    pub fn byte_len(&self) -> u64 {
        (self.dtype.size() * self.len()) as u64
    }

    /// Size of the whole 32-bit words the elements occupy, in bytes.
    fn word_bytes(&self) -> u64 {
        self.byte_len().next_multiple_of(4)
    }

    /// The binding of elements `[start, start + len)` of this view (16-bit elements: `start`
    /// even, and the binding ends on a whole word).
    pub(crate) fn binding(&self, start: usize, len: usize) -> wgpu::BindingResource<'_> {
        let size = self.dtype.size();
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset + (size * start) as u64,
            size: wgpu::BufferSize::new((size * len.max(1)).next_multiple_of(4) as u64),
        })
    }

    /// The binding of elements `[start, start + len)` from the device's storage offset alignment
    /// at or before the first, and the number of elements it holds before it (the kernel's
    /// lead): a segment may then start at any element (16-bit elements: `start` even, for an
    /// even lead and a binding that ends on a whole word). The binding holds fewer than
    /// `min_storage_buffer_offset_alignment` bytes more than the elements.
    pub(crate) fn binding_led(
        &self,
        gpu: &Gpu,
        (start, len): (usize, usize),
    ) -> (wgpu::BindingResource<'_>, u32) {
        let size = self.dtype.size() as u64;
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment).max(1);
        let first = size * start as u64;
        let lead = first % align;
        let binding = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset + first - lead,
            size: wgpu::BufferSize::new((lead + size * len.max(1) as u64).next_multiple_of(4)),
        });
        (binding, (lead / size) as u32)
    }

    /// Checks that the kernel drivers can clear this view (`clear_buffer` needs COPY_DST).
    pub(crate) fn check_clearable(&self, name: &'static str) -> Result<()> {
        self.check_usage(name, wgpu::BufferUsages::COPY_DST)
    }

    /// Checks that the drivers can copy from this view (into their own buffers).
    pub(crate) fn check_copy_source(&self, name: &'static str) -> Result<()> {
        self.check_usage(name, wgpu::BufferUsages::COPY_SRC)
    }

    fn check_usage(&self, name: &'static str, usage: wgpu::BufferUsages) -> Result<()> {
        if !self.buffer.usage().contains(usage) {
            return Err(Error::MissingUsage {
                name,
                missing: usage,
            });
        }
        Ok(())
    }

    /// Checks that this view can be bound by kernels in segments: storage usage and an offset
    /// aligned to the device's storage offset alignment.
    pub(crate) fn check_bindable(&self, gpu: &Gpu, name: &'static str) -> Result<()> {
        if !self.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::MissingUsage {
                name,
                missing: wgpu::BufferUsages::STORAGE,
            });
        }
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment);
        if !self.offset.is_multiple_of(align) {
            return Err(Error::InvalidView {
                name,
                why: format!(
                    "byte offset {} is not a multiple of the device's storage offset alignment {align}",
                    self.offset
                ),
            });
        }
        Ok(())
    }
}

/// Fails unless a buffer of `bytes` fits the device's `max_buffer_size` (256 MiB under wgpu's
/// default limits): past it wgpu's initialised buffers cannot be mapped.
fn check_buffer_size(gpu: &Gpu, bytes: u64, shape: &[usize]) -> Result<()> {
    if bytes > gpu.limits().max_buffer_size {
        return Err(Error::InvalidShape {
            name: "data",
            got: shape.to_vec(),
            why: "larger than the device's max_buffer_size",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_to_nearest_even() {
        let cases: [(f32, u16); 14] = [
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            // Past the largest finite value: 65520 is halfway to 2^16 and rounds to inf.
            (65519.0, 0x7bff),
            (65520.0, 0x7c00),
            (1e10, 0x7c00),
            (f32::INFINITY, 0x7c00),
            (2f32.powi(-14), 0x0400),
            (2f32.powi(-24), 0x0001),
            // Half the smallest subnormal ties to even (0); just above it rounds up.
            (2f32.powi(-25), 0x0000),
            (2f32.powi(-25) * 1.000001, 0x0001),
            // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even is 1; 1 + 3 2^-11 rounds up.
            (1.0 + 2f32.powi(-11), 0x3c00),
            (1.0 + 3.0 * 2f32.powi(-11), 0x3c02),
            (-0.0, 0x8000),
        ];
        for (x, bits) in cases {
            assert_eq!(f16_bits(x), bits, "{x:e}");
        }
        assert!(f16_to_f32(f16_bits(f32::NAN)).is_nan());
        // Every finite binary16 value reads back as itself.
        for h in (0u16..=0xffff).filter(|h| h & 0x7c00 != 0x7c00) {
            assert_eq!(f16_bits(f16_to_f32(h)), h, "{h:#06x}");
        }
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let cases: [(f32, u16); 6] = [
            (1.0, 0x3f80),
            (-3.0, 0xc040),
            // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even is 1.
            (1.0 + 2f32.powi(-8), 0x3f80),
            (1.0 + 3.0 * 2f32.powi(-8), 0x3f82),
            (f32::MAX, 0x7f80),
            (f32::INFINITY, 0x7f80),
        ];
        for (x, bits) in cases {
            assert_eq!(bf16_bits(x), bits, "{x:e}");
        }
        assert!(DType::BF16.round(f32::NAN).is_nan());
        assert!(DType::BF16.round(-f32::NAN).is_nan());
    }
}
