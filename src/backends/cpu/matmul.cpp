// GEMMs go to tandem's own AVX-512 sgemm (gemm.h: 1.2-1.5x OpenBLAS over the GEMM shapes of
// bench/bench_gemm.cpp, most on the small ones that dominate baby-gpt) when the build targets
// AVX-512, to OpenBLAS (the OpenMP build, sharing our thread pool) otherwise, since sgemm's portable
// path is plain loops; the skinny GEMMs of decoding (a few rows against a weight matrix: gemv.h)
// stream the weights once at full memory bandwidth instead.
#if !defined(__AVX512F__)
#include <cblas.h>
#endif

#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_bf16.h"
#include "backends/cpu/gemv.h"
#include "backends/cpu/kernels.h"
#include "ops/matmul.h"

#include <vector>

namespace tandem::cpu {

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
#if defined(__AVX512F__)
  sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(M),
              static_cast<int>(N), static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta, C,
              static_cast<int>(ldc));
#endif
}

// Without AVX-512, one OpenBLAS GEMM per group, the groups spread over the threads.
void grouped_gemm(bool trans_b, int64_t E, const int64_t* off, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, int64_t b_stride, float* C, int64_t ldc) {
#if defined(__AVX512F__)
  grouped_sgemm(trans_b, E, off, N, K, A, lda, B, ldb, b_stride, C, ldc);
#else
#pragma omp parallel for schedule(dynamic)
  for (int64_t e = 0; e < E; ++e)
    gemm(false, trans_b, off[e + 1] - off[e], N, K, 1.0f, A + off[e] * lda, lda, B + e * b_stride, ldb, 0.0f,
         C + off[e] * ldc, ldc);
#endif
}

void grouped_gemm_tn(int64_t E, const int64_t* off, int64_t M, int64_t N, const float* A, int64_t lda, const float* B,
                     int64_t ldb, float* C) {
#if defined(__AVX512F__)
  grouped_sgemm_tn(E, off, M, N, A, lda, B, ldb, C);
#else
#pragma omp parallel for schedule(dynamic)
  for (int64_t e = 0; e < E; ++e)  // an empty group: K = 0 gives zeros
    gemm(true, false, M, N, off[e + 1] - off[e], 1.0f, A + off[e] * lda, lda, B + off[e] * ldb, ldb, 0.0f,
         C + e * M * N, N);
#endif
}

// bf16 operands: f32 accumulation into an f32 scratch (bgemm), rounded once into the bf16 output.
void matmul_bf16(const MatmulDims& d, std::span<const Tensor> in, const Tensor& out) {
  const uint16_t* A = bf16(in[0]);
  const uint16_t* B = bf16(in[1]);
  float* c = scratch(0, d.m * d.n);
  float* a32 = d.m <= kSkinnyMaxRows ? scratch(1, d.m * d.k) : nullptr;
  const bool skinny = !d.trans_a && d.m <= kSkinnyMaxRows;  // decoding: stream the bf16 weights once
  for (int64_t p = 0; p < d.batch; ++p) {
    const uint16_t* a = A + p * d.a_rows * d.a_cols;
    const uint16_t* b = B + (d.batched ? p * d.b_rows * d.b_cols : 0);
    if (skinny) {
      to_f32(a, a32, d.m * d.k);
      skinny_gemm(d.trans_b, d.m, d.n, d.k, a32, d.k, b, d.b_cols, c, d.n);
    } else {
      bgemm(d.trans_a, d.trans_b, d.m, d.n, d.k, a, d.a_cols, b, d.b_cols, c, d.n);
    }
    to_bf16(c, bf16(out) + p * d.m * d.n, d.m * d.n);
  }
}

void matmul(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  if (in[0].dtype == DType::bf16) return matmul_bf16(d, in, out);
  const float* A = f32(in[0]);
  const float* B = f32(in[1]);
  float* C = f32(out);
  const bool skinny = !d.trans_a && d.m <= kSkinnyMaxRows;
  for (int64_t p = 0; p < d.batch; ++p) {
    const float* a = A + p * d.a_rows * d.a_cols;
    const float* b = B + (d.batched ? p * d.b_rows * d.b_cols : 0);
    float* c = C + p * d.m * d.n;
    if (skinny) skinny_gemm(d.trans_b, d.m, d.n, d.k, a, d.a_cols, b, d.b_cols, c, d.n);
    else gemm(d.trans_a, d.trans_b, d.m, d.n, d.k, 1.0f, a, d.a_cols, b, d.b_cols, 0.0f, c, d.n);
  }
}

}  // namespace tandem::cpu
