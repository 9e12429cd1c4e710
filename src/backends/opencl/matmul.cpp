// matmul (ops/matmul.h conventions): 2-D with a's leading dims flattened, or batched; either
// operand transposed. Each output is one dot product in k order, so results do not depend on
// the launch geometry.
#include "backends/opencl/kernels.h"
#include "ops/matmul.h"

namespace tandem::opencl {

const char* const matmul_src = R"CLC(
// One output per work-item, no local memory or barriers: on CPU devices (PoCL) the work-group
// loop is vectorised across adjacent columns, which beats a tiled local-memory kernel ~10x there.
__kernel void gemm_f32(__global const float* A, long ao, __global const float* B, long bo, __global float* C, long co,
                       long M, long N, long K, long lda, long ldb, long ta, long tb, long sa, long sb, long sc) {
  const long col = get_global_id(0), row = get_global_id(1), z = get_global_id(2);
  if (row >= M || col >= N) return;
  A += ao + z * sa;
  B += bo + z * sb;
  const long as = ta ? lda : 1, ai = ta ? row : row * lda;  // A(row, k) = A[ai + k * as]
  const long bs = tb ? 1 : ldb, bi = tb ? col * ldb : col;  // B(k, col) = B[bi + k * bs]
  float acc = 0.0f;
  for (long k = 0; k < K; ++k) acc += A[ai + k * as] * B[bi + k * bs];
  C[co + z * sc + row * N + col] = acc;
}
)CLC";

void matmul(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  const int64_t sa = d.a_rows * d.a_cols, sb = d.batched ? d.b_rows * d.b_cols : 0, sc = d.m * d.n;
  be.launch3d("gemm_f32", {static_cast<size_t>(d.n), static_cast<size_t>(d.m), static_cast<size_t>(d.batch)}, {0, 0, 0},
              {in[0], in[1], out, d.m, d.n, d.k, d.a_cols, d.b_cols, int64_t{d.trans_a}, int64_t{d.trans_b}, sa, sb, sc});
}

}  // namespace tandem::opencl
