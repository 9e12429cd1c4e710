// tandem's bf16 GEMM: bf16 operands, f32 accumulation, f32 result (row-major, cblas conventions).
//
// On CPUs with AVX512_BF16 (Zen 4, Zen 5, Cooper Lake and later; decided at run time by CPUID)
// the micro-kernel is vdpbf16ps: each f32 lane accumulates a pair of bf16 products per
// instruction, twice the multiply-adds of an f32 FMA. The design is the f32 sgemm's (gemm.h):
// packed micro-panels, a 14 x 32 register tile, K / M / N cache blocking, tiles of C split between
// the OpenMP threads; A and B are packed as k-pairs (the two bf16 of one 32-bit lane are
// consecutive k), an odd K padded with a zero.
//
// Elsewhere (no AVX512_BF16, or a build without AVX-512) the operands are widened to f32 (exact)
// and multiplied by sgemm: the same products, f32 accumulation in another order.
//
// Deterministic on a given CPU: K blocking depends on K only, K is never split across threads,
// so results do not depend on the thread count. vdpbf16ps reads bf16 subnormal inputs as zero and
// flushes subnormal results (Intel's definition), like the CPU backend's FTZ/DAZ mode.
#pragma once
#include <cstdint>

namespace tandem::cpu {

// C[M,N] = op(A)[M,K] . op(B)[K,N]; A, B bf16 bit patterns; C f32, overwritten (never read).
void bgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
           const uint16_t* B, int64_t ldb, float* C, int64_t ldc);

// The grouped GEMMs of gemm.h (grouped_sgemm, grouped_sgemm_tn: same contracts and schedule) on
// bf16 operands, f32 results.
void grouped_bgemm(bool trans_b, int64_t E, const int64_t* off, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                   const uint16_t* B, int64_t ldb, int64_t b_stride, float* C, int64_t ldc);
void grouped_bgemm_tn(int64_t E, const int64_t* off, int64_t M, int64_t N, const uint16_t* A, int64_t lda,
                      const uint16_t* B, int64_t ldb, float* C);

// Whether bgemm runs on vdpbf16ps on this CPU (for benchmarks and `tandem backends`).
bool bgemm_native();

}  // namespace tandem::cpu
