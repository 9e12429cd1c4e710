// Skinny GEMMs for decoding: see gemv.h for the contract.
#include "backends/cpu/gemv.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/dtype.h"

#ifdef __AVX512F__
#include <immintrin.h>
// GCC 12 flags _mm512_undefined_ps() (self-initialised by design) inside _mm512_reduce_add_ps as
// "used uninitialized": a known false positive (as in gemm.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu {
namespace {

// Work is cut into about this many chunks per thread, handed out dynamically: a thread that the
// OS delays (2 shared cores) holds up the others by one chunk at most, not by half the matrix.
constexpr int64_t kChunksPerThread = 4;
// Below this many weights (N * K) one thread does it all: forking costs more than it saves.
constexpr int64_t kSerialMax = 1 << 15;
// trans_b false: at most kTileFloats floats of partial sums (M rows of a column tile) per block, so
// they stay in L2 beside the weight rows being streamed (64 KB: at M <= 4 a tile spans all of
// GPT-2's columns; measured at M = 4, 2 threads: 16.2 GB/s against 13.6 with 16 KB tiles).
constexpr int64_t kTileFloats = 16384;
// trans_b false: rows of B per piece. Fixed, so the partial sums (and the bits of C) depend on K
// alone, never on the thread count; 64 rows of a 768- to 3072-wide weight are 192-768 KB.
constexpr int64_t kPieceRows = 64;

// Rows of B read per pass. Eight concurrent streams reached the single-thread read bandwidth on
// Zen 4 (measured against 1, 2, 4 and 16: 4 was 10-30% slower, 16 no better).
constexpr int kRowsPerPass = 8;

int64_t round_up(int64_t x, int64_t unit) { return (x + unit - 1) / unit * unit; }

// A position in a row-major matrix stored as q8_0 (core/dtype.h): a row of a multiple of 32 values
// is whole blocks, so the blocks simply follow the linear value index i (block i / 32, byte 2 +
// i % 32 of it, the block's fp16 scale in its first two bytes). The kernels below index weights
// as `B + k * ldb + j` with W = float, uint16_t or this.
struct Q8 {
  const uint8_t* base;
  int64_t i;
  Q8 operator+(int64_t d) const { return {base, i + d}; }
  const uint8_t* block() const { return base + static_cast<size_t>(i / kQ8Block) * kQ8BlockBytes; }
  const int8_t* values() const { return reinterpret_cast<const int8_t*>(block() + 2) + i % kQ8Block; }
  // scale x int8 is exact in f32 (11 + 8 significant bits): a dequantized weight, bit for bit.
  float operator[](int64_t d) const {
    const Q8 q = *this + d;
    uint16_t h;
    std::memcpy(&h, q.block(), 2);
    return f16_to_f32(h) * static_cast<float>(*q.values());
  }
};

#ifdef __AVX512F__

inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// 16 weights as f32 lanes: f32 as they are, bf16 widened exactly (the bits shifted up).
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load16(__mmask16 m, const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// Asks for the cache line at column c of the R rows that follow rows[0..R) (the next pass) into
// L2 while this pass streams its own: the hardware prefetchers alone, following R interleaved
// streams, left the skinny GEMM at 72-86% of a plain read of the same weights; with this, 98-105%
// (bench_gemv.sh, alternating runs). Prefetching past the end of B is harmless (no fault).
template <int R, typename W>
inline void prefetch_next_rows(const W* rows, int64_t ld, int64_t c) {
  for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(rows[r] + R * ld + c), _MM_HINT_T1);
}

// q8_0 passes: the f32 passes' operations in the same order on the same (exactly dequantized)
// values, walking whole 32-value blocks so that each block's scale is read once and the rows are
// plain byte pointers. Columns (nn) and K (nt) come in whole blocks (the q8_0 contract).
inline void load32(const uint8_t* blk, __m512& lo, __m512& hi) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
  lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(v))));
  hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(v, 1))));
}

template <int R>
void nn_pass_q8(int64_t M, int64_t k0, const float* A, int64_t lda, Q8 B, int64_t ldb, float* C, int64_t ldc,
                int64_t c0, int64_t c1, bool first) {
  const uint8_t* w[R];
  for (int r = 0; r < R; ++r) w[r] = (B + (k0 + r) * ldb + c0).block();
  const size_t row = static_cast<size_t>(ldb / kQ8Block) * kQ8BlockBytes;
  for (int64_t m = 0; m < M; ++m) {
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_set1_ps(A[m * lda + k0 + r]);
    float* y = C + m * ldc;
    for (int64_t j = c0, b = 0; j < c1; j += kQ8Block, ++b) {
      const size_t at = static_cast<size_t>(b) * kQ8BlockBytes;
      if (m == 0)
        for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(w[r] + R * row + at), _MM_HINT_T1);
      __m512 lo = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + j);
      __m512 hi = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + j + 16);
      for (int r = 0; r < R; ++r) {
        __m512 wl, wh;
        load32(w[r] + at, wl, wh);
        lo = _mm512_fmadd_ps(a[r], wl, lo);
        hi = _mm512_fmadd_ps(a[r], wh, hi);
      }
      _mm512_storeu_ps(y + j, lo);
      _mm512_storeu_ps(y + j + 16, hi);
    }
  }
}

template <int R>
void nt_pass_q8(int64_t M, int64_t K, const float* A, int64_t lda, Q8 B, int64_t ldb, float* C, int64_t ldc,
                int64_t n) {
  const uint8_t* b[R];
  for (int r = 0; r < R; ++r) b[r] = (B + (n + r) * ldb).block();
  const size_t row = static_cast<size_t>(ldb / kQ8Block) * kQ8BlockBytes;
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    for (int64_t k = 0, blk = 0; k < K; k += kQ8Block, ++blk) {
      const size_t at = static_cast<size_t>(blk) * kQ8BlockBytes;
      if (m == 0)
        for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(b[r] + R * row + at), _MM_HINT_T1);
      const __m512 xl = _mm512_loadu_ps(a + k), xh = _mm512_loadu_ps(a + k + 16);
      for (int r = 0; r < R; ++r) {
        __m512 wl, wh;
        load32(b[r] + at, wl, wh);
        s[r] = _mm512_fmadd_ps(xh, wh, _mm512_fmadd_ps(xl, wl, s[r]));
      }
    }
    for (int r = 0; r < R; ++r) C[m * ldc + n + r] = _mm512_reduce_add_ps(s[r]);
  }
}

// trans_b false: for R rows of B (k0..k0+R-1) and columns [c0, c1) of all M rows of C,
// y[m, j] = fma(A[m, k0+R-1], B[k0+R-1, j], ... fma(A[m, k0], B[k0, j], y[m, j])): the element's
// FMA chain continues over k ascending, with y loaded and stored once per R FMAs.
template <int R, typename W>
void nn_pass_f(int64_t M, int64_t k0, const float* A, int64_t lda, W B, int64_t ldb, float* C, int64_t ldc,
               int64_t c0, int64_t c1, bool first) {
  const int64_t full_end = c0 + (c1 - c0) / 16 * 16;
  const __mmask16 tail = first_lanes(c1 - full_end);
  W w[R];
  for (int r = 0; r < R; ++r) w[r] = B + (k0 + r) * ldb;
  for (int64_t m = 0; m < M; ++m) {
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_set1_ps(A[m * lda + k0 + r]);
    float* y = C + m * ldc;
    int64_t j = c0;
    for (; j < full_end; j += 16) {
      if (m == 0) prefetch_next_rows<R>(w, ldb, j);
      __m512 acc = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + j);
      for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(a[r], load16(w[r] + j), acc);
      _mm512_storeu_ps(y + j, acc);
    }
    if (tail) {
      __m512 acc = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(tail, y + j);
      for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(a[r], load16(tail, w[r] + j), acc);
      _mm512_mask_storeu_ps(y + j, tail, acc);
    }
  }
}

template <int R, typename W>
void nn_pass(int64_t M, int64_t k0, const float* A, int64_t lda, W B, int64_t ldb, float* C, int64_t ldc,
             int64_t c0, int64_t c1, bool first) {
  if constexpr (std::is_same_v<W, Q8>) nn_pass_q8<R>(M, k0, A, lda, B, ldb, C, ldc, c0, c1, first);
  else nn_pass_f<R, W>(M, k0, A, lda, B, ldb, C, ldc, c0, c1, first);
}

// trans_b false, rows [k0, k1) of B and columns [c0, c1): P[m, :] = sum over those k of
// A[m, k] * B[k, :], one FMA chain per element over k ascending, kRowsPerPass rows per pass (then
// one at a time). P has leading dimension ldp. The first pass starts its chains from zero instead
// of reading zeroed partials (the same bits: fma(a, b, 0) is a * b rounded once).
template <typename W>
void nn_block(int64_t M, int64_t k0, int64_t k1, const float* A, int64_t lda, W B, int64_t ldb, float* P,
              int64_t ldp, int64_t c0, int64_t c1) {
  int64_t k = k0;
  for (; k + kRowsPerPass <= k1; k += kRowsPerPass)
    nn_pass<kRowsPerPass, W>(M, k, A, lda, B, ldb, P, ldp, c0, c1, k == k0);
  for (; k < k1; ++k) nn_pass<1, W>(M, k, A, lda, B, ldb, P, ldp, c0, c1, k == k0);
}

// K split into whole 16-lane blocks and a masked tail (its lanes past K load as zeros).
struct Dot {
  int64_t full;
  __mmask16 tail;
  explicit Dot(int64_t K) : full(K / 16 * 16), tail(first_lanes(K - K / 16 * 16)) {}
};

// trans_b true, R rows of B from n: C[m, n + r] = the 16 lane-wise FMA chains of A[m, :] . B[n + r, :]
// over k ascending, then _mm512_reduce_add_ps (a fixed tree). Each row has its own chains: an
// element's operations are the same whatever R.
template <int R, typename W>
void nt_pass_f(int64_t M, const Dot& d, const float* A, int64_t lda, W B, int64_t ldb, float* C, int64_t ldc,
               int64_t n) {
  W b[R];
  for (int r = 0; r < R; ++r) b[r] = B + (n + r) * ldb;
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k < d.full; k += 16) {
      if (m == 0) prefetch_next_rows<R>(b, ldb, k);
      const __m512 x = _mm512_loadu_ps(a + k);
      for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(x, load16(b[r] + k), s[r]);
    }
    if (d.tail) {
      const __m512 x = _mm512_maskz_loadu_ps(d.tail, a + k);
      for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(x, load16(d.tail, b[r] + k), s[r]);
    }
    for (int r = 0; r < R; ++r) C[m * ldc + n + r] = _mm512_reduce_add_ps(s[r]);
  }
}

template <int R, typename W>
void nt_pass(int64_t M, const Dot& d, const float* A, int64_t lda, W B, int64_t ldb, float* C, int64_t ldc,
             int64_t n) {
  if constexpr (std::is_same_v<W, Q8>) nt_pass_q8<R>(M, d.full + (d.tail ? 16 : 0), A, lda, B, ldb, C, ldc, n);
  else nt_pass_f<R, W>(M, d, A, lda, B, ldb, C, ldc, n);
}

// trans_b true, rows [r0, r1) of B, kRowsPerPass at a time (then one at a time).
template <typename W>
void nt_chunk(int64_t M, int64_t K, const float* A, int64_t lda, W B, int64_t ldb, float* C, int64_t ldc,
              int64_t r0, int64_t r1) {
  const Dot d(K);
  int64_t n = r0;
  for (; n + kRowsPerPass <= r1; n += kRowsPerPass) nt_pass<kRowsPerPass, W>(M, d, A, lda, B, ldb, C, ldc, n);
  for (; n < r1; ++n) nt_pass<1, W>(M, d, A, lda, B, ldb, C, ldc, n);
}

#else  // portable: the same blocks, plain loops (one chain per element over k ascending)

inline float weight(float w) { return w; }
inline float weight(uint16_t w) { return bf16_to_f32(w); }

template <typename W>
void nn_block(int64_t M, int64_t k0, int64_t k1, const float* A, int64_t lda, W B, int64_t ldb, float* P,
              int64_t ldp, int64_t c0, int64_t c1) {
  for (int64_t m = 0; m < M; ++m) std::fill(P + m * ldp + c0, P + m * ldp + c1, 0.0f);
  for (int64_t k = k0; k < k1; ++k)
    for (int64_t m = 0; m < M; ++m) {
      const float a = A[m * lda + k];
      const W w = B + k * ldb;
      float* y = P + m * ldp;
      for (int64_t j = c0; j < c1; ++j) y[j] += a * weight(w[j]);
    }
}

template <typename W>
void nt_chunk(int64_t M, int64_t K, const float* A, int64_t lda, W B, int64_t ldb, float* C, int64_t ldc,
              int64_t r0, int64_t r1) {
  for (int64_t n = r0; n < r1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += A[m * lda + k] * weight(B[n * ldb + k]);
      C[m * ldc + n] = s;
    }
}

#endif

// trans_b false. B is cut into pieces of kPieceRows whole rows (by K alone) and each piece's
// columns into tiles whose M output rows stay in L2; a (piece, tile) block streams its rows of B,
// which are contiguous whenever one tile spans all N columns (always at M = 1 on GPT-2's shapes),
// into its own partial sums. The partials are then added piece by piece in order. Streaming whole
// blocks instead of a narrow column range of every row of B (the layout before) took a 2-thread
// decode step from ~17 to ~21 GB/s: the prefetchers follow a few long streams, not 768 short ones.
template <typename W>
void skinny_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, W B, int64_t ldb, float* C,
               int64_t ldc, bool serial) {
  const int64_t pieces = (K + kPieceRows - 1) / kPieceRows;
  const int64_t width = M * N <= kTileFloats ? N : std::max<int64_t>(32, kTileFloats / M / 32 * 32);
  const int64_t tiles = (N + width - 1) / width, blocks = pieces * tiles;
  // Partial sums [pieces][M][N], reused across calls (grow only) so a decode step does not map
  // and fault in fresh pages for them every time.
  thread_local std::vector<float> partial;
  if (pieces > 1 && partial.size() < static_cast<size_t>(pieces * M * N))
    partial.resize(static_cast<size_t>(pieces * M * N));
  float* P = pieces > 1 ? partial.data() : C;
  const int64_t ldp = pieces > 1 ? N : ldc, piece_stride = M * ldp;
  auto block = [&](int64_t i) {
    const int64_t p = i / tiles, t = i % tiles;
    nn_block(M, p * kPieceRows, std::min(K, (p + 1) * kPieceRows), A, lda, B, ldb, P + p * piece_stride, ldp,
             t * width, std::min(N, (t + 1) * width));
  };
  // C[m, c0:c1) = partial 0 + partial 1 + ... (pieces in order), in column strips of kReduceCols
  // so that both threads share the sum even at M = 1.
  constexpr int64_t kReduceCols = 512;
  const int64_t strips = (N + kReduceCols - 1) / kReduceCols;
  auto reduce = [&](int64_t i) {
    const int64_t m = i / strips, c0 = (i % strips) * kReduceCols, n = std::min(kReduceCols, N - c0);
    float* c = C + m * ldc + c0;
    const float* p0 = P + m * ldp + c0;
    std::copy(p0, p0 + n, c);
    for (int64_t p = 1; p < pieces; ++p) {
      const float* q = p0 + p * piece_stride;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) c[j] += q[j];
    }
  };
  if (serial) {
    for (int64_t i = 0; i < blocks; ++i) block(i);
    if (pieces > 1)
      for (int64_t i = 0; i < M * strips; ++i) reduce(i);
    return;
  }
#pragma omp parallel
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < blocks; ++i) block(i);
    if (pieces > 1) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < M * strips; ++i) reduce(i);
    }
  }
}

template <typename W>
void skinny(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, W B, int64_t ldb,
            float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, 0.0f);
    return;
  }
  const bool serial = omp_in_parallel() || N * K <= kSerialMax;
  if (!trans_b) {
    skinny_nn(M, N, K, A, lda, B, ldb, C, ldc, serial);
    return;
  }
  // trans_b true: chunks of whole passes of rows of B, handed out dynamically.
  const int64_t threads = serial ? 1 : omp_get_max_threads();
  const int64_t width =
      serial ? N : round_up((N + threads * kChunksPerThread - 1) / (threads * kChunksPerThread), kRowsPerPass);
  const int64_t chunks = (N + width - 1) / width;
  auto run = [&](int64_t c) {
    const int64_t lo = c * width;
    nt_chunk(M, K, A, lda, B, ldb, C, ldc, lo, std::min(N, lo + width));
  };
  if (serial) {
    for (int64_t c = 0; c < chunks; ++c) run(c);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) run(c);
}

}  // namespace

void skinny_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc) {
  skinny(trans_b, M, N, K, A, lda, B, ldb, C, ldc);
}

void skinny_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B,
                 int64_t ldb, float* C, int64_t ldc) {
  skinny(trans_b, M, N, K, A, lda, B, ldb, C, ldc);
}

void skinny_gemm_q8_0(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint8_t* B,
                      int64_t ldb, float* C, int64_t ldc) {
  skinny(trans_b, M, N, K, A, lda, Q8{B, 0}, ldb, C, ldc);
}

}  // namespace tandem::cpu
