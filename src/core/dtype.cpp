#include "core/dtype.h"

#include <algorithm>
#include <cmath>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace tandem {

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
#ifdef __AVX512F__
  // The scalar rule in integer lanes: u + 0x7fff + ((u >> 16) & 1), then >> 16; NaN lanes take
  // (u >> 16) | 0x40 instead. (vcvtneps2bf16 is not used: it flushes subnormal inputs.)
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(src + i);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(r));
  }
#endif
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(h, 16));
  }
#endif
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void quantize_q8_0(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQ8Block; ++b, src += kQ8Block, dst += kQ8BlockBytes) {
    float amax = 0.0f;
    for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(src[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const _Float16 h = static_cast<_Float16>(d);  // round to nearest even, as ggml's fp32 -> fp16
    std::memcpy(dst, &h, 2);
    for (int64_t i = 0; i < kQ8Block; ++i) dst[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(src[i] * id)));
  }
}

void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQ8Block; ++b, src += kQ8BlockBytes, dst += kQ8Block) {
    uint16_t h;
    std::memcpy(&h, src, 2);
    const float d = f16_to_f32(h);
    for (int64_t i = 0; i < kQ8Block; ++i) dst[i] = d * static_cast<float>(static_cast<int8_t>(src[2 + i]));
  }
}

}  // namespace tandem
