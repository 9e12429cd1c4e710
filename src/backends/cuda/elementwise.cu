// Element-wise ops and reductions (ops/elementwise.cpp, ops/reduce.cpp). Expressions are written
// as the CPU kernels write them (nvcc's --fmad=false keeps a*b+c two roundings, as on the CPU);
// gelu_grad takes 1 - tanh^2 as 1/cosh^2, as the OpenCL kernel does (no cancellation at saturation).
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/reduce.cuh"

namespace tandem::cuda {

namespace {

constexpr float kGeluC = 0.7978845608028654f;

__global__ void add_k(const float* a, const float* b, float* o, int64_t n, int64_t nb) {
  TANDEM_GRID_LOOP(i, n) o[i] = a[i] + b[nb == n ? i : i % nb];
}
__global__ void mul_k(const float* a, const float* b, float* o, int64_t n, int64_t nb) {
  TANDEM_GRID_LOOP(i, n) o[i] = a[i] * b[nb == n ? i : i % nb];
}
__global__ void scale_k(const float* x, float* o, int64_t n, float s) {
  TANDEM_GRID_LOOP(i, n) o[i] = x[i] * s;
}
__global__ void broadcast_k(const float* x, float* o, int64_t n, int64_t nx) {
  TANDEM_GRID_LOOP(i, n) o[i] = x[i % nx];
}
__global__ void gelu_k(const float* x, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) {
    const float v = x[i];
    const float t = tanhf(kGeluC * (v + 0.044715f * v * v * v));
    o[i] = 0.5f * v * (1.0f + t);
  }
}
__global__ void gelu_grad_k(const float* x, const float* dy, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) {
    const float v = x[i];
    const float u = kGeluC * (v + 0.044715f * v * v * v), t = tanhf(u), ch = coshf(u);
    const float dt = kGeluC * (1.0f + 3.0f * 0.044715f * v * v) / (ch * ch);
    o[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
  }
}
__global__ void silu_k(const float* x, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) o[i] = x[i] / (1.0f + expf(-x[i]));
}
__global__ void silu_grad_k(const float* x, const float* dy, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) {
    const float v = x[i], s = 1.0f / (1.0f + expf(-v));
    o[i] = dy[i] * (s * (1.0f + v * (1.0f - s)));
  }
}
__global__ void sigmoid_k(const float* x, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) o[i] = 1.0f / (1.0f + expf(-x[i]));
}
__global__ void sigmoid_grad_k(const float* y, const float* dy, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) o[i] = dy[i] * y[i] * (1.0f - y[i]);
}
// x [rows, 2I] = [gate | up] -> [rows, I]
__global__ void swiglu_k(const float* x, float* o, int64_t rows, int64_t I) {
  TANDEM_GRID_LOOP(g, rows * I) {
    const int64_t r = g / I, c = g % I;
    const float gate = x[r * 2 * I + c], up = x[r * 2 * I + I + c];
    o[g] = gate / (1.0f + expf(-gate)) * up;
  }
}
__global__ void swiglu_grad_k(const float* x, const float* dy, float* o, int64_t rows, int64_t I) {
  TANDEM_GRID_LOOP(g, rows * I) {
    const int64_t r = g / I, c = g % I;
    const float gate = x[r * 2 * I + c], up = x[r * 2 * I + I + c], d = dy[g];
    const float s = 1.0f / (1.0f + expf(-gate));
    o[r * 2 * I + c] = d * up * s * (1.0f + gate * (1.0f - s));
    o[r * 2 * I + I + c] = d * gate * s;
  }
}

// Full sums: fixed chunks, each summed by one block in double, then the chunk sums in order.
constexpr int64_t kSumChunk = 1 << 14;
__global__ void sum_partial_k(const float* x, int64_t n, bool squares, double* part) {
  __shared__ double red[33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kSumChunk, c1 = min(n, c0 + kSumChunk);
  double acc = 0;
  for (int64_t i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
    const double v = x[i];
    acc += squares ? v * v : v;
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}
__global__ void __launch_bounds__(1024) sum_final_k(const double* part, int64_t chunks, float* out_f32, double* out_f64) {
  __shared__ double red[33];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < chunks; i += blockDim.x) acc += part[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) {
    if (out_f32) *out_f32 = static_cast<float>(acc);
    if (out_f64) *out_f64 = acc;
  }
}

struct RowsOf {
  const float* x;
  int64_t C;
  __device__ float operator()(int64_t r, int64_t c) const { return x[r * C + c]; }
};

}  // namespace

void reduce_sum(CudaBackend& be, const float* x, int64_t n, bool squares, float* out_f32, double* out_f64,
                const Node* node) {
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  double* part = static_cast<double*>(be.scratch(kSlotPartial, static_cast<size_t>(std::max<int64_t>(chunks, 1)) * 8));
  if (chunks > 0) {
    sum_partial_k<<<static_cast<unsigned>(chunks), kThreads, 0, be.stream()>>>(x, n, squares, part);
    be.launched("sum_partial", node);
  }
  sum_final_k<<<1, 1024, 0, be.stream()>>>(part, chunks, out_f32, out_f64);
  be.launched("sum_final", node);
}

void add(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  add_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), n, in[1].numel());
  be.launched("add", &node);
}
void mul(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  mul_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), n, in[1].numel());
  be.launched("mul", &node);
}
void scale(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  scale_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), n, node.attr<ScaleAttrs>().scale);
  be.launched("scale", &node);
}
void broadcast(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  broadcast_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), n, in[0].numel());
  be.launched("broadcast", &node);
}
void sum_to(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t C = out.numel();
  if (C == 0) return;
  colsum(be, node, RowsOf{ptr(in[0]), C}, in[0].numel() / C, C, ptr(out));
}
void sum(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  reduce_sum(be, ptr(in[0]), in[0].numel(), false, ptr(out), nullptr, &node);
}

#define TANDEM_UNARY(name)                                                                        \
  void name(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {   \
    const int64_t n = out.numel();                                                                \
    if (n == 0) return;                                                                           \
    name##_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), n);                 \
    be.launched(#name, &node);                                                                    \
  }
#define TANDEM_UNARY_GRAD(name)                                                                   \
  void name(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {   \
    const int64_t n = out.numel();                                                                \
    if (n == 0) return;                                                                           \
    name##_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), n);     \
    be.launched(#name, &node);                                                                    \
  }
TANDEM_UNARY(gelu)
TANDEM_UNARY(silu)
TANDEM_UNARY(sigmoid)
TANDEM_UNARY_GRAD(gelu_grad)
TANDEM_UNARY_GRAD(silu_grad)
TANDEM_UNARY_GRAD(sigmoid_grad)
#undef TANDEM_UNARY
#undef TANDEM_UNARY_GRAD

void swiglu(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t I = out.shape.back(), n = out.numel();
  if (n == 0) return;
  swiglu_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), n / I, I);
  be.launched("swiglu", &node);
}
void swiglu_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t I = in[1].shape.back(), n = in[1].numel();
  if (n == 0) return;
  swiglu_grad_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), n / I, I);
  be.launched("swiglu_grad", &node);
}

}  // namespace tandem::cuda
