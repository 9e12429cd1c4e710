// embedding and its scatter-add backward (ops/embedding.cpp). The backward is deterministic
// without atomics: the host groups positions by id (a CSR index over the ids, which it reads
// back), and each (row, column) of the gradient sums its positions in order.
#include <vector>

#include "backends/opencl/kernels.h"
#include "core/error.h"

namespace tandem::opencl {

const char* const embedding_src = R"CLC(
// An out-of-range id yields NaN rows: loud in every comparison, never a read out of bounds.
__kernel void embedding_f32(__global const int* ids, long io, __global const float* table, long to,
                            __global float* o, long oo, long n, long V, long C) {
  long g = get_global_id(0);
  if (g >= n * C) return;
  long i = g / C, c = g % C;
  int id = ids[io + i];
  o[oo + g] = (id >= 0 && id < V) ? table[to + (long)id * C + c] : NAN;
}
__kernel void embedding_grad_f32(__global const int* starts, long so, __global const int* order, long ro,
                                 __global const float* dout, long doo, __global float* o, long oo, long V, long C) {
  long g = get_global_id(0);
  if (g >= V * C) return;
  long v = g / C, c = g % C;
  float acc = 0.0f;
  for (int k = starts[so + v]; k < starts[so + v + 1]; ++k) acc += dout[doo + (long)order[ro + k] * C + c];
  o[oo + g] = acc;
}
)CLC";

void embedding(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = in[0].numel(), V = in[1].shape[0], C = in[1].shape[1];
  be.launch("embedding_f32", static_cast<size_t>(n * C), {in[0], in[1], out, n, V, C});
}

void embedding_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = in[0].numel(), V = out.shape[0], C = out.shape[1];
  std::vector<int32_t> ids(static_cast<size_t>(n));
  be.download(ids.data(), in[0].storage->handle, in[0].offset, ids.size() * sizeof(int32_t));
  std::vector<int32_t> starts(static_cast<size_t>(V + 1), 0), order(static_cast<size_t>(std::max<int64_t>(n, 1)));
  for (int32_t id : ids) {
    check(id >= 0 && id < V, "embedding_grad at node '", node.name, "': id ", id, " out of range [0, ", V, ")");
    ++starts[static_cast<size_t>(id) + 1];
  }
  for (int64_t v = 0; v < V; ++v) starts[static_cast<size_t>(v + 1)] += starts[static_cast<size_t>(v)];
  std::vector<int32_t> fill(starts.begin(), starts.end() - 1);
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(fill[static_cast<size_t>(ids[static_cast<size_t>(i)])]++)] = static_cast<int32_t>(i);
  cl_mem s = be.scratch(0, starts.size() * 4), r = be.scratch(1, order.size() * 4);
  be.upload(s, 0, starts.data(), starts.size() * 4);
  be.upload(r, 0, order.data(), order.size() * 4);
  be.launch("embedding_grad_f32", static_cast<size_t>(V * C), {s, int64_t{0}, r, int64_t{0}, in[1], out, V, C});
}

}  // namespace tandem::opencl
