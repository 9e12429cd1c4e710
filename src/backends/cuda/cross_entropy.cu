// cross_entropy and its backward (ops/cross_entropy.cpp): one block per row for the log-sum-exp
// and the softmax, per-row losses in double, then one ordered sum; a target >= vocab is reported
// through the status word (CudaBackend::error_tag).
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

// (max, sum of exp(x - max)) of one row.
__device__ float2 row_max_sum(const float* x, int64_t V, float* red) {
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) mx = fmaxf(mx, x[c]);
  mx = block_max(mx, red);
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) s += expf(x[c] - mx);
  return make_float2(mx, block_sum(s, red));
}

__global__ void ce_rows_k(const float* x, const int32_t* t, double* loss, int64_t R, int64_t V,
                          unsigned long long* status, uint32_t tag) {
  __shared__ float red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t tr = t[r];
    if (tr < 0) {  // ignored row (uniform across the block)
      if (threadIdx.x == 0) loss[r] = 0;
      continue;
    }
    if (tr >= V) {
      if (threadIdx.x == 0) {
        loss[r] = NAN;
        report_error(status, tag, tr);
      }
      continue;
    }
    const float* xr = x + r * V;
    const float2 ms = row_max_sum(xr, V, red);
    if (threadIdx.x == 0) loss[r] = static_cast<double>(ms.x + logf(ms.y)) - xr[tr];
  }
}

// One block: the ordered sum of the row losses and the count of valid targets.
__global__ void __launch_bounds__(1024) ce_total_k(const double* loss, const int32_t* t, int64_t R, float* out) {
  __shared__ double red[33];
  __shared__ long long redi[33];
  double total = 0;
  long long valid = 0;
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
    total += loss[r];
    valid += t[r] >= 0;
  }
  total = block_sum(total, red);
  valid = block_sum(valid, redi);
  if (threadIdx.x == 0) *out = valid ? static_cast<float>(total / static_cast<double>(valid)) : 0.0f;
}

__global__ void __launch_bounds__(1024) ce_count_k(const int32_t* t, int64_t R, long long* count) {
  __shared__ long long redi[33];
  long long valid = 0;
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) valid += t[r] >= 0;
  valid = block_sum(valid, redi);
  if (threadIdx.x == 0) *count = valid;
}

// dx = dloss / n_valid * (softmax(x) - onehot(t)), as backends/cpu/cross_entropy.cpp orders it.
__global__ void ce_grad_k(const float* x, const int32_t* t, const float* dl, const long long* count, float* o, int64_t R,
                          int64_t V, unsigned long long* status, uint32_t tag) {
  __shared__ float red[33];
  const long long valid = *count;
  const float scale = valid ? dl[0] / static_cast<float>(valid) : 0.0f;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t tr = t[r];
    float* y = o + r * V;
    if (tr < 0 || tr >= V) {
      if (tr >= V && threadIdx.x == 0) report_error(status, tag, tr);
      for (int64_t c = threadIdx.x; c < V; c += blockDim.x) y[c] = tr < 0 ? 0.0f : NAN;
      continue;
    }
    const float* xr = x + r * V;
    const float2 ms = row_max_sum(xr, V, red);
    const float inv = 1.0f / ms.y;
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      const float p = expf(xr[c] - ms.x) * inv * scale;
      y[c] = c == tr ? p - scale : p;
    }
  }
}

// token_nll: one row loss per output element; token_nll_grad: dout[r] * (softmax - onehot).
__global__ void nll_rows_k(const float* x, const int32_t* t, float* o, int64_t R, int64_t V, unsigned long long* status,
                           uint32_t tag) {
  __shared__ float red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t tr = t[r];
    if (tr < 0 || tr >= V) {
      if (threadIdx.x == 0) {
        o[r] = tr < 0 ? 0.0f : NAN;
        if (tr >= V) report_error(status, tag, tr);
      }
      continue;
    }
    const float* xr = x + r * V;
    const float2 ms = row_max_sum(xr, V, red);
    if (threadIdx.x == 0) o[r] = ms.x + logf(ms.y) - xr[tr];
  }
}

__global__ void nll_grad_k(const float* x, const int32_t* t, const float* dl, float* o, int64_t R, int64_t V,
                           unsigned long long* status, uint32_t tag) {
  __shared__ float red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t tr = t[r];
    float* y = o + r * V;
    if (tr < 0 || tr >= V) {
      if (tr >= V && threadIdx.x == 0) report_error(status, tag, tr);
      for (int64_t c = threadIdx.x; c < V; c += blockDim.x) y[c] = tr < 0 ? 0.0f : NAN;
      continue;
    }
    const float* xr = x + r * V;
    const float2 ms = row_max_sum(xr, V, red);
    const float scale = dl[r], inv = 1.0f / ms.y;
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      const float p = expf(xr[c] - ms.x) * inv * scale;
      y[c] = c == tr ? p - scale : p;
    }
  }
}

unsigned row_blocks(int64_t R) { return static_cast<unsigned>(std::clamp<int64_t>(R, 1, int64_t{1} << 20)); }

}  // namespace

void cross_entropy(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = V ? in[0].numel() / V : in[1].numel();
  auto* loss = static_cast<double*>(be.scratch(kSlotPartial, static_cast<size_t>(std::max<int64_t>(R, 1)) * 8));
  if (R > 0) {
    const uint32_t tag = be.error_tag(node, "a target is >= the vocabulary size " + std::to_string(V));
    ce_rows_k<<<row_blocks(R), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), loss, R, V, be.status_word(), tag);
    be.launched("cross_entropy_rows", &node);
  }
  ce_total_k<<<1, 1024, 0, be.stream()>>>(loss, ptr<int32_t>(in[1]), R, ptr(out));
  be.launched("cross_entropy_total", &node);
}

void cross_entropy_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = V ? in[0].numel() / V : 0;
  if (R == 0) return;
  auto* count = static_cast<long long*>(be.scratch(kSlotCount, sizeof(long long)));
  ce_count_k<<<1, 1024, 0, be.stream()>>>(ptr<int32_t>(in[1]), R, count);
  be.launched("cross_entropy_count", &node);
  const uint32_t tag = be.error_tag(node, "a target is >= the vocabulary size " + std::to_string(V));
  ce_grad_k<<<row_blocks(R), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), ptr(in[2]), count, ptr(out), R,
                                                         V, be.status_word(), tag);
  be.launched("cross_entropy_grad", &node);
}

void token_nll(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = V ? in[0].numel() / V : 0;
  if (R == 0) return;
  const uint32_t tag = be.error_tag(node, "a target is >= the vocabulary size " + std::to_string(V));
  nll_rows_k<<<row_blocks(R), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), ptr(out), R, V, be.status_word(),
                                                          tag);
  be.launched("token_nll", &node);
}

void token_nll_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = V ? in[0].numel() / V : 0;
  if (R == 0) return;
  const uint32_t tag = be.error_tag(node, "a target is >= the vocabulary size " + std::to_string(V));
  nll_grad_k<<<row_blocks(R), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), ptr(in[2]), ptr(out), R, V,
                                                          be.status_word(), tag);
  be.launched("token_nll_grad", &node);
}

}  // namespace tandem::cuda
