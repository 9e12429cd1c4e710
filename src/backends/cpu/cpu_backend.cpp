#include "backends/cpu/cpu_backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/kernels.h"
#include "core/error.h"

#include <omp.h>
#include <xmmintrin.h>

namespace tandem {

CpuBackend::CpuBackend() { attach_thread(); }

// Flush denormals to zero (FTZ + DAZ) on the calling thread and every worker of its OpenMP team:
// optimizer moments decay into the denormal range, and so do GELU outputs and attention weights
// far below their row's maximum, where x86 arithmetic is ~100x slower. Values below 1e-38 carry
// no signal here. MXCSR is per thread, and each thread that starts parallel regions has its own
// team, so a thread other than the creator (the serving engine's) needs this call too.
void CpuBackend::attach_thread() {
#pragma omp parallel
  _mm_setcsr(_mm_getcsr() | 0x8040);
}

void* CpuBackend::alloc(size_t bytes) {
  // 64-byte alignment: one AVX-512 vector, one cache line.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  check(p != nullptr, "cpu backend: out of memory allocating ", bytes, " bytes");
  return p;
}
void CpuBackend::free(void* handle) { std::free(handle); }
void CpuBackend::upload(void* dst, size_t off, const void* src, size_t bytes) {
  std::memcpy(static_cast<char*>(dst) + off, src, bytes);
}
void CpuBackend::download(void* dst, const void* src, size_t off, size_t bytes) {
  std::memcpy(dst, static_cast<const char*>(src) + off, bytes);
}
void CpuBackend::copy(void* dst, size_t doff, const void* src, size_t soff, size_t bytes) {
  std::memcpy(static_cast<char*>(dst) + doff, static_cast<const char*>(src) + soff, bytes);
}
void CpuBackend::zero(void* dst, size_t off, size_t bytes) { std::memset(static_cast<char*>(dst) + off, 0, bytes); }

namespace {
cpu::Kernel kernel_for(OpKind op) {
  switch (op) {
#define K(name) \
  case OpKind::name: return cpu::name;
    K(embedding) K(embedding_grad) K(matmul) K(add) K(mul) K(scale) K(sum_to) K(sum) K(broadcast)
    K(layernorm) K(layernorm_grad_x) K(layernorm_grad_w) K(rmsnorm) K(rmsnorm_grad_x) K(rmsnorm_grad_w)
    K(gelu) K(gelu_grad) K(silu) K(silu_grad) K(softmax) K(softmax_grad) K(attention) K(attention_grad) K(attention_cached)
    K(cross_entropy) K(cross_entropy_grad) K(token_nll) K(token_nll_grad) K(slice_last) K(pad_last) K(concat_last) K(sigmoid) K(sigmoid_grad)
    K(swiglu) K(swiglu_grad) K(rope) K(mla_qkv) K(mla_qkv_grad) K(attention_latent) K(topk_route) K(route_weights)
    K(route_weights_grad) K(moe_dispatch) K(moe_dispatch_grad) K(grouped_matmul) K(grouped_matmul_grad_w)
    K(moe_combine) K(moe_combine_grad_y) K(moe_combine_grad_w) K(seq_balance_loss) K(seq_balance_loss_grad) K(shift_tokens)
    K(ep_dispatch) K(ep_combine) K(ep_ids) K(cast)
#undef K
    default: return nullptr;
  }
}
}  // namespace

// Every op in f32 and bf16 (index-producing ops output i32). bf16 matmuls (plain and grouped) and
// embedding have their own kernels; the other ops run their f32 kernel on widened bf16 inputs (bf16.cpp).
bool CpuBackend::supports(const Node& node) const { return kernel_for(node.op) != nullptr; }

void CpuBackend::execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) {
  cpu::Kernel k = kernel_for(node.op);
  check(k != nullptr, "cpu backend: no kernel for op ", op_name(node.op), " at node '", node.name, "'");
  for (const Tensor& t : inputs)
    check(t.is_contiguous(), "cpu backend: op ", op_name(node.op), " at node '", node.name,
          "' got a non-contiguous input");
  for (const Tensor& t : inputs)
    if (t.dtype == DType::q8_0) return cpu::run_q8_0(node, inputs, output);
  bool bf16_io = output.dtype == DType::bf16;
  for (const Tensor& t : inputs) bf16_io = bf16_io || t.dtype == DType::bf16;
  const bool native_bf16 = node.op == OpKind::cast || node.op == OpKind::matmul || node.op == OpKind::grouped_matmul ||
                           node.op == OpKind::grouped_matmul_grad_w || node.op == OpKind::embedding;
  if (bf16_io && !native_bf16) return cpu::run_widened(k, node, inputs, output);
  k(node, inputs, output);
}

}  // namespace tandem
