// Pieces shared by the CPU GEMMs (gemm.cpp: f32, gemm_bf16.cpp: bf16): cache-block sizing and
// the AVX-512 16 x 16 transpose of 32-bit lanes that packing uses (bf16 pairs move as 32-bit lanes).
#pragma once
#include <cstdint>

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
