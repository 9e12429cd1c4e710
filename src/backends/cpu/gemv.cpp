// Skinny GEMMs for decoding: see gemv.h for the contract.
#include "backends/cpu/gemv.h"

#include <omp.h>

#include <algorithm>

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
// trans_b false: the M output rows of a column chunk stay in L1 (32 KB on Zen 4) beside the four
// weight rows being streamed: at most kTileFloats floats of C per chunk.
constexpr int64_t kTileFloats = 4096;

// Rows of B read per pass. Eight concurrent streams reached the single-thread read bandwidth on
// Zen 4 (measured against 1, 2, 4 and 16: 4 was 10-30% slower, 16 no better).
constexpr int kRowsPerPass = 8;

int64_t round_up(int64_t x, int64_t unit) { return (x + unit - 1) / unit * unit; }

#ifdef __AVX512F__

inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// trans_b false: for R rows of B (k0..k0+R-1) and columns [c0, c1) of all M rows of C,
// y[m, j] = fma(A[m, k0+R-1], B[k0+R-1, j], ... fma(A[m, k0], B[k0, j], y[m, j])): the element's
// FMA chain continues over k ascending, with y loaded and stored once per R FMAs.
template <int R>
void nn_pass(int64_t M, int64_t k0, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             int64_t c0, int64_t c1) {
  const int64_t full_end = c0 + (c1 - c0) / 16 * 16;
  const __mmask16 tail = first_lanes(c1 - full_end);
  const float* w[R];
  for (int r = 0; r < R; ++r) w[r] = B + (k0 + r) * ldb;
  for (int64_t m = 0; m < M; ++m) {
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_set1_ps(A[m * lda + k0 + r]);
    float* y = C + m * ldc;
    int64_t j = c0;
    for (; j < full_end; j += 16) {
      __m512 acc = _mm512_loadu_ps(y + j);
      for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(a[r], _mm512_loadu_ps(w[r] + j), acc);
      _mm512_storeu_ps(y + j, acc);
    }
    if (tail) {
      __m512 acc = _mm512_maskz_loadu_ps(tail, y + j);
      for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(a[r], _mm512_maskz_loadu_ps(tail, w[r] + j), acc);
      _mm512_mask_storeu_ps(y + j, tail, acc);
    }
  }
}

// trans_b false, columns [c0, c1) of all M rows: y[m, :] = sum over k of A[m, k] * B[k, :], one FMA
// chain per element over k ascending from 0, kRowsPerPass rows of B per pass (then one at a time).
void nn_chunk(int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
              int64_t c0, int64_t c1) {
  for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc + c0, C + m * ldc + c1, 0.0f);
  int64_t k = 0;
  for (; k + kRowsPerPass <= K; k += kRowsPerPass) nn_pass<kRowsPerPass>(M, k, A, lda, B, ldb, C, ldc, c0, c1);
  for (; k < K; ++k) nn_pass<1>(M, k, A, lda, B, ldb, C, ldc, c0, c1);
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
template <int R>
void nt_pass(int64_t M, const Dot& d, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
             int64_t n) {
  const float* b[R];
  for (int r = 0; r < R; ++r) b[r] = B + (n + r) * ldb;
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k < d.full; k += 16) {
      const __m512 x = _mm512_loadu_ps(a + k);
      for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(x, _mm512_loadu_ps(b[r] + k), s[r]);
    }
    if (d.tail) {
      const __m512 x = _mm512_maskz_loadu_ps(d.tail, a + k);
      for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(d.tail, b[r] + k), s[r]);
    }
    for (int r = 0; r < R; ++r) C[m * ldc + n + r] = _mm512_reduce_add_ps(s[r]);
  }
}

// trans_b true, rows [r0, r1) of B, kRowsPerPass at a time (then one at a time).
void nt_chunk(int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
              int64_t r0, int64_t r1) {
  const Dot d(K);
  int64_t n = r0;
  for (; n + kRowsPerPass <= r1; n += kRowsPerPass) nt_pass<kRowsPerPass>(M, d, A, lda, B, ldb, C, ldc, n);
  for (; n < r1; ++n) nt_pass<1>(M, d, A, lda, B, ldb, C, ldc, n);
}

#else  // portable: the same chunks, plain loops (one chain per element over k ascending)

void nn_chunk(int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
              int64_t c0, int64_t c1) {
  for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc + c0, C + m * ldc + c1, 0.0f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t m = 0; m < M; ++m) {
      const float a = A[m * lda + k];
      const float* w = B + k * ldb;
      float* y = C + m * ldc;
      for (int64_t j = c0; j < c1; ++j) y[j] += a * w[j];
    }
}

void nt_chunk(int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
              int64_t r0, int64_t r1) {
  for (int64_t n = r0; n < r1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += A[m * lda + k] * B[n * ldb + k];
      C[m * ldc + n] = s;
    }
}

#endif

}  // namespace

void skinny_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, 0.0f);
    return;
  }
  const bool serial = omp_in_parallel() || N * K <= kSerialMax;
  const int64_t threads = serial ? 1 : omp_get_max_threads();
  // Chunks: whole 16-column blocks (trans_b false, at most kTileFloats / M columns so the rows
  // of C stay in L1) or whole passes of rows of B (trans_b true).
  const int64_t unit = trans_b ? kRowsPerPass : 16;
  int64_t width = round_up((N + threads * kChunksPerThread - 1) / (threads * kChunksPerThread), unit);
  if (!trans_b) width = std::min(width, std::max<int64_t>(16, kTileFloats / M / 16 * 16));
  if (serial && trans_b) width = N;
  const int64_t chunks = (N + width - 1) / width;
  auto run = [&](int64_t c) {
    const int64_t lo = c * width, hi = std::min(N, lo + width);
    if (trans_b) nt_chunk(M, K, A, lda, B, ldb, C, ldc, lo, hi);
    else nn_chunk(M, K, A, lda, B, ldb, C, ldc, lo, hi);
  };
  if (serial) {
    for (int64_t c = 0; c < chunks; ++c) run(c);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) run(c);
}

}  // namespace tandem::cpu
