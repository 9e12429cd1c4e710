// matmul (ops/matmul.h conventions) on cuBLAS: 2-D with a's leading dims flattened, or batched
// (strided), either operand transposed. cuBLAS is column-major: a row-major [r, c] matrix is the
// column-major [c, r] matrix with leading dimension c, i.e. its transpose. So the row-major
//   C[m, n] = op(A) op(B)   is computed as the column-major   C^T[n, m] = op(B)^T op(A)^T,
// passing B first with ld = b_cols and A second with ld = a_cols, each with its own flag (a
// stored operand is already transposed in cuBLAS's view; a flagged one is transposed back).
// f32 arithmetic (the handle's default math mode: never TF32); one stream, so results repeat.
// bf16 operands (the bf16 mixed-precision graphs' matmuls): cublasGemmStridedBatchedEx with bf16
// A and B, f32 compute (CUBLAS_COMPUTE_32F: exact products, f32 accumulation) into an f32 staging
// tensor, rounded once into the bf16 output by the backend's own RNE kernel (bf16.cu), so the bf16
// matmul is "the f32 matmul of the bf16 values, rounded once" as on the other backends, without
// widened copies of the operands.
#include <cublas_v2.h>

#include <limits>

#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "ops/matmul.h"

namespace tandem::cuda {

void matmul(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  if (d.m == 0 || d.n == 0 || d.batch == 0) return;
  if (d.k == 0) {  // an empty sum
    be.zero(out.storage->handle, out.offset, out.nbytes());
    return;
  }
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  check(d.m <= kMax && d.n <= kMax && d.k <= kMax && d.a_cols <= kMax && d.b_cols <= kMax && d.batch <= kMax,
        "cuda backend: matmul at node '", node.name, "': dimensions exceed cuBLAS's int range");
  const float one = 1.0f, zero = 0.0f;
  const cublasOperation_t op_b = d.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const auto m = static_cast<int>(d.m), n = static_cast<int>(d.n), k = static_cast<int>(d.k);
  const auto lda = static_cast<int>(d.a_cols), ldb = static_cast<int>(d.b_cols);
  const long long stride_a = d.a_rows * d.a_cols, stride_b = d.batched ? d.b_rows * d.b_cols : 0, stride_c = d.m * d.n;
  if (in[0].dtype == DType::bf16) {
    check(in[1].dtype == DType::bf16 && out.dtype == DType::bf16, "cuda backend: matmul at node '", node.name,
          "': bf16 operands need a bf16 output");
    const Tensor c = be.staging(-1, out.shape, DType::f32);
    cublas_check(cublasGemmStridedBatchedEx(be.cublas(), op_b, op_a, n, m, k, &one, ptr<const void>(in[1]), CUDA_R_16BF, ldb,
                                            stride_b, ptr<const void>(in[0]), CUDA_R_16BF, lda, stride_a, &zero,
                                            ptr<void>(c), CUDA_R_32F, n, stride_c, static_cast<int>(d.batch),
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx (bf16)", &node);
    be.launched("cublas", &node);
    return store_bf16(be, node, c, out);
  }
  if (d.batch == 1) {
    cublas_check(cublasSgemm(be.cublas(), op_b, op_a, n, m, k, &one, ptr(in[1]), ldb, ptr(in[0]), lda, &zero, ptr(out), n),
                 "cublasSgemm", &node);
  } else {
    cublas_check(cublasSgemmStridedBatched(be.cublas(), op_b, op_a, n, m, k, &one, ptr(in[1]), ldb, stride_b, ptr(in[0]),
                                           lda, stride_a, &zero, ptr(out), n, stride_c, static_cast<int>(d.batch)),
                 "cublasSgemmStridedBatched", &node);
  }
  be.launched("cublas", &node);
}

}  // namespace tandem::cuda
