// Element types. f32 is the master type every kernel supports; bf16 is storage for mixed-precision
// training and serving (arithmetic stays f32 inside kernels); i32 holds ids; q8_0 is GGUF's 8-bit
// block format for serving weights: each block of 32 consecutive values of a row (the last dim)
// is one fp16 scale d followed by 32 int8 q, value = d * q (34 bytes per 32 values).
//
// The f32 <-> bf16 conversion below is the one routine of the whole code base (kernels, checkpoint
// import/export, the conformance harness, the OpenCL and CUDA kernels implement the same rule):
//  - f32 -> bf16 rounds to nearest, ties to even; a NaN stays NaN and is made quiet (0x0040 set,
//    sign and payload kept); +-inf stay inf; overflow rounds to inf as RNE says; subnormal f32
//    values round like any other (bf16 has the same exponent range, so they become bf16
//    subnormals or zero): nothing is flushed here (the CPU backend's FTZ/DAZ mode applies to
//    arithmetic, never to this integer routine).
//  - bf16 -> f32 is exact (the bf16 bits are the high half of the f32).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tandem {

enum class DType : uint8_t { f32, bf16, i32, q8_0 };

constexpr int64_t kQ8Block = 32;        // values per q8_0 block
constexpr size_t kQ8BlockBytes = 34;    // fp16 scale + 32 int8

// Bytes per element of the element-addressed types (q8_0 is addressed by block: 0 here, see
// storage_bytes).
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::q8_0: return 0;
  }
  return 0;
}

// Bytes of n values (q8_0: n must be a whole number of blocks).
constexpr size_t storage_bytes(DType t, int64_t n) {
  return t == DType::q8_0 ? static_cast<size_t>(n / kQ8Block) * kQ8BlockBytes : static_cast<size_t>(n) * dtype_size(t);
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::q8_0: return "q8_0";
  }
  return "?";
}

constexpr bool is_float(DType t) { return t == DType::f32 || t == DType::bf16; }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 (q8_0 block scales, F16 tensors of safetensors and GGUF files) -> f32: exact,
// subnormals, infinities and NaN included.
// Bit arithmetic rather than _Float16, which Debian 12's clang (the fuzz build) rejects on x86.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);  // infinity, NaN (payload kept, so quiet stays quiet)
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else {
    const float f = static_cast<float>(mant) * 0x1p-24f;  // zero or subnormal: mant x 2^-24, exact
    std::memcpy(&u, &f, 4);
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f32 rounded to the nearest bf16 value, as a float.
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// Bulk conversions (vectorised where the build allows; bit-identical to the scalar routine).
// Single-threaded: callers split large arrays across threads.
void f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);

// q8_0 of n values (a multiple of kQ8Block), exactly as ggml's reference quantizer
// (quantize_row_q8_0_ref): per block amax = max |x|, d = amax / 127, q = round(x / d) (ties away
// from zero), d stored as fp16 (round to nearest even); an all-zero block has d = 0 and q = 0.
void quantize_q8_0(const float* src, uint8_t* dst, int64_t n);
void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n);

}  // namespace tandem
