// GEMMs go to OpenBLAS (the OpenMP build, sharing our thread pool).
#include <cblas.h>

#include "backends/cpu/kernels.h"
#include "ops/matmul.h"

namespace tandem::cpu {

void matmul(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  const float* A = f32(in[0]);
  const float* B = f32(in[1]);
  float* C = f32(out);
  for (int64_t p = 0; p < d.batch; ++p) {
    cblas_sgemm(CblasRowMajor, d.trans_a ? CblasTrans : CblasNoTrans, d.trans_b ? CblasTrans : CblasNoTrans,
                static_cast<int>(d.m), static_cast<int>(d.n), static_cast<int>(d.k), 1.0f,
                A + p * d.a_rows * d.a_cols, static_cast<int>(d.a_cols),
                B + (d.batched ? p * d.b_rows * d.b_cols : 0), static_cast<int>(d.b_cols), 0.0f,
                C + p * d.m * d.n, static_cast<int>(d.n));
  }
}

}  // namespace tandem::cpu
