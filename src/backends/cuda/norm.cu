// layernorm and rmsnorm, forward and backward (ops/norm.cpp): one block per row. The row
// statistics are accumulated in double like the CPU kernel's (mean, then the centred squares);
// the weight gradient reads per-row statistics from a first kernel and sums columns in a fixed
// order (reduce.cuh).
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/reduce.cuh"

namespace tandem::cuda {

namespace {

constexpr int kNormThreads = 256;

// (mean, 1/std) of one row, as backends/cpu/norm.cpp computes them; mean = 0 without centring.
__device__ float2 row_stats(const float* x, int64_t C, float eps, bool centre, double* red) {
  double s = 0;
  if (centre) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
    s = block_sum(s, red) / static_cast<double>(C);
  }
  const float m = static_cast<float>(s);
  double ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += static_cast<double>((x[c] - m) * (x[c] - m));
  ss = block_sum(ss, red);
  return make_float2(m, static_cast<float>(1.0 / sqrt(ss / static_cast<double>(C) + static_cast<double>(eps))));
}

__global__ void norm_k(const float* x, const float* w, const float* b, float* o, int64_t R, int64_t C, float eps,
                       bool centre) {
  __shared__ double red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;
    const float2 st = row_stats(xr, C, eps, centre, red);
    float* orow = o + r * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      orow[c] = centre ? (xr[c] - st.x) * st.y * w[c] + b[c] : xr[c] * st.y * w[c];
  }
}

__global__ void norm_grad_x_k(const float* x, const float* w, const float* dy, float* o, int64_t R, int64_t C, float eps,
                              bool centre) {
  __shared__ double red[33];
  __shared__ float redf[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;
    const float* g = dy + r * C;
    const float2 st = row_stats(xr, C, eps, centre, red);
    float m1 = 0.0f, m2 = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float dxh = g[c] * w[c];
      m1 += dxh;
      m2 += dxh * (xr[c] - st.x) * st.y;
    }
    m1 = block_sum(m1, redf);
    m2 = block_sum(m2, redf);
    m1 = centre ? m1 / static_cast<float>(C) : 0.0f;
    m2 /= static_cast<float>(C);
    float* orow = o + r * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      orow[c] = st.y * (g[c] * w[c] - m1 - (xr[c] - st.x) * st.y * m2);
  }
}

__global__ void norm_stats_k(const float* x, float2* st, int64_t R, int64_t C, float eps, bool centre) {
  __shared__ double red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float2 s = row_stats(x + r * C, C, eps, centre, red);
    if (threadIdx.x == 0) st[r] = s;
  }
}

// dw[c] = sum over rows of dy * xh
struct NormGradW {
  const float* x;
  const float* dy;
  const float2* st;
  int64_t C;
  __device__ float operator()(int64_t r, int64_t c) const { return dy[r * C + c] * ((x[r * C + c] - st[r].x) * st[r].y); }
};

unsigned row_blocks(int64_t R) { return static_cast<unsigned>(std::clamp<int64_t>(R, 1, int64_t{1} << 20)); }

void fwd(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const int64_t C = in[0].shape.back(), R = C ? in[0].numel() / C : 0;
  if (R == 0 || C == 0) return;
  norm_k<<<row_blocks(R), kNormThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), centre ? ptr(in[2]) : nullptr, ptr(out),
                                                          R, C, node.attr<NormAttrs>().eps, centre);
  be.launched(centre ? "layernorm" : "rmsnorm", &node);
}
void grad_x(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const int64_t C = in[0].shape.back(), R = C ? in[0].numel() / C : 0;
  if (R == 0 || C == 0) return;
  norm_grad_x_k<<<row_blocks(R), kNormThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(in[2]), ptr(out), R, C,
                                                                 node.attr<NormAttrs>().eps, centre);
  be.launched(centre ? "layernorm_grad_x" : "rmsnorm_grad_x", &node);
}
void grad_w(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const int64_t C = in[0].shape.back(), R = C ? in[0].numel() / C : 0;
  if (C == 0) return;
  auto* st = static_cast<float2*>(be.scratch(kSlotStats, static_cast<size_t>(std::max<int64_t>(R, 1)) * sizeof(float2)));
  if (R > 0) {
    norm_stats_k<<<row_blocks(R), kNormThreads, 0, be.stream()>>>(ptr(in[0]), st, R, C, node.attr<NormAttrs>().eps, centre);
    be.launched("norm_stats", &node);
  }
  colsum(be, node, NormGradW{ptr(in[0]), ptr(in[1]), st, C}, R, C, ptr(out));
}

}  // namespace

void layernorm(CudaBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { fwd(be, n, in, o, true); }
void rmsnorm(CudaBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { fwd(be, n, in, o, false); }
void layernorm_grad_x(CudaBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_x(be, n, in, o, true); }
void rmsnorm_grad_x(CudaBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_x(be, n, in, o, false); }
void layernorm_grad_w(CudaBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_w(be, n, in, o, true); }
void rmsnorm_grad_w(CudaBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_w(be, n, in, o, false); }

}  // namespace tandem::cuda
