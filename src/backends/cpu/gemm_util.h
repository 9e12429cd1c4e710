// Pieces shared by the CPU GEMMs (gemm.cpp: f32, gemm_bf16.cpp: bf16): cache-block sizing, the
// grouped GEMMs' scheduler, and the AVX-512 16 x 16 transpose of 32-bit lanes that packing uses
// (bf16 pairs move as 32-bit lanes).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace tandem::cpu::gemm_util {

// Balanced block size: split n into ceil(n / max_block) blocks of (nearly) equal size, rounded up
// to a multiple of `unit`. Depends on n only, never on the thread count.
inline int64_t balanced_block(int64_t n, int64_t max_block, int64_t unit) {
  int64_t nblocks = (n + max_block - 1) / max_block;
  int64_t b = (n + nblocks - 1) / nblocks;
  return (b + unit - 1) / unit * unit;
}

// The grouped GEMMs' scheduler (gemm.h): a problem (P.M x P.N x P.K) of at least twice
// total / (4 nt) multiply-adds is cut into strips of whole MR x NR micro-tiles of about that size,
// smaller ones stay whole (their packed panels serve all of their C); items run largest first,
// dynamically scheduled, so the threads end within about one item of each other (one hot expert is
// shared by all threads). A strip is cut along the dimension with more tiles. `rect(P, m0, m1, n0,
// n1)` computes a rectangle of C on the calling thread, every element the same way whatever
// rectangle it belongs to, so the result depends on neither the cut nor the schedule.
template <int MR, int NR, typename Problem, typename Rect>
void run_groups(const std::vector<Problem>& probs, Rect rect) {
  struct Item {
    const Problem* P;
    int64_t m0, m1, n0, n1, cost;
  };
  int64_t total = 0;
  for (const Problem& P : probs) total += P.M * P.N * P.K;
  int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (total < (int64_t{1} << 18)) nt = 1;
  const int64_t target = nt > 1 ? std::max<int64_t>(total / (4 * nt), 1) : total + 1;
  std::vector<Item> items;
  for (const Problem& P : probs) {
    const int64_t cost = P.M * P.N * P.K, mtiles = (P.M + MR - 1) / MR, ntiles = (P.N + NR - 1) / NR;
    const bool along_m = mtiles >= ntiles;
    const int64_t tiles = along_m ? mtiles : ntiles;
    const int64_t pieces = std::clamp<int64_t>(cost / target, 1, tiles);
    for (int64_t p = 0; p < pieces; ++p) {
      const int64_t t0 = tiles * p / pieces, t1 = tiles * (p + 1) / pieces;
      if (along_m) items.push_back({&P, std::min(P.M, t0 * MR), std::min(P.M, t1 * MR), 0, P.N, cost * (t1 - t0) / tiles});
      else items.push_back({&P, 0, P.M, std::min(P.N, t0 * NR), std::min(P.N, t1 * NR), cost * (t1 - t0) / tiles});
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  const int64_t n = static_cast<int64_t>(items.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    const Item& it = items[static_cast<size_t>(i)];
    rect(*it.P, it.m0, it.m1, it.n0, it.n1);
  }
}

#ifdef __AVX512F__
inline __mmask16 low_mask(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// In-register transpose of a 16 x 16 block: r[i] lane c  ->  r[c] lane i.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + j], 128-bit lane L = column 4L + j of rows 4g .. 4g + 3
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // 4 x 4 transpose of 128-bit lanes, for each j
  for (int j = 0; j < 4; ++j) {
    __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    __m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    __m512 v3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
    r[4 + j] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
  }
}

// Transpose a (rows <= 16) x (cols <= 16) block of src (row stride lds) into dst (row stride ldd):
// dst[c * ldd + i] = src[i * lds + c] for c < cols; each dst row gets `store_lanes` lanes written
// (lanes i >= rows hold zeros).
inline void transpose_block(const float* src, int64_t lds, int rows, int cols, float* dst, int64_t ldd,
                            __mmask16 store_lanes) {
  __m512 r[16];
  const __mmask16 cm = low_mask(cols);
  for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, src + i * lds) : _mm512_setzero_ps();
  transpose16(r);
  for (int c = 0; c < cols; ++c) _mm512_mask_storeu_ps(dst + c * ldd, store_lanes, r[c]);
}

#endif

}  // namespace tandem::cpu::gemm_util
