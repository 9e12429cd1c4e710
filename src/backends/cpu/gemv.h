// Skinny GEMMs: C[M,N] = A[M,K] . op(B) for a handful of rows (M <= kSkinnyMaxRows), the shape of
// every weight matmul when decoding (one row per sequence). They are memory-bound: the weights
// (B) are read from memory once for all M rows, as long contiguous streams, by every OpenMP
// thread at once, where a general GEMM would pack them first.
//  - op(B) = B (trans_b false: B stored [K, N], a Conv1D / linear weight): each thread owns a
//    range of columns and streams B's rows over it, accumulating the M output rows in L1. (A
//    register-blocked variant that walks B in narrow column panels, as a GEMM micro-kernel does,
//    measured 2.4x slower at M = 8 on one thread: the strided walk defeats the prefetchers.)
//  - op(B) = B^T (trans_b true: B stored [N, K], the tied lm_head): each thread owns a range of
//    B's rows and takes M dot products with each.
// Deterministic and row-independent: every element of C is computed by the same sequence of float
// operations whatever M, the other rows, the thread count or the partition (trans_b false: one
// fused multiply-add chain over k = 0..K-1; trans_b true: 16 lane-wise chains over k, then a fixed
// reduction tree), so a sequence decodes to the same bits alone or in a batch. Work is split into
// chunks handed to the OpenMP threads dynamically; inside a parallel region it runs on the calling
// thread. Without __AVX512F__ a portable loop (same contract) is compiled instead.
#pragma once
#include <cstdint>

namespace tandem::cpu {

// Largest M the skinny path takes; larger M go to the general GEMM.
constexpr int64_t kSkinnyMaxRows = 8;

// C[M,N] = A[M,K] . op(B), row-major with leading dims lda/ldb/ldc; C is overwritten (never read).
// 1 <= M <= kSkinnyMaxRows.
void skinny_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc);

}  // namespace tandem::cpu
