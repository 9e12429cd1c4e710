// tandem's bf16 GEMM: see gemm_bf16.h for the contract.
#include "backends/cpu/gemm_bf16.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_util.h"
#include "core/dtype.h"

#ifdef __AVX512F__
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu {
namespace {

// The fallback: widen both operands to f32 (exact) and run sgemm.
void widened_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
                  int64_t ldb, float* C, int64_t ldc) {
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  std::vector<float> a(static_cast<size_t>(a_rows * a_cols)), b(static_cast<size_t>(b_rows * b_cols));
  for (int64_t r = 0; r < a_rows; ++r) bf16_to_f32(A + r * lda, a.data() + r * a_cols, static_cast<size_t>(a_cols));
  for (int64_t r = 0; r < b_rows; ++r) bf16_to_f32(B + r * ldb, b.data() + r * b_cols, static_cast<size_t>(b_cols));
  sgemm(ta, tb, M, N, K, 1.0f, a.data(), a_cols, b.data(), b_cols, 0.0f, C, ldc);
}

#ifdef __AVX512F__
#define TANDEM_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
using namespace gemm_util;

// Micro-tile 14 x 32 of C in 28 zmm accumulators; per k-pair: 2 loads of B (32 columns x 2 k),
// 14 broadcasts of an A pair, 28 vdpbf16ps.
constexpr int MR = 14;
constexpr int NR = 32;
constexpr int64_t KC_MAX = 512;  // k per block: the A micro-panel (14 x 512 bf16, 14 KB) stays in L1d
constexpr int64_t NC_MAX = 384;  // the packed B panel (512 x 384 bf16, 384 KB) stays in L2
constexpr int64_t MC_MAX = MR * 134;

// One operand as the packer sees it: element (i, k) of a [rows, K] matrix, i the row of C (A) or
// the column of C (B). k_contig: consecutive k are adjacent in memory (A plain, B transposed).
struct Source {
  const uint16_t* p;
  int64_t ld;
  bool k_contig;
  uint16_t at(int64_t i, int64_t k) const { return k_contig ? p[i * ld + k] : p[k * ld + i]; }
};

// Packs rows [i0, i0 + rows) x k [k0, k0 + kc) into micro-panels of R rows: panel q holds, for
// each k-pair kp, R 32-bit lanes (k = k0 + 2kp in the low half, k0 + 2kp + 1 in the high half, 0
// past kc). Lanes past `rows` in the last panel are zero up to its last 16-lane vector.
template <int R>
void pack(const Source& s, int64_t i0, int64_t rows, int64_t k0, int64_t kc, uint32_t* dst) {
  const int64_t kcp = (kc + 1) / 2;
  const bool pairs_aligned = kc % 2 == 0 && k0 % 2 == 0 && s.ld % 2 == 0;
  for (int64_t q = 0; q * R < rows; ++q) {
    const int64_t n = std::min<int64_t>(R, rows - q * R);
    uint32_t* d = dst + q * R * kcp;
    const int64_t iq = i0 + q * R;
    if (s.k_contig && pairs_aligned) {
      // Rows of k-pairs are rows of 32-bit lanes: a 32-bit transpose per 16 x 16 block.
      for (int h = 0; h * 16 < n; ++h) {
        const int hr = static_cast<int>(std::min<int64_t>(16, n - h * 16));
        const float* src = reinterpret_cast<const float*>(s.p + (iq + h * 16) * s.ld + k0);
        const __mmask16 lanes = R < 16 ? low_mask(hr) : __mmask16(0xFFFF);
        for (int64_t kp = 0; kp < kcp; kp += 16)
          transpose_block(src + kp, s.ld / 2, hr, static_cast<int>(std::min<int64_t>(16, kcp - kp)),
                          reinterpret_cast<float*>(d + kp * R + h * 16), R, lanes);
      }
    } else if (!s.k_contig) {
      // A row of k holds consecutive i: interleave the rows k and k + 1.
      for (int64_t kp = 0; kp < kcp; ++kp) {
        const uint16_t* r0 = s.p + (k0 + 2 * kp) * s.ld + iq;
        const bool has_hi = 2 * kp + 1 < kc;
        for (int h = 0; h * 16 < n; ++h) {
          const __mmask16 m = low_mask(n - h * 16);
          const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r0 + h * 16));
          const __m512i hi = has_hi ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r0 + s.ld + h * 16))
                                    : _mm512_setzero_si512();
          const __m512i v = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
          _mm512_mask_storeu_epi32(d + kp * R + h * 16, R < 16 ? m : __mmask16(0xFFFF), v);
        }
      }
    } else {
      for (int64_t kp = 0; kp < kcp; ++kp)
        for (int64_t i = 0; i < R; ++i) {
          uint32_t v = 0;
          if (i < n) {
            v = s.at(iq + i, k0 + 2 * kp);
            if (2 * kp + 1 < kc) v |= static_cast<uint32_t>(s.at(iq + i, k0 + 2 * kp + 1)) << 16;
          }
          d[kp * R + i] = v;
        }
    }
  }
}

// C[R x (16*NV)] (last vector masked by mlast) = (accumulate ? C : 0) + Ap . Bp over kcp k-pairs.
template <int R, int NV>
TANDEM_BF16_TARGET void kernel(int64_t kcp, const uint32_t* __restrict a, const uint32_t* __restrict b, float* c,
                               int64_t ldc, bool accumulate, __mmask16 mlast) {
  __m512 acc[R][NV];
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t kp = 0; kp < kcp; ++kp) {
    __m512bh bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_load_si512(b + 16 * v);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i]));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, bv[v]);
    }
    a += MR;
    b += NR;
  }
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    float* row = c + i * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? mlast : __mmask16(0xFFFF);
      __m512 r = acc[i][v];
      if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, row + 16 * v));
      _mm512_mask_storeu_ps(row + 16 * v, m, r);
    }
  }
}

using KernelFn = void (*)(int64_t, const uint32_t*, const uint32_t*, float*, int64_t, bool, __mmask16);
template <int... Rs>
constexpr auto make_table(std::integer_sequence<int, Rs...>) {
  struct Table {
    KernelFn f[MR][2];
  } t{};
  ((t.f[Rs][0] = &kernel<Rs + 1, 1>, t.f[Rs][1] = &kernel<Rs + 1, 2>), ...);
  return t;
}
constexpr auto kKernels = make_table(std::make_integer_sequence<int, MR>{});

struct Buffers {
  std::vector<uint32_t> a, b;  // 64-byte alignment: see grow()
  uint32_t* grow(std::vector<uint32_t>& v, size_t n) {
    if (v.size() < n + 16) v.resize(n + 16);
    // align the start to 64 bytes inside the vector
    auto addr = reinterpret_cast<uintptr_t>(v.data());
    return v.data() + ((64 - addr % 64) % 64) / 4;
  }
};
thread_local Buffers tl_buf;

struct Problem {
  Source a, b;
  int64_t M, N, K;
  float* C;
  int64_t ldc;
  int64_t kc_blk;
};

void rect(const Problem& P, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  const int64_t mc_blk = balanced_block(m1 - m0, MC_MAX, MR);
  const int64_t nc_blk = balanced_block(n1 - n0, NC_MAX, NR);
  const int64_t kcp_max = (P.kc_blk + 1) / 2;
  uint32_t* Ap = tl_buf.grow(tl_buf.a, static_cast<size_t>(mc_blk * kcp_max));
  uint32_t* Bp = tl_buf.grow(tl_buf.b, static_cast<size_t>(nc_blk * kcp_max));
  for (int64_t ic = m0; ic < m1; ic += mc_blk) {
    const int64_t mc = std::min(mc_blk, m1 - ic);
    for (int64_t pc = 0; pc < P.K; pc += P.kc_blk) {
      const int64_t kc = std::min(P.kc_blk, P.K - pc), kcp = (kc + 1) / 2;
      pack<MR>(P.a, ic, mc, pc, kc, Ap);
      for (int64_t jc = n0; jc < n1; jc += nc_blk) {
        const int64_t nc = std::min(nc_blk, n1 - jc);
        pack<NR>(P.b, jc, nc, pc, kc, Bp);
        for (int64_t ir = 0; ir < mc; ir += MR) {
          const int rows = static_cast<int>(std::min<int64_t>(MR, mc - ir));
          float* crow = P.C + (ic + ir) * P.ldc + jc;
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int64_t cols = std::min<int64_t>(NR, nc - jr);
            const int nv = cols > 16 ? 2 : 1;
            kKernels.f[rows - 1][nv - 1](kcp, Ap + ir * kcp, Bp + jr * kcp, crow + jr, P.ldc, pc > 0,
                                         low_mask(cols - 16 * (nv - 1)));
          }
        }
      }
    }
  }
}

// Tiles of C split between the threads along M or N (whole micro-tiles; the cheaper re-packing).
void bgemm_avx512(const Problem& P) {
  int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (P.M * P.N * P.K < (int64_t{1} << 18)) nt = 1;
  const int64_t mtiles = (P.M + MR - 1) / MR, ntiles = (P.N + NR - 1) / NR;
  if (nt > 1 && mtiles * ntiles < 2) nt = 1;
  if (nt == 1) return rect(P, 0, P.M, 0, P.N);
  auto strip_cost = [&](int64_t tiles, int64_t other_tiles, int64_t repack) {
    return (tiles + nt - 1) / nt * other_tiles * MR * NR * P.K / 16 + repack * P.K;
  };
  const bool split_m = mtiles >= nt && (ntiles < nt || strip_cost(mtiles, ntiles, P.N) <= strip_cost(ntiles, mtiles, P.M));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t tiles = split_m ? mtiles : ntiles;
    const int64_t t0 = tiles * t / T, t1 = tiles * (t + 1) / T;
    if (split_m) rect(P, std::min(P.M, t0 * MR), std::min(P.M, t1 * MR), 0, P.N);
    else rect(P, 0, P.M, std::min(P.N, t0 * NR), std::min(P.N, t1 * NR));
  }
}
#endif

}  // namespace

bool bgemm_native() {
#ifdef __AVX512F__
  static const bool native = __builtin_cpu_supports("avx512bf16");
  return native;
#else
  return false;
#endif
}

void bgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
           int64_t ldb, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
#ifdef __AVX512F__
  if (bgemm_native()) {
    const Problem P{{A, lda, !ta}, {B, ldb, tb}, M, N, K, C, ldc, balanced_block(K, KC_MAX, 2)};
    return bgemm_avx512(P);
  }
#endif
  widened_gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}

namespace {
// Without vdpbf16ps: the operands widened to f32 (exact), then the f32 grouped GEMM.
std::vector<float> widened(const uint16_t* p, int64_t n) {
  std::vector<float> w(static_cast<size_t>(std::max<int64_t>(n, 1)));
  bf16_to_f32(p, w.data(), static_cast<size_t>(n));
  return w;
}
}  // namespace

void grouped_bgemm(bool trans_b, int64_t E, const int64_t* off, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                   const uint16_t* B, int64_t ldb, int64_t b_stride, float* C, int64_t ldc) {
#ifdef __AVX512F__
  if (bgemm_native() && K > 0 && N > 0) {
    std::vector<Problem> probs;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], m = off[e + 1] - r0;
      if (m > 0)
        probs.push_back({{A + r0 * lda, lda, true}, {B + e * b_stride, ldb, trans_b}, m, N, K, C + r0 * ldc, ldc,
                         balanced_block(K, KC_MAX, 2)});
    }
    return run_groups<MR, NR>(probs, rect);
  }
#endif
  const int64_t rows = off[E];
  const std::vector<float> a = widened(A, rows * lda), b = widened(B, E * b_stride);
  grouped_sgemm(trans_b, E, off, N, K, a.data(), lda, b.data(), ldb, b_stride, C, ldc);
}

void grouped_bgemm_tn(int64_t E, const int64_t* off, int64_t M, int64_t N, const uint16_t* A, int64_t lda,
                      const uint16_t* B, int64_t ldb, float* C) {
#ifdef __AVX512F__
  if (bgemm_native() && M > 0 && N > 0) {
    std::vector<Problem> probs;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], k = off[e + 1] - r0;
      if (k > 0)
        probs.push_back({{A + r0 * lda, lda, false}, {B + r0 * ldb, ldb, false}, M, N, k, C + e * M * N, N,
                         balanced_block(k, KC_MAX, 2)});
      else std::fill(C + e * M * N, C + (e + 1) * M * N, 0.0f);
    }
    return run_groups<MR, NR>(probs, rect);
  }
#endif
  const int64_t rows = off[E];
  const std::vector<float> a = widened(A, rows * lda), b = widened(B, rows * ldb);
  grouped_sgemm_tn(E, off, M, N, a.data(), lda, b.data(), ldb, C);
}

}  // namespace tandem::cpu
