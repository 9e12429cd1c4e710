// Optimizer kernels: AdamW (PyTorch's formulation, the same expressions as
// backends/cpu/optimizer.cpp; with --fmad=false the updates match the CPU's bit for bit given the
// same inputs), squared norms (fixed chunks summed in double, elementwise.cu's reduce_sum), axpy.
#include <cmath>

#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

__global__ void adamw_k(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float eps, float gs,
                        float bc2_sqrt, float step_size, float decay) {
  TANDEM_GRID_LOOP(i, n) {
    const float gi = g[i] * gs;
    const float mi = m[i] + (1.0f - b1) * (gi - m[i]);  // lerp, as torch
    const float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * (mi / denom);
  }
}

__global__ void axpy_k(float* y, const float* x, int64_t n, float alpha) {
  TANDEM_GRID_LOOP(i, n) y[i] += alpha * x[i];
}

void expect_f32(const Tensor& t, const char* what, const char* role) {
  check(t.dtype == DType::f32 && t.is_contiguous(), "cuda backend: ", what, ": ", role, " must be a contiguous f32 tensor");
}

}  // namespace

}  // namespace tandem::cuda

namespace tandem {

double CudaBackend::sum_squares(const Tensor& t) {
  cuda::expect_f32(t, "sum_squares", "the tensor");
  cuda_check(cudaSetDevice(device_), "cudaSetDevice");
  auto* result = static_cast<double*>(scratch(cuda::kSlotResult, sizeof(double)));
  cuda::reduce_sum(*this, cuda::ptr(t), t.numel(), true, nullptr, result, nullptr);
  double host = 0;
  download(&host, result, 0, sizeof host);
  return host;
}

void CudaBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  for (const auto& [t, role] : {std::pair{&param, "param"}, {&grad, "grad"}, {&m, "m"}, {&v, "v"}}) {
    cuda::expect_f32(*t, "adamw", role);
    check(t->numel() == param.numel(), "cuda backend: adamw: ", role, " has ", t->numel(), " elements, param ", param.numel());
  }
  const int64_t n = param.numel();
  if (n == 0) return;
  cuda_check(cudaSetDevice(device_), "cudaSetDevice");
  const float bc1 = 1.0f - std::pow(s.beta1, static_cast<float>(s.step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(s.beta2, static_cast<float>(s.step)));
  cuda::adamw_k<<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(cuda::ptr(param), cuda::ptr(grad), cuda::ptr(m),
                                                                   cuda::ptr(v), n, s.beta1, s.beta2, s.eps, s.grad_scale,
                                                                   bc2_sqrt, s.lr / bc1, 1.0f - s.lr * s.weight_decay);
  launched("adamw", nullptr);
}

void CudaBackend::axpy(const Tensor& y, float alpha, const Tensor& x) {
  cuda::expect_f32(y, "axpy", "y");
  cuda::expect_f32(x, "axpy", "x");
  check(x.numel() == y.numel(), "cuda backend: axpy: x has ", x.numel(), " elements, y ", y.numel());
  const int64_t n = y.numel();
  if (n == 0) return;
  cuda_check(cudaSetDevice(device_), "cudaSetDevice");
  cuda::axpy_k<<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(cuda::ptr(y), cuda::ptr(x), n, alpha);
  launched("axpy", nullptr);
}

}  // namespace tandem
