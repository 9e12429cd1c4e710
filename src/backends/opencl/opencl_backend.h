// The OpenCL backend: device buffers (cl_mem) and one in-order command queue. Every op has an
// OpenCL C kernel (one source per op family, like backends/cpu); the program is compiled once per
// process. Tensors are (cl_mem, byte offset) pairs: the memory planner's arena is one buffer and
// kernels take element offsets, never sub-buffers (whose origin must meet the device's alignment).
// Reductions run in a fixed order without atomics, so runs are reproducible.
#pragma once
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <array>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/graph.h"

namespace tandem {

// The devices the OpenCL runtime exposes, as "platform / device (features)" lines.
std::vector<std::string> opencl_devices();

class OpenClBackend final : public Backend {
 public:
  OpenClBackend();  // picks a device by features (see opencl_backend.cpp); throws when there is none
  ~OpenClBackend() override;
  std::string name() const override { return "opencl"; }
  void* alloc(size_t bytes) override;
  void free(void* handle) override;
  void upload(void* dst, size_t dst_offset, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t src_offset, size_t bytes) override;
  void copy(void* dst, size_t dst_offset, const void* src, size_t src_offset, size_t bytes) override;
  void zero(void* dst, size_t offset, size_t bytes) override;
  void sync() override;
  bool supports(const Node& node) const override;
  void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) override;
  double sum_squares(const Tensor& t) override;
  void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWStep& s) override;
  void axpy(const Tensor& y, float alpha, const Tensor& x) override;

  // For the kernel files. A Tensor argument becomes two kernel arguments: its buffer and its
  // offset in elements (cl_long).
  struct Arg {
    enum class T { mem, i64, f32 } t;
    cl_mem mem = nullptr;
    cl_long i = 0;
    cl_float f = 0;
    bool tensor = false;  // a Tensor: the buffer, then its offset in elements
    Arg(const Tensor& x);  // NOLINT: implicit by design
    Arg(cl_mem m) : t(T::mem), mem(m) {}
    Arg(int64_t v) : t(T::i64), i(v) {}
    Arg(int v) : t(T::i64), i(v) {}
    Arg(float v) : t(T::f32), f(v) {}
  };
  // Enqueues kernel `name` over a 1-D range of `global` work-items (rounded up to `local`; kernels
  // check their bounds). local = 0 lets the runtime choose.
  void launch(const char* name, size_t global, std::initializer_list<Arg> args, size_t local = 0);
  void launch3d(const char* name, std::array<size_t, 3> global, std::array<size_t, 3> local,
                std::initializer_list<Arg> args);
  // A scratch buffer of at least `bytes`, one per slot, reused across calls (in-order queue).
  cl_mem scratch(int slot, size_t bytes);
  // A read-only device copy of `bytes` (small tables such as RoPE frequencies), uploaded once per
  // distinct content and kept for the backend's lifetime.
  cl_mem constant(const void* data, size_t bytes);
  // A contiguous tensor of `shape` and `dtype` in staging buffer `slot`, grown as needed and reused
  // across calls (in-order queue): the f32 copies of a bf16 node's operands (bf16.cpp).
  Tensor staging(int slot, const Shape& shape, DType dtype);
  const std::string& device_name() const { return device_name_; }
  cl_command_queue queue() { return queue_; }
  cl_device_id device() const { return dev_; }

 private:
  cl_kernel kernel(const char* name);
  cl_context ctx_ = nullptr;
  cl_device_id dev_ = nullptr;
  cl_command_queue queue_ = nullptr;
  cl_program program_ = nullptr;
  std::map<std::string, cl_kernel> kernels_;
  std::map<int, std::pair<cl_mem, size_t>> scratch_;
  std::map<std::string, cl_mem> constants_;
  std::map<int, std::shared_ptr<Storage>> staging_;
  std::string device_name_;
};

// Throws an Error naming `what` when an OpenCL call fails.
void cl_check(cl_int err, const char* what);

}  // namespace tandem
