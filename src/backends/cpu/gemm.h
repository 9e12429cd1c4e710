// tandem's own single-precision GEMM (row-major, cblas_sgemm conventions).
//
// BLIS/GotoBLAS design: A and B are packed into contiguous micro-panels (thread-local buffers,
// reused across calls), a register-blocked AVX-512 micro-kernel (14 x 32 tile of C in 28 zmm
// accumulators, broadcast FMAs) does the arithmetic, and K / M / N are cache-blocked. Outside an
// OpenMP parallel region the tiles of C are split between the OpenMP threads (a fixed partition);
// inside one, it runs on the calling thread only.
//
// Deterministic: every element of C is computed by the same sequence of float operations whatever
// the thread count or partition (K is never split across threads; the K blocking depends on K only),
// so repeated calls, and calls from inside or outside a parallel region, are bit-identical.
// Without __AVX512F__ a portable C++ path (same contract, plain loops) is compiled instead.
#pragma once
#include <cstdint>

namespace tandem::cpu {

// C[M,N] = alpha * op(A)[M,K] . op(B)[K,N] + beta * C, row-major with leading dims lda/ldb/ldc.
// op(X) = X^T when the flag is set (then A is stored [K, M], B is stored [N, K]).
// beta == 0 does not read C (it may hold NaN); K == 0 or alpha == 0 gives C = beta * C and does
// not read A or B.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace tandem::cpu
