// CUDA kernels: one host launcher per op, grouped in files named like the op definitions and the
// CPU and OpenCL kernels (ops/<family>.cpp <-> backends/{cpu,opencl,cuda}/<family>.{cpp,cu}).
// Inputs and outputs are contiguous f32 (ids i32). Every launcher overwrites its whole output,
// enqueues on the backend's stream and checks each launch (CudaBackend::launched). bf16 nodes run
// these f32 launchers through run_widened (bf16.cu); cast is the one kernel that sees bf16 itself.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <span>

#include "backends/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/tensor.h"

namespace tandem::cuda {

using Kernel = void (*)(CudaBackend&, const Node&, std::span<const Tensor>, const Tensor&);

// The device address of a tensor's first element.
template <typename T = float>
T* ptr(const Tensor& t) {
  return reinterpret_cast<T*>(static_cast<char*>(t.storage->handle) + t.offset);
}

constexpr int kThreads = 256;  // the default block size; reductions depend on it, never on the device

// Blocks for a grid-stride loop over n items (the loops stride, so the grid is capped).
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t{1} << 20));
}

// Scratch slots (CudaBackend::scratch). One op may use several at once; ops run one at a time.
enum Slot : int {
  kSlotPartial = 0,  // reduction partials
  kSlotStats = 1,    // per-row statistics (norm grad_w, attention backward)
  kSlotStarts = 2,   // bucket order: segment starts
  kSlotPos = 3,      // bucket order: position of each key
  kSlotOrder = 4,    // bucket order: key index at each position
  kSlotTiles = 5,    // bucket order: row-tile offsets (grouped matmul)
  kSlotCount = 6,    // a small integer result (valid targets)
  kSlotResult = 7,   // a double result (sum, sum_squares)
};

// bf16 storage (bf16.cu): runs the f32 launcher `k` on f32 copies of node's bf16 inputs and rounds
// its f32 result into a bf16 output (RNE, core/dtype.h); f32 and i32 tensors pass through as they are.
void run_widened(CudaBackend& be, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out);
// Rounds an f32 tensor into a bf16 one with core/dtype.h's rule (bf16.cu): for kernels that
// compute in f32 and store bf16 (matmul's bf16 path).
void store_bf16(CudaBackend& be, const Node& node, const Tensor& f32_src, const Tensor& bf16_dst);

#define TANDEM_CUDA_KERNEL(name) void name(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out);
TANDEM_CUDA_KERNEL(embedding)
TANDEM_CUDA_KERNEL(embedding_grad)
TANDEM_CUDA_KERNEL(matmul)
TANDEM_CUDA_KERNEL(add)
TANDEM_CUDA_KERNEL(mul)
TANDEM_CUDA_KERNEL(scale)
TANDEM_CUDA_KERNEL(sum_to)
TANDEM_CUDA_KERNEL(sum)
TANDEM_CUDA_KERNEL(broadcast)
TANDEM_CUDA_KERNEL(layernorm)
TANDEM_CUDA_KERNEL(layernorm_grad_x)
TANDEM_CUDA_KERNEL(layernorm_grad_w)
TANDEM_CUDA_KERNEL(rmsnorm)
TANDEM_CUDA_KERNEL(rmsnorm_grad_x)
TANDEM_CUDA_KERNEL(rmsnorm_grad_w)
TANDEM_CUDA_KERNEL(gelu)
TANDEM_CUDA_KERNEL(gelu_grad)
TANDEM_CUDA_KERNEL(silu)
TANDEM_CUDA_KERNEL(silu_grad)
TANDEM_CUDA_KERNEL(softmax)
TANDEM_CUDA_KERNEL(softmax_grad)
TANDEM_CUDA_KERNEL(attention)
TANDEM_CUDA_KERNEL(attention_grad)
TANDEM_CUDA_KERNEL(attention_cached)
TANDEM_CUDA_KERNEL(cross_entropy)
TANDEM_CUDA_KERNEL(cross_entropy_grad)
TANDEM_CUDA_KERNEL(token_nll)
TANDEM_CUDA_KERNEL(token_nll_grad)
TANDEM_CUDA_KERNEL(slice_last)
TANDEM_CUDA_KERNEL(pad_last)
TANDEM_CUDA_KERNEL(concat_last)
TANDEM_CUDA_KERNEL(sigmoid)
TANDEM_CUDA_KERNEL(sigmoid_grad)
TANDEM_CUDA_KERNEL(swiglu)
TANDEM_CUDA_KERNEL(swiglu_grad)
TANDEM_CUDA_KERNEL(rope)
TANDEM_CUDA_KERNEL(mla_qkv)
TANDEM_CUDA_KERNEL(mla_qkv_grad)
TANDEM_CUDA_KERNEL(attention_latent)
TANDEM_CUDA_KERNEL(topk_route)
TANDEM_CUDA_KERNEL(route_weights)
TANDEM_CUDA_KERNEL(route_weights_grad)
TANDEM_CUDA_KERNEL(moe_dispatch)
TANDEM_CUDA_KERNEL(moe_dispatch_grad)
TANDEM_CUDA_KERNEL(grouped_matmul)
TANDEM_CUDA_KERNEL(grouped_matmul_grad_w)
TANDEM_CUDA_KERNEL(moe_combine)
TANDEM_CUDA_KERNEL(moe_combine_grad_y)
TANDEM_CUDA_KERNEL(moe_combine_grad_w)
TANDEM_CUDA_KERNEL(seq_balance_loss)
TANDEM_CUDA_KERNEL(seq_balance_loss_grad)
TANDEM_CUDA_KERNEL(shift_tokens)
TANDEM_CUDA_KERNEL(ep_dispatch)
TANDEM_CUDA_KERNEL(ep_combine)
TANDEM_CUDA_KERNEL(ep_ids)
TANDEM_CUDA_KERNEL(cast)
#undef TANDEM_CUDA_KERNEL

// sum over n floats (or their squares) in a fixed order, accumulated in double: chunks of
// kSumChunk summed by one block each, then the chunk sums in order by one block. The result goes
// to *out_f32 (as float) and/or *out_f64, device pointers, either may be null. (elementwise.cu)
void reduce_sum(CudaBackend& be, const float* x, int64_t n, bool squares, float* out_f32, double* out_f64,
                const Node* node);

// A stable counting sort of n keys in [0, buckets) on the device, without float atomics:
// starts[b]..starts[b+1] is bucket b's segment, pos[i] the position of key i (keys of a bucket in
// index order: the same as ops/moe.h's expert_order), order[pos[i]] = i. With tile_rows > 0,
// tiles[b] is the number of tile_rows-row tiles of the buckets before b (tiles[buckets] = total).
// A key out of range gets pos -1 and is reported through the status word (`what` names it).
// Device int32 arrays in scratch slots; valid until the next op. (order.cu)
struct BucketOrder {
  const int32_t* starts = nullptr;  // [buckets + 1]
  const int32_t* pos = nullptr;     // [n]
  const int32_t* order = nullptr;   // [n] (null unless want_order)
  const int32_t* tiles = nullptr;   // [buckets + 1] (null unless tile_rows > 0)
};
BucketOrder bucket_order(CudaBackend& be, const Node& node, const int32_t* keys, int64_t n, int64_t buckets,
                         const char* what, bool want_order, int tile_rows);

// Attention's dynamic shared memory (attention.cu): whether these head dims fit on the device.
bool attention_fits(const CudaBackend& be, int64_t dqk, int64_t dv);

}  // namespace tandem::cuda
