#include "qualify/tolerance.h"

#include <stdexcept>

namespace tandem::qualify {

namespace {

enum class Klass { move, index, elementwise, transcendental, reduction, row, matmul };

Klass klass_of(OpKind op) {
  switch (op) {
    case OpKind::embedding: case OpKind::broadcast: case OpKind::reshape: case OpKind::slice_last: case OpKind::pad_last:
    case OpKind::concat_last: case OpKind::mla_qkv: case OpKind::moe_dispatch: case OpKind::ep_dispatch:
    case OpKind::ep_combine: return Klass::move;
    case OpKind::cast: return Klass::elementwise;  // exact to f32, one rounding to bf16
    case OpKind::topk_route: case OpKind::shift_tokens: case OpKind::ep_ids: return Klass::index;
    case OpKind::add: case OpKind::mul: case OpKind::scale: case OpKind::moe_combine_grad_y: return Klass::elementwise;
    case OpKind::gelu: case OpKind::gelu_grad: case OpKind::silu: case OpKind::silu_grad: case OpKind::sigmoid:
    case OpKind::sigmoid_grad: case OpKind::swiglu: case OpKind::swiglu_grad: case OpKind::rope:
      return Klass::transcendental;
    case OpKind::sum: case OpKind::sum_to: case OpKind::embedding_grad: case OpKind::layernorm_grad_w:
    case OpKind::rmsnorm_grad_w: case OpKind::mla_qkv_grad: case OpKind::moe_dispatch_grad: case OpKind::moe_combine:
    case OpKind::seq_balance_loss:
      return Klass::reduction;
    case OpKind::matmul: case OpKind::attention: case OpKind::attention_grad: case OpKind::attention_cached:
    case OpKind::attention_latent: case OpKind::grouped_matmul: case OpKind::grouped_matmul_grad_w:
    case OpKind::moe_combine_grad_w:
      return Klass::matmul;
    default: return Klass::row;  // softmax, norms, cross-entropy, routing weights, the balance loss's gradient
  }
}

}  // namespace

Tolerance tolerance_for(OpKind op, DType dtype) {
  const Klass k = klass_of(op);
  if (k == Klass::move)
    return {0.0, "move",
            "values are only copied (rows, windows, heads, tokens grouped per expert): they must arrive bit-identical",
            0.0};
  if (k == Klass::index)
    return {0.0, "index",
            "integer outputs (expert ids, shifted token ids): a different id is a different computation, never a "
            "rounding error",
            0.0};
  if (dtype == DType::q8_0) {
    // q8_0 rows (conform.h): the weight arrives quantized and the reference uses its dequantized
    // values, which are exact in f32 (an fp16 scale times an int8); activations, products and
    // accumulation are f32, so the f32 bounds hold. A kernel that loses precision beyond that
    // (a wrong scale, a half-precision accumulator) shows on top of them. The quantization
    // itself is the row's format error.
    if (k == Klass::matmul)
      return {1e-9, "q8_0 matmul",
              "q8_0 weights dequantized exactly, f32 activations and accumulation: the f32 matmul bound", 2e-5};
    throw std::invalid_argument("tolerance: q8_0 rows are matmuls and embeddings (op class move)");
  }
  if (dtype == DType::bf16) {
    // One bf16 rounding (8 significant bits, round to nearest) is at most 2^-8 relative: NMSE
    // <= 2^-16 = 1.5e-5 when a one-element output is rounded worst, ~5e-6 on average. Operands
    // are bf16 but arithmetic and accumulation are f32, so the rounding of the output dominates
    // unless a kernel loses precision inside: a GEMM accumulating in bf16 reaches ~1e-3 on the
    // K = 1024 probe (matmul_acc_probe), 50x the matmul bound.
    if (k == Klass::elementwise || k == Klass::transcendental)
      return {2e-5, "bf16 elementwise", "f32 arithmetic on bf16 values, one bf16 rounding of the output (<= 2^-8 relative)",
              4e-3};  // max_rel: the one rounding, <= 2^-8 = 3.9e-3 of the element; worst measured 3.6e-3 (cpu)
    if (k == Klass::matmul)
      return {2e-5, "bf16 matmul-like",
              "products of bf16 are exact in f32, f32 accumulation, one bf16 rounding of the output; bf16 accumulation "
              "fails the K = 1024 probe by 50x",
              4e-3};  // max_rel: the output's rounding, 2^-8, f32 accumulation adds ~1e-6; worst 3.5e-3 (cpu)
    return {5e-5, "bf16 accumulating",
            "f32 statistics (norms, softmax, sums) on bf16 values, one bf16 rounding of the output, plus cancellation "
            "in gradients of normalisations",
            8e-3};  // max_rel: the output's rounding plus cancellation, 2 x 2^-8; worst 3.8e-3 (cpu)
  }
  switch (k) {
    case Klass::elementwise:
      return {1e-13, "elementwise", "one f32 rounding per element: relative error <= 2^-24, NMSE <= 3.6e-15",
              1e-6};  // max_rel: 2^-24 of the element; worst measured 5.7e-8 (cpu, opencl)
    case Klass::transcendental:
      return {1e-11, "transcendental",
              "f32 exp/tanh/cos/sin within a few ulp (OpenCL allows 4 ulp for exp), cancellation near gelu' = 0; RoPE "
              "angles formed in f32 as transformers does (position * inv_freq: ~1e-7 relative)",
              5e-6};  // worst measured 2.8e-7 (cpu, opencl: swiglu's gradient)
    case Klass::reduction:
      return {1e-10, "reduction", "f32 sums over up to thousands of random-sign terms in any order: error ~ sqrt(n) eps",
              2e-5};  // worst measured 1.3e-6 cpu, 1.6e-6 opencl (sum_to, sum over long rows)
    case Klass::row:
      return {1e-10, "row", "per-row f32 max/sum/mean then a normalisation: a few accumulated roundings per element",
              1e-5};  // worst measured 1.6e-7 cpu, 7.1e-7 opencl (softmax over wide rows)
    case Klass::matmul:
      return {1e-9, "matmul-like",
              "f32 dot products of length K in a blocked order with FMA, then softmax for attention; cancellation "
              "on random-sign data",
              2e-5};  // worst measured 4.8e-7 cpu, 1.1e-6 opencl (the K = 1024 probe)
    case Klass::move: case Klass::index: break;
  }
  return {0.0, "move", "", 0.0};
}

Tolerance optimizer_tolerance(const std::string& kernel, DType dtype) {
  (void)dtype;  // f32 only: parameters, gradients and the moments are f32 on every backend
  if (kernel == "adamw")
    return {1e-10, "adamw",
            "AdamW in f32 (PyTorch's order: lerp for m, then v, sqrt, division, decoupled decay): a few roundings per "
            "element; the update row (p_new - p_old) also carries p_new's rounding, ~2^-24 |p| against an update of "
            "lr ~ 5e-2 (worst measured: NMSE 6.4e-12 on a one-element case, max_rel 3.1e-6)",
            5e-5};
  if (kernel == "sum_squares")
    return {1e-12, "sum_squares",
            "one scalar: the squares summed in double, or chunks summed in f32 then in double (OpenCL); f32 partial "
            "sums cost ~2^-24 relative, so the bound leaves 15x over that, not over the double sum's 1e-14",
            1e-6};
  if (kernel == "axpy")
    return {1e-13, "axpy",
            "y + alpha x per element: at most two f32 roundings (one with FMA), relative to the element (worst "
            "measured max_rel 4.2e-8)",
            1e-6};
  throw std::invalid_argument("optimizer_tolerance: unknown kernel '" + kernel + "'");
}

}  // namespace tandem::qualify
