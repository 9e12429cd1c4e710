// bf16: the one conversion routine (core/dtype.h) and the bf16 GEMM (backends/cpu/gemm_bf16.h).
//  - Conversion against an independent definition of round-to-nearest-even written with double
//    arithmetic (the two bf16 neighbours of x and the distance to each), over every bf16 value with
//    every interesting low half, f32 edge cases (ties, +-0, +-inf, NaN payloads, subnormals, the
//    overflow boundary), and a strided sweep of all 2^32 f32 bit patterns; the bulk (vectorised)
//    routines must give the scalar routine's bits.
//  - bgemm against a float64 product of the same bf16 values: all four transpose combinations,
//    odd and even K (the vectorised and scalar packing paths), micro-tile and cache-block edges,
//    leading dimensions larger than the minimum, thread-count independence. Bound per element:
//    1e-6 * sqrt(K) * sum_k |a_ik b_kj| (the products are exact in f32; only f32 accumulation rounds).
//  - q8_0 quantization: the bytes ggml's reference quantizer writes for the same f32 rows
//    (tests/data/q8_0/vectors.json, made by gguf-py's port of it), and dequantization exact.
#include <gtest/gtest.h>
#include <omp.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <cmath>
#include <array>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backends/cpu/gemm_bf16.h"
#include "core/dtype.h"

namespace {

using tandem::bf16_to_f32;
using tandem::f32_to_bf16;

float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Round-to-nearest-even to bf16 from the definition: the truncation t (toward zero) and the next
// bf16 away from zero; pick the nearer in exact double arithmetic, the even one on a tie.
uint16_t rne_reference(float x) {
  const uint32_t u = f32_bits(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint16_t t = static_cast<uint16_t>(u >> 16);
  if ((u & 0xffff) == 0) return t;
  const uint16_t up = static_cast<uint16_t>(t + 1);  // next magnitude (may become inf: that is RNE's overflow)
  const double dx = std::fabs(static_cast<double>(x));
  const double dt = std::fabs(static_cast<double>(bf16_to_f32(t)));
  const double du = std::isinf(bf16_to_f32(up)) ? std::ldexp(1.0, 128) : std::fabs(static_cast<double>(bf16_to_f32(up)));
  const double lo = dx - dt, hi = du - dx;
  if (lo < hi) return t;
  if (hi < lo) return up;
  return (t & 1) ? up : t;
}

void expect_converts(float x) {
  const uint16_t want = rne_reference(x);
  ASSERT_EQ(f32_to_bf16(x), want) << "x bits 0x" << std::hex << f32_bits(x);
}

TEST(Bf16Convert, EveryBf16ValueWithEveryInterestingLowHalf) {
  const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x4000, 0xc000};
  for (uint32_t h = 0; h < 65536; ++h) {
    // bf16 -> f32 is exact: the bits are the high half.
    ASSERT_EQ(f32_bits(bf16_to_f32(static_cast<uint16_t>(h))), h << 16);
    for (uint32_t lo : lows) expect_converts(bits_f32((h << 16) | lo));
  }
}

// IEEE binary16 -> f32 (q8_0 scales, F16 tensors) over all 65,536 values, against the value
// the format defines, computed in float64: (-1)^s 2^(e-15) (1 + m/1024), subnormals m 2^-24,
// infinities; NaNs stay NaN with their payload and sign.
TEST(F16Convert, EveryF16Value) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = tandem::f16_to_f32(static_cast<uint16_t>(h));
    const uint32_t s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    if (e == 31 && m != 0) {
      ASSERT_TRUE(std::isnan(got)) << h;
      ASSERT_EQ(f32_bits(got), (s << 31) | 0x7f800000u | (m << 13)) << h;
      continue;
    }
    const double mag = e == 31 ? std::numeric_limits<double>::infinity()
                       : e == 0 ? std::ldexp(static_cast<double>(m), -24)
                                : std::ldexp(1.0 + m / 1024.0, static_cast<int>(e) - 15);
    const double want = s ? -mag : mag;
    ASSERT_EQ(f32_bits(got), f32_bits(static_cast<float>(want))) << "f16 bits 0x" << std::hex << h;
  }
}

TEST(Bf16Convert, EdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(inf), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-inf), 0xff80);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // Ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1.0); 1 + 3*2^-8 rounds up to even.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // The largest finite f32 rounds to inf; the largest finite bf16 stays.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(bf16_to_f32(0x7f7f)), 0x7f7f);
  // NaNs stay NaN, quiet, sign kept (a signalling NaN whose payload sits in the low half too).
  for (uint32_t nan : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fbfffffu}) {
    const uint16_t h = f32_to_bf16(bits_f32(nan));
    EXPECT_TRUE(std::isnan(bf16_to_f32(h))) << std::hex << nan;
    EXPECT_EQ(h & 0x40, 0x40);
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000);
  }
  // Subnormals round like any value (nothing flushed here).
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00010000)), 0x0001);
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00018000)), 0x0002);  // tie -> even
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00008000)), 0x0000);  // tie -> even (zero)
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00008001)), 0x0001);
}

TEST(Bf16Convert, StridedSweepOfAllF32AndBulkEqualsScalar) {
  std::vector<float> xs;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 65521) xs.push_back(bits_f32(static_cast<uint32_t>(u)));
  for (uint32_t u : {0x7f800000u, 0x7fc00000u, 0x7f7fffffu, 0x00000001u, 0x807fffffu}) xs.push_back(bits_f32(u));
  std::vector<uint16_t> bulk(xs.size());
  tandem::f32_to_bf16(xs.data(), bulk.data(), xs.size());
  std::vector<float> back(xs.size());
  tandem::bf16_to_f32(bulk.data(), back.data(), xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    ASSERT_EQ(bulk[i], rne_reference(xs[i])) << "bits 0x" << std::hex << f32_bits(xs[i]);
    ASSERT_EQ(f32_bits(back[i]), static_cast<uint32_t>(bulk[i]) << 16);
  }
}

struct GemmCase {
  bool ta, tb;
  int64_t M, N, K, pad = 0;
};

void check_bgemm(const GemmCase& c, int threads = 0) {
  std::mt19937 rng(static_cast<uint32_t>(c.M * 131 + c.N * 7 + c.K));
  std::normal_distribution<float> d(0.0f, 1.0f);
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = (c.ta ? c.M : c.K), lda = a_cols + c.pad;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = (c.tb ? c.K : c.N), ldb = b_cols + c.pad, ldc = c.N + c.pad;
  std::vector<uint16_t> A(static_cast<size_t>(a_rows * lda), 0x7fc0), B(static_cast<size_t>(b_rows * ldb), 0x7fc0);
  for (int64_t i = 0; i < a_rows; ++i)
    for (int64_t j = 0; j < a_cols; ++j) A[i * lda + j] = f32_to_bf16(d(rng));
  for (int64_t i = 0; i < b_rows; ++i)
    for (int64_t j = 0; j < b_cols; ++j) B[i * ldb + j] = f32_to_bf16(d(rng));
  std::vector<float> C(static_cast<size_t>(c.M * ldc), std::numeric_limits<float>::quiet_NaN());
  const int saved = omp_get_max_threads();
  if (threads) omp_set_num_threads(threads);
  tandem::cpu::bgemm(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C.data(), ldc);
  omp_set_num_threads(saved);
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double want = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = bf16_to_f32(c.ta ? A[k * lda + i] : A[i * lda + k]);
        const double b = bf16_to_f32(c.tb ? B[j * ldb + k] : B[k * ldb + j]);
        want += a * b;
        mag += std::fabs(a * b);
      }
      const double got = C[i * ldc + j];
      ASSERT_LE(std::fabs(got - want), 1e-6 * std::sqrt(static_cast<double>(c.K)) * mag + 1e-30)
          << "ta " << c.ta << " tb " << c.tb << " M " << c.M << " N " << c.N << " K " << c.K << " at (" << i << ", " << j
          << ")";
    }
}

TEST(Bgemm, AllFlagCombosOddAndEvenK) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [M, N, K] : {std::array<int64_t, 3>{1, 1, 1}, {14, 32, 2}, {15, 33, 3}, {29, 47, 64}, {45, 70, 65},
                             {3, 100, 130}, {100, 3, 31}})
        check_bgemm({ta, tb, M, N, K});
}

TEST(Bgemm, CacheBlocksAndLeadingDimensions) {
  check_bgemm({false, false, 300, 400, 1100});  // K blocks of 512, N blocks of 384, M strips
  check_bgemm({false, true, 70, 90, 1030, 6});
  check_bgemm({true, false, 33, 65, 514, 2});
  check_bgemm({true, true, 17, 40, 257, 3});
}

TEST(Bgemm, ThreadCountDoesNotChangeBits) {
  const int64_t M = 90, N = 130, K = 600;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<uint16_t> A(M * K), B(K * N);
  for (auto& v : A) v = f32_to_bf16(d(rng));
  for (auto& v : B) v = f32_to_bf16(d(rng));
  std::vector<float> C1(M * N), C2(M * N);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  tandem::cpu::bgemm(false, true, M, N, K, A.data(), K, B.data(), K, C1.data(), N);
  omp_set_num_threads(2);
  tandem::cpu::bgemm(false, true, M, N, K, A.data(), K, B.data(), K, C2.data(), N);
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(C1.data(), C2.data(), C1.size() * 4));
}

// The grouped bf16 GEMMs: each group bit-identical to one bgemm call (the same kernel and K
// blocking), whatever the thread count, with one hot group and empty ones (bgemm itself is checked
// against float64 above).
TEST(Bgemm, GroupedEqualsPerGroupBgemm) {
  const int64_t N = 48, K = 70;
  const std::vector<int64_t> load = {0, 700, 5, 0, 31, 1};
  const int64_t E = static_cast<int64_t>(load.size());
  std::vector<int64_t> off(static_cast<size_t>(E + 1), 0);
  for (int64_t e = 0; e < E; ++e) off[e + 1] = off[e] + load[e];
  const int64_t rows = off[E];
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<uint16_t> A(rows * K), B(E * N * K), G(rows * N);
  for (auto* v : {&A, &B, &G})
    for (auto& x : *v) x = f32_to_bf16(d(rng));
  const int saved = omp_get_max_threads();
  for (int form = 0; form < 3; ++form) {  // 0: A . B_e^T, 1: G . B_e, 2: G_e^T . A_e
    const int64_t out = form == 2 ? E * N * K : rows * (form == 0 ? N : K);
    std::vector<float> first;
    for (int threads : {2, 1, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> C(static_cast<size_t>(out), std::nanf(""));
      if (form == 0) tandem::cpu::grouped_bgemm(true, E, off.data(), N, K, A.data(), K, B.data(), K, N * K, C.data(), N);
      else if (form == 1) tandem::cpu::grouped_bgemm(false, E, off.data(), K, N, G.data(), N, B.data(), K, N * K, C.data(), K);
      else tandem::cpu::grouped_bgemm_tn(E, off.data(), N, K, G.data(), N, A.data(), K, C.data());
      if (first.empty()) first = C;
      else EXPECT_EQ(0, std::memcmp(first.data(), C.data(), C.size() * 4)) << "form " << form << ", " << threads << " threads";
    }
    omp_set_num_threads(saved);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], m = load[e];
      std::vector<float> one(static_cast<size_t>(form == 2 ? N * K : m * (form == 0 ? N : K)) + 1);
      if (form == 0) tandem::cpu::bgemm(false, true, m, N, K, A.data() + r0 * K, K, B.data() + e * N * K, K, one.data(), N);
      else if (form == 1) tandem::cpu::bgemm(false, false, m, K, N, G.data() + r0 * N, N, B.data() + e * N * K, K, one.data(), K);
      else tandem::cpu::bgemm(true, false, N, K, m, G.data() + r0 * N, N, A.data() + r0 * K, K, one.data(), K);
      const float* got = first.data() + (form == 2 ? e * N * K : r0 * (form == 0 ? N : K));
      EXPECT_EQ(0, std::memcmp(got, one.data(), (one.size() - 1) * 4)) << "form " << form << ", group " << e;
    }
  }
}

TEST(Q8_0, QuantizesAsGgmlsReferenceQuantizer) {
  const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / "q8_0" / "vectors.json";
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << path;
  const auto rows = nlohmann::json::parse(f);
  ASSERT_GE(rows.size(), 5u);
  for (const auto& row : rows) {
    const auto x = row.at("values").get<std::vector<float>>();
    const std::string want = row.at("q8_0").get<std::string>();
    std::vector<uint8_t> q(static_cast<size_t>(x.size()) / 32 * 34);
    tandem::quantize_q8_0(x.data(), q.data(), static_cast<int64_t>(x.size()));
    std::string got;
    char hex[3];
    for (uint8_t b : q) {
      std::snprintf(hex, sizeof hex, "%02x", b);
      got += hex;
    }
    EXPECT_EQ(got, want) << "row of " << x.size() << " values starting " << x[0];
    // dequantized: d * q exactly (fp16 d times an int8 is exact in f32)
    std::vector<float> back(x.size());
    tandem::dequantize_q8_0(q.data(), back.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      _Float16 h;
      std::memcpy(&h, q.data() + i / 32 * 34, 2);
      EXPECT_EQ(back[i], static_cast<float>(h) * static_cast<float>(static_cast<int8_t>(q[i / 32 * 34 + 2 + i % 32])));
    }
  }
}

}  // namespace
