// Matmul's operand convention, shared by the shape rule, the reference and every backend.
//  - b is 2-D: a is viewed as [rows, K] by flattening its leading dims (a linear layer on
//    [B, T, C] activations). out = op(a) . op(b), where op transposes when the flag is set.
//    Without trans_a the output keeps a's leading dims: [..., N]; with trans_a it is [K_a, N].
//  - both have rank >= 3: batched over identical leading dims, trans flags act on the last two.
#pragma once
#include "core/graph.h"

namespace tandem {

struct MatmulDims {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  // Storage dims of one (row-major) operand matrix: a is [a_rows, a_cols], b is [b_rows, b_cols].
  int64_t a_rows = 0, a_cols = 0, b_rows = 0, b_cols = 0;
  bool trans_a = false, trans_b = false, batched = false;
};

// Throws an Error naming `node` when the operands do not fit.
MatmulDims matmul_dims(const Node& node, const Shape& a, const Shape& b);

}  // namespace tandem
