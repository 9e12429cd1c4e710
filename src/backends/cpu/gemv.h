// Skinny GEMMs: C[M,N] = A[M,K] . op(B) for a handful of rows (M <= kSkinnyMaxRows), the shape of
// every weight matmul when decoding (one row per sequence). They are memory-bound: the weights
// (B) are read from memory once for all M rows, as long contiguous streams, by every OpenMP
// thread at once, where a general GEMM would pack them first.
//  - op(B) = B (trans_b false: B stored [K, N], a Conv1D / linear weight): B is cut into fixed
//    pieces of 64 whole rows, each streamed (contiguously, when the M output rows of all N columns
//    fit the tile) into its own partial sums, which are then added piece by piece. (Walking a narrow
//    column range of every row of B instead, the former layout, reached ~17 GB/s on two threads
//    against ~22 for this: the prefetchers prefer a few long streams to many short ones.)
//  - op(B) = B^T (trans_b true: B stored [N, K], the tied lm_head): each thread owns a range of
//    B's rows and takes M dot products with each.
// Deterministic and row-independent: every element of C is computed by the same sequence of float
// operations whatever M, the other rows, the thread count or the partition (trans_b false: one
// fused multiply-add chain over k per 64-row piece, then the pieces' sums added in order; trans_b
// true: 16 lane-wise chains over k, then a fixed reduction tree), so a sequence decodes to the same
// bits alone or in a batch. Work is split into chunks handed to the OpenMP threads dynamically;
// inside a parallel region it runs on the calling thread. Without __AVX512F__ a portable loop (same contract) is compiled instead.
#pragma once
#include <cstdint>

namespace tandem::cpu {

// Largest M the skinny path takes; larger M go to the general GEMM.
constexpr int64_t kSkinnyMaxRows = 8;

// C[M,N] = A[M,K] . op(B), row-major with leading dims lda/ldb/ldc; C is overwritten (never read).
// 1 <= M <= kSkinnyMaxRows.
void skinny_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc);
// The same with bf16 weights (bit patterns), widened exactly to f32 as they stream: half the bytes
// of the f32 weights for the same arithmetic (the decode path of --weights bf16).
void skinny_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B,
                 int64_t ldb, float* C, int64_t ldc);
// The same with q8_0 weights (core/dtype.h; every row of B a whole number of 32-value blocks, ldb a
// multiple of 32), dequantized exactly as they stream: the same bits as skinny_gemm on the
// dequantized f32 weights, from 1.06 bytes per weight (the decode path of --weights q8_0).
void skinny_gemm_q8_0(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint8_t* B,
                      int64_t ldb, float* C, int64_t ldc);

}  // namespace tandem::cpu
