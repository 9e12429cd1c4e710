// tandem::cpu::sgemm against a float64 reference loop: all four transpose combinations, odd shapes
// and micro-tile edges, alpha / beta variants (beta 0 must not read C: it is NaN-filled), leading
// dimensions larger than the minimum, calls from inside an OpenMP parallel region, determinism.
//
// Tolerance: |C - C64| <= 1e-6 * sqrt(K) * (|alpha| * sum_k |a_ik b_kj| + |beta c_ij|) + 1e-30 per
// element (~8 ulp x sqrt(K) relative to the magnitude of the terms; float32 sums in a fixed order
// have a typical error of ~6e-8 * sqrt(K) of that magnitude).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/gemm.h"

namespace {

struct Case {
  bool ta, tb;
  int64_t M, N, K;
  float alpha = 1.0f, beta = 0.0f;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // extra leading-dimension slack
};

struct Operands {
  std::vector<float> A, B, C0;  // C0: the initial C (NaN when beta == 0)
  int64_t lda, ldb, ldc;
};

Operands make_operands(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  Operands o;
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  o.lda = a_cols + c.pad_a;
  o.ldb = b_cols + c.pad_b;
  o.ldc = c.N + c.pad_c;
  // padding is NaN: reading past op(X)'s extent would poison the result
  const float nan = std::numeric_limits<float>::quiet_NaN();
  o.A.assign(static_cast<size_t>(std::max<int64_t>(1, a_rows * o.lda)), nan);
  o.B.assign(static_cast<size_t>(std::max<int64_t>(1, b_rows * o.ldb)), nan);
  o.C0.assign(static_cast<size_t>(std::max<int64_t>(1, c.M * o.ldc)), nan);
  for (int64_t i = 0; i < a_rows; ++i)
    for (int64_t j = 0; j < a_cols; ++j) o.A[i * o.lda + j] = d(rng);
  for (int64_t i = 0; i < b_rows; ++i)
    for (int64_t j = 0; j < b_cols; ++j) o.B[i * o.ldb + j] = d(rng);
  if (c.beta != 0.0f)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) o.C0[i * o.ldc + j] = d(rng);
  return o;
}

std::vector<float> run(const Case& c, const Operands& o) {
  std::vector<float> C = o.C0;
  tandem::cpu::sgemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, o.A.data(), o.lda, o.B.data(), o.ldb, c.beta, C.data(),
                     o.ldc);
  return C;
}

void check(const Case& c, const Operands& o, const std::vector<float>& C) {
  const std::string what = "ta=" + std::to_string(c.ta) + " tb=" + std::to_string(c.tb) + " M=" + std::to_string(c.M) +
                           " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
                           " alpha=" + std::to_string(c.alpha) + " beta=" + std::to_string(c.beta);
  const double tol_scale = 1e-6 * std::sqrt(static_cast<double>(std::max<int64_t>(1, c.K)));
  int64_t bad = 0;
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0.0, mag = 0.0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = c.ta ? o.A[k * o.lda + i] : o.A[i * o.lda + k];
        const double b = c.tb ? o.B[j * o.ldb + k] : o.B[k * o.ldb + j];
        s += a * b;
        mag += std::fabs(a * b);
      }
      double ref = c.alpha * s, refmag = std::fabs(c.alpha) * mag;
      if (c.beta != 0.0f) {
        ref += static_cast<double>(c.beta) * o.C0[i * o.ldc + j];
        refmag += std::fabs(static_cast<double>(c.beta) * o.C0[i * o.ldc + j]);
      }
      const double got = C[i * o.ldc + j];
      if (!(std::fabs(got - ref) <= tol_scale * refmag + 1e-30)) {
        if (++bad <= 5) ADD_FAILURE() << what << " at (" << i << "," << j << "): got " << got << " want " << ref;
      }
    }
    // the slack of C (between N and ldc) must be untouched
    for (int64_t j = c.N; j < o.ldc; ++j) {
      const float before = o.C0[i * o.ldc + j], after = C[i * o.ldc + j];
      if (std::memcmp(&before, &after, sizeof(float)) != 0 && ++bad <= 5)
        ADD_FAILURE() << what << " wrote C's padding at (" << i << "," << j << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

std::vector<Case> shape_cases() {
  std::vector<Case> cases;
  const int64_t dims[][3] = {{1, 1, 1},    {1, 1, 7},    {1, 33, 5},   {13, 1, 9},   {13, 33, 7},  {14, 32, 16},
                             {15, 31, 17}, {28, 64, 1},  {29, 65, 3},  {3, 17, 40},  {17, 16, 33}, {2, 100, 385},
                             {45, 70, 400}, {100, 7, 777}, {64, 48, 31}, {7, 700, 13}};
  for (int f = 0; f < 4; ++f)
    for (auto& d : dims) cases.push_back({(f & 1) != 0, (f & 2) != 0, d[0], d[1], d[2]});
  return cases;
}

TEST(Gemm, AllFlagCombosAndOddShapes) {
  uint32_t seed = 1;
  for (const Case& c : shape_cases()) {
    Operands o = make_operands(c, seed++);
    check(c, o, run(c, o));
  }
}

TEST(Gemm, AlphaBetaVariants) {
  const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.5f, 0.0f}, {-2.0f, 1.0f}, {1.5f, -0.75f}, {0.0f, 0.5f},
                         {0.0f, 0.0f}};
  uint32_t seed = 100;
  for (int f = 0; f < 4; ++f)
    for (auto& v : ab)
      for (int64_t K : {int64_t{5}, int64_t{300}, int64_t{1000}}) {  // 1000: several K blocks
        Case c{(f & 1) != 0, (f & 2) != 0, 37, 45, K, v[0], v[1]};
        Operands o = make_operands(c, seed++);
        check(c, o, run(c, o));
      }
}

TEST(Gemm, KZeroScalesC) {
  for (float beta : {0.0f, 1.0f, 0.5f}) {
    Case c{false, false, 9, 35, 0, 1.0f, beta};
    Operands o = make_operands(c, 7);
    std::vector<float> C = run(c, o);
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        const float want = beta == 0.0f ? 0.0f : beta * o.C0[i * o.ldc + j];
        EXPECT_EQ(C[i * o.ldc + j], want);
      }
  }
}

TEST(Gemm, LargerLeadingDimensions) {
  uint32_t seed = 200;
  for (int f = 0; f < 4; ++f)
    for (auto d : {std::array<int64_t, 3>{13, 33, 7}, {30, 70, 50}, {1, 40, 20}, {50, 1, 20}}) {
      Case c{(f & 1) != 0, (f & 2) != 0, d[0], d[1], d[2], 1.0f, 0.5f, 3, 5, 7};
      Operands o = make_operands(c, seed++);
      check(c, o, run(c, o));
      c.beta = 0.0f;
      o = make_operands(c, seed++);
      check(c, o, run(c, o));
    }
}

// Big enough to be split across threads and to span several K / N blocks.
TEST(Gemm, MultiBlockShapes) {
  uint32_t seed = 300;
  for (int f = 0; f < 4; ++f)
    for (auto d : {std::array<int64_t, 3>{200, 130, 800}, {61, 700, 390}, {450, 97, 129}}) {
      Case c{(f & 1) != 0, (f & 2) != 0, d[0], d[1], d[2], 1.0f, 0.0f, 1, 2, 3};
      Operands o = make_operands(c, seed++);
      check(c, o, run(c, o));
    }
}

// Bit-identical results: repeated calls, and a call from inside a parallel region (one thread)
// against one from outside (all threads).
TEST(Gemm, DeterministicAcrossCallsAndThreadCounts) {
  for (int f = 0; f < 4; ++f)
    for (auto d : {std::array<int64_t, 3>{300, 200, 700}, {37, 45, 29}, {130, 1000, 64}}) {
      Case c{(f & 1) != 0, (f & 2) != 0, d[0], d[1], d[2], 1.0f, 0.0f};
      Operands o = make_operands(c, 400 + f);
      const std::vector<float> first = run(c, o), second = run(c, o);
      ASSERT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
      std::vector<float> inner;
#pragma omp parallel num_threads(2)
      {
#pragma omp single
        inner = run(c, o);
      }
      ASSERT_EQ(std::memcmp(first.data(), inner.data(), first.size() * sizeof(float)), 0);
    }
}

// Every thread of a parallel region calls sgemm on its own output: each runs single-threaded on
// its own buffers, and all results are right.
TEST(Gemm, CalledFromInsideParallelRegion) {
  const int T = 4;
  std::vector<Case> cases;
  std::vector<Operands> ops;
  for (int t = 0; t < T; ++t) {
    cases.push_back({(t & 1) != 0, (t & 2) != 0, 50 + 7 * t, 90 - 5 * t, 60 + 50 * t, 1.0f, t % 2 ? 1.0f : 0.0f});
    ops.push_back(make_operands(cases.back(), 500 + t));
  }
  std::vector<std::vector<float>> out(T);
#pragma omp parallel for num_threads(T) schedule(static, 1)
  for (int t = 0; t < T; ++t) {
    for (int rep = 0; rep < 3; ++rep) out[t] = run(cases[t], ops[t]);
  }
  for (int t = 0; t < T; ++t) check(cases[t], ops[t], out[t]);
}

}  // namespace
