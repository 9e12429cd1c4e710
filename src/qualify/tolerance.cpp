#include "qualify/tolerance.h"

namespace tandem::qualify {

namespace {

enum class Klass { move, elementwise, transcendental, reduction, row, matmul };

Klass klass_of(OpKind op) {
  switch (op) {
    case OpKind::embedding: case OpKind::broadcast: case OpKind::reshape: return Klass::move;
    case OpKind::add: case OpKind::mul: case OpKind::scale: return Klass::elementwise;
    case OpKind::gelu: case OpKind::gelu_grad: case OpKind::silu: case OpKind::silu_grad: return Klass::transcendental;
    case OpKind::sum: case OpKind::sum_to: case OpKind::embedding_grad: case OpKind::layernorm_grad_w:
    case OpKind::rmsnorm_grad_w: return Klass::reduction;
    case OpKind::matmul: case OpKind::attention: case OpKind::attention_grad: case OpKind::attention_cached:
      return Klass::matmul;
    default: return Klass::row;  // softmax, norms, cross-entropy and their gradients
  }
}

}  // namespace

Tolerance tolerance_for(OpKind op, DType dtype) {
  const Klass k = klass_of(op);
  if (k == Klass::move)
    return {0.0, "move", "values are only copied: they must arrive bit-identical"};
  if (dtype == DType::bf16) {
    // One bf16 rounding of the output is 2^-9 relative (NMSE ~ 1.3e-6 on average, 4e-6 worst);
    // operands are bf16 but accumulation is f32, so reductions add little on top.
    if (k == Klass::elementwise || k == Klass::transcendental)
      return {1e-5, "bf16 elementwise", "one bf16 rounding of the output: relative error <= 2^-9, NMSE <= 4e-6"};
    return {5e-5, "bf16 accumulating", "bf16 operands, f32 accumulation, bf16 output: output rounding dominates"};
  }
  switch (k) {
    case Klass::elementwise:
      return {1e-13, "elementwise", "one f32 rounding per element: relative error <= 2^-24, NMSE <= 3.6e-15"};
    case Klass::transcendental:
      return {1e-11, "transcendental",
              "f32 exp/tanh within a few ulp (OpenCL allows 4 ulp for exp), cancellation near gelu' = 0"};
    case Klass::reduction:
      return {1e-10, "reduction", "f32 sums over up to thousands of random-sign terms in any order: error ~ sqrt(n) eps"};
    case Klass::row:
      return {1e-10, "row", "per-row f32 max/sum/mean then a normalisation: a few accumulated roundings per element"};
    case Klass::matmul:
      return {1e-9, "matmul-like",
              "f32 dot products of length K in a blocked order with FMA, then softmax for attention; cancellation "
              "on random-sign data"};
    case Klass::move: break;
  }
  return {0.0, "move", ""};
}

}  // namespace tandem::qualify
