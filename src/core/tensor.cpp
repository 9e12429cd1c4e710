#include "core/tensor.h"

#include "core/backend.h"
#include "core/error.h"

namespace tandem {

Storage::Storage(Backend* b, size_t n) : backend(b), bytes(n) { handle = b->alloc(n); }
Storage::~Storage() {
  if (handle && owned) backend->free(handle);
}

Tensor Tensor::empty(Backend& backend, const Shape& shape, DType dtype) {
  Tensor t;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dtype;
  t.storage = std::make_shared<Storage>(&backend, std::max<size_t>(t.nbytes(), 1));
  return t;
}

Tensor Tensor::zeros(Backend& backend, const Shape& shape, DType dtype) {
  Tensor t = empty(backend, shape, dtype);
  t.fill_zero();
  return t;
}

Tensor Tensor::from_host(Backend& backend, const Shape& shape, std::span<const float> data, DType dtype) {
  Tensor t = empty(backend, shape, dtype);
  t.copy_from_host(data);
  return t;
}

Tensor Tensor::from_host_i32(Backend& backend, const Shape& shape, std::span<const int32_t> data) {
  Tensor t = empty(backend, shape, DType::i32);
  t.copy_from_host_i32(data);
  return t;
}

Tensor Tensor::reshaped(const Shape& new_shape) const {
  check(is_contiguous(), "reshape of a non-contiguous tensor ", shape_str(shape));
  check(tandem::numel(new_shape) == numel(), "cannot view ", shape_str(shape), " as ", shape_str(new_shape));
  Tensor t = *this;
  t.shape = new_shape;
  t.strides = contiguous_strides(new_shape);
  return t;
}

std::vector<float> Tensor::to_host() const {
  check((is_float(dtype) || dtype == DType::q8_0) && is_contiguous(), "to_host: needs a contiguous f32, bf16 or q8_0 tensor");
  std::vector<float> out(static_cast<size_t>(numel()));
  if (dtype == DType::f32) {
    backend().download(out.data(), storage->handle, offset, nbytes());
  } else if (dtype == DType::q8_0) {
    std::vector<uint8_t> q(nbytes());
    backend().download(q.data(), storage->handle, offset, nbytes());
    dequantize_q8_0(q.data(), out.data(), numel());
  } else {
    std::vector<uint16_t> h(out.size());
    backend().download(h.data(), storage->handle, offset, nbytes());
    bf16_to_f32(h.data(), out.data(), h.size());
  }
  return out;
}

std::vector<int32_t> Tensor::to_host_i32() const {
  check(dtype == DType::i32 && is_contiguous(), "to_host_i32: needs a contiguous i32 tensor");
  std::vector<int32_t> out(static_cast<size_t>(numel()));
  backend().download(out.data(), storage->handle, offset, nbytes());
  return out;
}

void Tensor::copy_from_host(std::span<const float> data) {
  check((is_float(dtype) || dtype == DType::q8_0) && static_cast<int64_t>(data.size()) == numel() && is_contiguous(),
        "copy_from_host: ", data.size(), " floats into tensor ", shape_str(shape), " ", dtype_name(dtype));
  if (dtype == DType::f32) return backend().upload(storage->handle, offset, data.data(), nbytes());
  if (dtype == DType::q8_0) {
    check(!shape.empty() && shape.back() % kQ8Block == 0, "copy_from_host: q8_0 needs a last dim that is a multiple of ",
          kQ8Block, ", tensor ", shape_str(shape));
    std::vector<uint8_t> q(nbytes());
    quantize_q8_0(data.data(), q.data(), numel());
    return backend().upload(storage->handle, offset, q.data(), nbytes());
  }
  std::vector<uint16_t> h(data.size());
  f32_to_bf16(data.data(), h.data(), h.size());
  backend().upload(storage->handle, offset, h.data(), nbytes());
}

void Tensor::copy_from_host_i32(std::span<const int32_t> data) {
  check(dtype == DType::i32 && static_cast<int64_t>(data.size()) == numel() && is_contiguous(),
        "copy_from_host_i32: ", data.size(), " ints into tensor ", shape_str(shape));
  backend().upload(storage->handle, offset, data.data(), nbytes());
}

void Tensor::copy_from(const Tensor& src) {
  check(&src.backend() == &backend() && src.shape == shape && src.dtype == dtype && is_contiguous() &&
            src.is_contiguous(),
        "copy_from: incompatible tensors ", shape_str(src.shape), " -> ", shape_str(shape));
  backend().copy(storage->handle, offset, src.storage->handle, src.offset, nbytes());
}

void Tensor::fill_zero() { backend().zero(storage->handle, offset, nbytes()); }

}  // namespace tandem
