// tandem's single-precision GEMM: see gemm.h for the contract.
#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_util.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
// GCC 12 flags _mm512_undefined_ps() (self-initialised by design) inside the unpack/shuffle
// intrinsics as "used uninitialized": a known false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu {
namespace {
using namespace gemm_util;

// C = beta * C over an M x N block (beta 0 writes zeros without reading C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      std::fill(c, c + N, 0.0f);
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

#ifdef __AVX512F__

// ---- blocking ------------------------------------------------------------------------------------
// Micro-tile: MR rows x NR columns of C in 28 zmm accumulators; per k: 2 loads of B (32 floats),
// MR broadcasts of A, 28 FMAs.
constexpr int MR = 14;
constexpr int NR = 32;
// K block: the A micro-panel (MR x KC, 21 KB at 384) stays in L1d (32 KB on Zen 4) while the
// kernel sweeps the B panel.
constexpr int64_t KC_MAX = 384;
// N block: the packed B panel (KC x NC, 480 KB at 384 x 320) stays in L2 (1 MB per core).
constexpr int64_t NC_MAX = 320;
// M block: the packed A block (MC x KC, ~2.9 MB) lives in L2/L3 and is reused for every N block.
constexpr int64_t MC_MAX = MR * 134;

// ---- thread-local packing buffers (grown on demand, reused) --------------------------------------
struct PackBuffers {
  float* a = nullptr;
  float* b = nullptr;
  size_t a_cap = 0, b_cap = 0;  // floats
  ~PackBuffers() {
    std::free(a);
    std::free(b);
  }
  static float* grow(float*& p, size_t& cap, size_t n) {
    if (n > cap) {
      std::free(p);
      size_t bytes = (n * sizeof(float) + 4095) / 4096 * 4096;
      p = static_cast<float*>(std::aligned_alloc(4096, bytes));
      cap = bytes / sizeof(float);
    }
    return p;
  }
};
thread_local PackBuffers tl_buffers;

// ---- packing -------------------------------------------------------------------------------------
// Packed A block: micro-panels of MR rows; panel p holds op(A)[i0 + p*MR + i, k0 + k] at
// [p * MR * kc + k * MR + i] (rows past the edge of the last panel are not written nor read).
void pack_a(bool trans_a, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* Ap) {
  for (int64_t p = 0; p * MR < mc; ++p) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - p * MR));
    float* dst = Ap + p * MR * kc;
    const __mmask16 rm = low_mask(rows);
    if (trans_a) {  // A stored [K, M]: MR consecutive floats per k
      const float* src = A + k0 * lda + i0 + p * MR;
      for (int64_t k = 0; k < kc; ++k)
        _mm512_mask_storeu_ps(dst + k * MR, rm, _mm512_maskz_loadu_ps(rm, src + k * lda));
    } else {  // A stored [M, K]: transpose 16-wide k chunks of the panel's rows
      const float* src = A + (i0 + p * MR) * lda + k0;
      for (int64_t k = 0; k < kc; k += 16)
        transpose_block(src + k, lda, rows, static_cast<int>(std::min<int64_t>(16, kc - k)), dst + k * MR, MR, rm);
    }
  }
}

// Packed B panel: micro-panels of NR columns; panel q holds op(B)[k0 + k, j0 + q*NR + j] at
// [q * NR * kc + k * NR + j]; columns past the edge are zero up to the 16-lane vector that holds
// the last valid column.
void pack_b(bool trans_b, const float* B, int64_t ldb, int64_t j0, int64_t nc, int64_t k0, int64_t kc, float* Bp) {
  for (int64_t q = 0; q * NR < nc; ++q) {
    const int64_t cols = std::min<int64_t>(NR, nc - q * NR);
    float* dst = Bp + q * NR * kc;
    if (!trans_b) {  // B stored [K, N]: NR consecutive floats per k
      const float* src = B + k0 * ldb + j0 + q * NR;
      if (cols == NR) {
        for (int64_t k = 0; k < kc; ++k) {
          _mm512_store_ps(dst + k * NR, _mm512_loadu_ps(src + k * ldb));
          _mm512_store_ps(dst + k * NR + 16, _mm512_loadu_ps(src + k * ldb + 16));
        }
      } else {
        const __mmask16 m0 = low_mask(cols), m1 = low_mask(std::max<int64_t>(0, cols - 16));
        for (int64_t k = 0; k < kc; ++k) {
          _mm512_store_ps(dst + k * NR, _mm512_maskz_loadu_ps(m0, src + k * ldb));
          if (cols > 16) _mm512_store_ps(dst + k * NR + 16, _mm512_maskz_loadu_ps(m1, src + k * ldb + 16));
        }
      }
    } else {  // B stored [N, K]: transpose 16 x 16 blocks (column j of op(B) is row j of B)
      for (int h = 0; h * 16 < cols; ++h) {
        const float* src = B + (j0 + q * NR + h * 16) * ldb + k0;
        const int hc = static_cast<int>(std::min<int64_t>(16, cols - h * 16));
        for (int64_t k = 0; k < kc; k += 16)
          transpose_block(src + k, ldb, hc, static_cast<int>(std::min<int64_t>(16, kc - k)), dst + k * NR + h * 16,
                          NR, __mmask16(0xFFFF));
      }
    }
  }
}

// ---- micro-kernel --------------------------------------------------------------------------------
// C[R x (16*NV)] (last vector masked by `mlast`) = alpha * Ap . Bp + beta * C (beta 0: C not read).
// Every accumulator is a plain FMA chain over k = 0 .. kc-1, whatever R / NV: the result of an
// element never depends on the tile it falls in.
template <int R, int NV>
void kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc, float alpha,
            float beta, __mmask16 mlast) {
  __m512 acc[R][NV];
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();

#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    if (NV > 1) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += NR;
  }

  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    float* row = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? mlast : __mmask16(0xFFFF);
      __m512 r;
      if (beta == 0.0f) {
        r = _mm512_mul_ps(va, acc[i][v]);
      } else if (beta == 1.0f) {
        r = _mm512_fmadd_ps(va, acc[i][v], _mm512_maskz_loadu_ps(m, row + 16 * v));
      } else {
        r = _mm512_fmadd_ps(va, acc[i][v], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, row + 16 * v)));
      }
      _mm512_mask_storeu_ps(row + 16 * v, m, r);
    }
  }
}

using KernelFn = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float, __mmask16);

template <int... Rs>
constexpr auto make_table(std::integer_sequence<int, Rs...>) {
  struct Table {
    KernelFn f[MR][2];
  } t{};
  ((t.f[Rs][0] = &kernel<Rs + 1, 1>, t.f[Rs][1] = &kernel<Rs + 1, 2>), ...);
  return t;
}
constexpr auto kKernels = make_table(std::make_integer_sequence<int, MR>{});

// ---- driver --------------------------------------------------------------------------------------
struct Problem {
  bool ta, tb;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
  int64_t kc_blk;  // K block: the only blocking that shapes the arithmetic (depends on K only)
};

// Computes the rectangle [m0, m1) x [n0, n1) of C on the calling thread.
void gemm_rect(const Problem& P, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  PackBuffers& buf = tl_buffers;
  // M / N blocks balanced over this rectangle (they do not affect the arithmetic of an element;
  // only the K blocking does, and it depends on K alone).
  const int64_t mc_blk = balanced_block(m1 - m0, MC_MAX, MR);
  const int64_t nc_blk = balanced_block(n1 - n0, NC_MAX, NR);
  float* Ap = PackBuffers::grow(buf.a, buf.a_cap, static_cast<size_t>(mc_blk * P.kc_blk + 16));
  float* Bp = PackBuffers::grow(buf.b, buf.b_cap, static_cast<size_t>(nc_blk * P.kc_blk + 16));

  for (int64_t ic = m0; ic < m1; ic += mc_blk) {
    const int64_t mc = std::min(mc_blk, m1 - ic);
    for (int64_t pc = 0; pc < P.K; pc += P.kc_blk) {
      const int64_t kc = std::min(P.kc_blk, P.K - pc);
      const float beta = pc == 0 ? P.beta : 1.0f;
      pack_a(P.ta, P.A, P.lda, ic, mc, pc, kc, Ap);
      for (int64_t jc = n0; jc < n1; jc += nc_blk) {
        const int64_t nc = std::min(nc_blk, n1 - jc);
        pack_b(P.tb, P.B, P.ldb, jc, nc, pc, kc, Bp);
        for (int64_t ir = 0; ir < mc; ir += MR) {
          const int rows = static_cast<int>(std::min<int64_t>(MR, mc - ir));
          const float* a = Ap + ir * kc;
          float* crow = P.C + (ic + ir) * P.ldc + jc;
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int64_t cols = std::min<int64_t>(NR, nc - jr);
            const int nv = cols > 16 ? 2 : 1;
            const __mmask16 mlast = low_mask(cols - 16 * (nv - 1));
            kKernels.f[rows - 1][nv - 1](kc, a, Bp + jr * kc, crow + jr, P.ldc, P.alpha, beta, mlast);
          }
        }
      }
    }
  }
}

void sgemm_avx512(const Problem& P) {
  const int64_t flops = P.M * P.N * P.K;
  int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (flops < (int64_t{1} << 18)) nt = 1;  // forking costs more than it saves
  const int64_t mtiles = (P.M + MR - 1) / MR, ntiles = (P.N + NR - 1) / NR;
  if (nt > 1 && mtiles * ntiles < 2) nt = 1;
  if (nt == 1) {
    gemm_rect(P, 0, P.M, 0, P.N);
    return;
  }
  // Split C along one dimension into nt strips of whole micro-tiles. Cost model per thread: its
  // micro-tiles x K, plus re-packing the other operand (splitting M re-packs B in every thread,
  // splitting N re-packs A).
  auto strip_cost = [&](int64_t tiles, int64_t other_tiles, int64_t repack) {
    int64_t per = (tiles + nt - 1) / nt;
    return per * other_tiles * MR * NR * P.K / 8 + repack * P.K;  // pack ~8x cheaper per element than FMA-tile
  };
  const bool split_m = mtiles >= nt && (ntiles < nt || strip_cost(mtiles, ntiles, P.N) <= strip_cost(ntiles, mtiles, P.M));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t tiles = split_m ? mtiles : ntiles;
    const int64_t t0 = tiles * t / T, t1 = tiles * (t + 1) / T;
    if (split_m)
      gemm_rect(P, std::min(P.M, t0 * MR), std::min(P.M, t1 * MR), 0, P.N);
    else
      gemm_rect(P, 0, P.M, std::min(P.N, t0 * NR), std::min(P.N, t1 * NR));
  }
}

#else  // portable path

// op(A)[i, k] . op(B)[k, j] summed in k order per element, in float (one rounding per step, like
// the AVX-512 path's FMA chain up to contraction), rows split across threads.
void sgemm_portable(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const bool par = !omp_in_parallel() && M * N * K >= (int64_t{1} << 18);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float a = ta ? A[k * lda + i] : A[i * lda + k];
        const float b = tb ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
      }
      c[j] = beta == 0.0f ? alpha * s : alpha * s + beta * c[j];
    }
  }
}

#endif

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
#ifdef __AVX512F__
  const Problem P{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, balanced_block(K, KC_MAX, 1)};
  sgemm_avx512(P);
#else
  sgemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void grouped_sgemm(bool trans_b, int64_t E, const int64_t* off, int64_t N, int64_t K, const float* A, int64_t lda,
                   const float* B, int64_t ldb, int64_t b_stride, float* C, int64_t ldc) {
#ifdef __AVX512F__
  if (K > 0 && N > 0) {
    std::vector<Problem> probs;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], m = off[e + 1] - r0;
      if (m > 0)
        probs.push_back({false, trans_b, m, N, K, 1.0f, A + r0 * lda, lda, B + e * b_stride, ldb, 0.0f, C + r0 * ldc, ldc,
                         balanced_block(K, KC_MAX, 1)});
    }
    run_groups<MR, NR>(probs, gemm_rect);
    return;
  }
#endif
  for (int64_t e = 0; e < E; ++e)
    sgemm(false, trans_b, off[e + 1] - off[e], N, K, 1.0f, A + off[e] * lda, lda, B + e * b_stride, ldb, 0.0f,
          C + off[e] * ldc, ldc);
}

void grouped_sgemm_tn(int64_t E, const int64_t* off, int64_t M, int64_t N, const float* A, int64_t lda, const float* B,
                      int64_t ldb, float* C) {
#ifdef __AVX512F__
  if (M > 0 && N > 0) {
    std::vector<Problem> probs;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], k = off[e + 1] - r0;
      if (k > 0)
        probs.push_back({true, false, M, N, k, 1.0f, A + r0 * lda, lda, B + r0 * ldb, ldb, 0.0f, C + e * M * N, N,
                         balanced_block(k, KC_MAX, 1)});
      else scale_c(M, N, 0.0f, C + e * M * N, N);
    }
    run_groups<MR, NR>(probs, gemm_rect);
    return;
  }
#endif
  for (int64_t e = 0; e < E; ++e)  // an empty group: K = 0 gives zeros
    sgemm(true, false, M, N, off[e + 1] - off[e], 1.0f, A + off[e] * lda, lda, B + off[e] * ldb, ldb, 0.0f,
          C + e * M * N, N);
}

}  // namespace tandem::cpu
