#pragma once
#include "core/backend.h"

namespace tandem {

// The reference backend: host memory, OpenMP + AVX-512 kernels and GEMM (OpenBLAS without AVX-512).
class CpuBackend final : public Backend {
 public:
  CpuBackend();
  std::string name() const override { return "cpu"; }
  void* alloc(size_t bytes) override;
  void free(void* handle) override;
  void upload(void* dst, size_t dst_offset, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t src_offset, size_t bytes) override;
  void copy(void* dst, size_t dst_offset, const void* src, size_t src_offset, size_t bytes) override;
  void zero(void* dst, size_t offset, size_t bytes) override;
  void sync() override {}
  void attach_thread() override;
  bool supports(const Node& node) const override;
  void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) override;
  double sum_squares(const Tensor& t) override;
  void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWStep& s) override;
  void axpy(const Tensor& y, float alpha, const Tensor& x) override;
};

}  // namespace tandem
