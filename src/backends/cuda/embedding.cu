// embedding and its scatter-add backward (ops/embedding.cpp). The backward is deterministic
// without float atomics: positions are grouped by id on the device (order.cu), and each (row,
// column) of the gradient sums its positions in index order, as the CPU kernel does. An id out of
// range yields a NaN row and is reported through the status word.
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

__global__ void embedding_k(const int32_t* ids, const float* table, float* o, int64_t n, int64_t V, int64_t C,
                            unsigned long long* status, uint32_t tag) {
  TANDEM_GRID_LOOP(g, n * C) {
    const int64_t i = g / C, c = g % C;
    const int32_t id = ids[i];
    if (id >= 0 && id < V) {
      o[g] = table[static_cast<int64_t>(id) * C + c];
    } else {
      o[g] = NAN;
      if (c == 0) report_error(status, tag, id);
    }
  }
}

__global__ void embedding_grad_k(const int32_t* starts, const int32_t* order, const float* dout, float* o, int64_t V,
                                 int64_t C) {
  TANDEM_GRID_LOOP(g, V * C) {
    const int64_t v = g / C, c = g % C;
    float acc = 0.0f;
    for (int32_t k = starts[v]; k < starts[v + 1]; ++k) acc += dout[static_cast<int64_t>(order[k]) * C + c];
    o[g] = acc;
  }
}

}  // namespace

void embedding(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = in[0].numel(), V = in[1].shape[0], C = in[1].shape[1];
  if (n * C == 0) return;
  const uint32_t tag = be.error_tag(node, "an id is out of range [0, " + std::to_string(V) + ")");
  embedding_k<<<grid_for(n * C), kThreads, 0, be.stream()>>>(ptr<int32_t>(in[0]), ptr(in[1]), ptr(out), n, V, C,
                                                             be.status_word(), tag);
  be.launched("embedding", &node);
}

void embedding_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = in[0].numel(), V = out.shape[0], C = out.shape[1];
  if (V * C == 0) return;
  const BucketOrder ord = bucket_order(be, node, ptr<int32_t>(in[0]), n, V, "an id is", true, 0);
  embedding_grad_k<<<grid_for(V * C), kThreads, 0, be.stream()>>>(ord.starts, ord.order, ptr(in[1]), ptr(out), V, C);
  be.launched("embedding_grad", &node);
}

}  // namespace tandem::cuda
