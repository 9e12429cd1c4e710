// A tensor is a typed, shaped view into a Storage: device memory owned by one backend.
// Nothing outside a backend dereferences storage memory: moving data to and from the host goes
// through Tensor::to_host / Tensor::from_host, which call the owning backend.
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"

namespace tandem {

class Backend;

// One device allocation. `handle` is opaque to everyone but `backend` (a host pointer on the CPU
// backend, a cl_mem or device pointer elsewhere).
struct Storage {
  Backend* backend = nullptr;
  void* handle = nullptr;
  size_t bytes = 0;
  bool owned = true;  // false: a view of memory someone else frees (a backend's scratch)
  Storage(Backend* b, size_t n);
  Storage(Backend* b, void* borrowed, size_t n) : backend(b), handle(borrowed), bytes(n), owned(false) {}
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Tensor {
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // in bytes, from the start of storage
  Shape shape;
  Shape strides;  // in elements
  DType dtype = DType::f32;

  static Tensor empty(Backend& backend, const Shape& shape, DType dtype);  // uninitialised
  static Tensor zeros(Backend& backend, const Shape& shape, DType dtype);
  // f32 values stored as `dtype` (bf16: rounded by the one conversion routine, q8_0: quantized by
  // blocks of the last dim, which must be a multiple of 32; core/dtype.h).
  static Tensor from_host(Backend& backend, const Shape& shape, std::span<const float> data, DType dtype = DType::f32);
  static Tensor from_host_i32(Backend& backend, const Shape& shape, std::span<const int32_t> data);

  bool defined() const { return storage != nullptr; }
  int64_t numel() const { return tandem::numel(shape); }
  size_t nbytes() const { return storage_bytes(dtype, numel()); }
  bool is_contiguous() const { return strides == contiguous_strides(shape); }
  Backend& backend() const { return *storage->backend; }

  // A view of the same memory with another shape (the tensor must be contiguous).
  Tensor reshaped(const Shape& new_shape) const;

  // Host copies (synchronous). Only contiguous tensors. to_host widens bf16 (exactly) and
  // dequantizes q8_0.
  std::vector<float> to_host() const;
  std::vector<int32_t> to_host_i32() const;
  void copy_from_host(std::span<const float> data);
  void copy_from_host_i32(std::span<const int32_t> data);
  void copy_from(const Tensor& src);  // same backend, same shape/dtype, both contiguous
  void fill_zero();
};

}  // namespace tandem
