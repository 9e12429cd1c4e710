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

// Grouped GEMMs: the E experts of a DeepSeekMoE layer as one job. Group e owns rows
// [off[e], off[e+1]) of the row-sorted tokens (off has E + 1 entries, off[0] = 0). All groups'
// tiles run in one parallel region: each group is cut into strips of whole micro-tiles sized so the
// threads get balanced work whatever the load of each expert (one hot expert is shared by all
// threads), largest first; a group's packed B panel is reused across its strip. Every element is
// computed exactly as sgemm computes it, so results never depend on the thread count or schedule.
//
// Forward and input gradient: C_e = A_e . op(B_e), A_e / C_e the group's rows of A [rows, K] and
// C [rows, N], B_e = B + e * b_stride, op(B_e) [K, N] (trans_b: B_e stored [N, K]).
void grouped_sgemm(bool trans_b, int64_t E, const int64_t* off, int64_t N, int64_t K, const float* A, int64_t lda,
                   const float* B, int64_t ldb, int64_t b_stride, float* C, int64_t ldc);
// Weight gradient: C_e [M, N] = A_e^T . B_e, A_e / B_e the group's rows of A [rows, M] and
// B [rows, N] (the group's row count is the reduction length); C_e = C + e * M * N, zeros for a
// group without rows.
void grouped_sgemm_tn(int64_t E, const int64_t* off, int64_t M, int64_t N, const float* A, int64_t lda, const float* B,
                      int64_t ldb, float* C);

}  // namespace tandem::cpu
