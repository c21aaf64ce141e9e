//! Tensor views: `(buffer, byte offset, shape)` over f32 data, so a caller's buffer slice can be
//! bound without copying; uploads and downloads from slices and ndarray arrays.

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::Gpu;

/// Usages wgloss gives the buffers it creates.
pub const TENSOR_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Element type of a tensor: 4 bytes either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// Values: predictions, targets, gradients, losses.
    F32,
    /// Class labels.
    I32,
    /// Status words written by kernels.
    U32,
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
    /// 4 and the view must fit the buffer; binding it in a kernel may further need the offset to
    /// be a multiple of the device's `min_storage_buffer_offset_alignment` (256 on most devices).
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
        let end = t.byte_len().checked_add(offset);
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
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(Error::ShapeMismatch {
                name: "data",
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        // wgpu rejects zero-sized bindings; an empty tensor still owns a 4-byte buffer.
        let buffer = gpu.scoped(|| {
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
        let bytes = 4 * shape.iter().product::<usize>() as u64;
        let buffer = gpu.scoped(|| Ok(Self::raw_buffer(gpu, bytes.max(4))))?;
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

    /// Downloads the elements (blocks until the device is idle).
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.read_bytes(&self.buffer, self.offset, self.byte_len())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
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
        4 * self.len() as u64
    }

    /// The binding of elements `[start, start + len)` of this view.
    pub(crate) fn binding(&self, start: usize, len: usize) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset + 4 * start as u64,
            size: wgpu::BufferSize::new(4 * len.max(1) as u64),
        })
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
