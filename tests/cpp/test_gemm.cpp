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

// Grouped GEMMs (the MoE experts as one job) against the float64 reference per group, with loads
// from even to one hot group plus empty groups, big enough for the work-splitting schedule, and
// bit-identical across thread counts (1, 2, 5) and to one sgemm call per group.
TEST(Gemm, GroupedAgainstReferenceAndThreadCounts) {
  const int64_t N = 40, K = 72;  // forward [rows, K] x op(B_e) [K, N]; weight gradient [N, K] per group
  const std::vector<std::vector<int64_t>> loads = {{50, 50, 50, 50}, {0, 610, 3, 0, 0, 17, 1, 0}, {0, 0, 0}, {1500}};
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  const int saved = omp_get_max_threads();
  for (const auto& load : loads) {
    const int64_t E = static_cast<int64_t>(load.size());
    std::vector<int64_t> off(static_cast<size_t>(E + 1), 0);
    for (int64_t e = 0; e < E; ++e) off[e + 1] = off[e] + load[e];
    const int64_t rows = off[E];
    std::vector<float> A(static_cast<size_t>(std::max<int64_t>(1, rows * K))), B(static_cast<size_t>(E * N * K)),
        G(static_cast<size_t>(std::max<int64_t>(1, rows * N)));
    for (float& x : A) x = d(rng);
    for (float& x : B) x = d(rng);
    for (float& x : G) x = d(rng);
    for (int form = 0; form < 3; ++form) {  // 0: A . B_e^T, 1: G . B_e, 2: G_e^T . A_e
      const std::string what = "load " + std::to_string(load.size()) + " groups, form " + std::to_string(form);
      const int64_t cols = form == 0 ? N : K, out = form == 2 ? E * N * K : rows * cols;
      auto grouped = [&](int threads) {
        omp_set_num_threads(threads);
        std::vector<float> C(static_cast<size_t>(std::max<int64_t>(1, out)), std::numeric_limits<float>::quiet_NaN());
        if (form == 0) tandem::cpu::grouped_sgemm(true, E, off.data(), N, K, A.data(), K, B.data(), K, N * K, C.data(), N);
        else if (form == 1) tandem::cpu::grouped_sgemm(false, E, off.data(), K, N, G.data(), N, B.data(), K, N * K, C.data(), K);
        else tandem::cpu::grouped_sgemm_tn(E, off.data(), N, K, G.data(), N, A.data(), K, C.data());
        return C;
      };
      const std::vector<float> C = grouped(2);
      for (int threads : {1, 5})
        ASSERT_EQ(std::memcmp(C.data(), grouped(threads).data(), static_cast<size_t>(out) * 4), 0) << what << " threads " << threads;
      omp_set_num_threads(saved);
      int64_t bad = 0;
      for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = off[e], m = load[e];
        // per group: C_e[i, j] = sum_k op(X)[i, k] op(Y)[k, j], its tolerance as in check()
        const int64_t I = form == 2 ? N : m, J = cols, KK = form == 0 ? K : form == 1 ? N : m;
        std::vector<float> one(static_cast<size_t>(std::max<int64_t>(1, I * J)));
        if (form == 0) tandem::cpu::sgemm(false, true, I, J, KK, 1.0f, A.data() + r0 * K, K, B.data() + e * N * K, K, 0.0f, one.data(), J);
        else if (form == 1) tandem::cpu::sgemm(false, false, I, J, KK, 1.0f, G.data() + r0 * N, N, B.data() + e * N * K, K, 0.0f, one.data(), J);
        else tandem::cpu::sgemm(true, false, I, J, KK, 1.0f, G.data() + r0 * N, N, A.data() + r0 * K, K, 0.0f, one.data(), J);
        const float* got = C.data() + (form == 2 ? e * N * K : r0 * cols);
        ASSERT_EQ(std::memcmp(got, one.data(), static_cast<size_t>(I * J) * 4), 0) << what << ": group " << e << " differs from sgemm";
        for (int64_t i = 0; i < I; ++i)
          for (int64_t j = 0; j < J; ++j) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < KK; ++k) {
              const double x = form == 0 ? A[(r0 + i) * K + k] : form == 1 ? G[(r0 + i) * N + k] : G[(r0 + k) * N + i];
              const double y = form == 0 ? B[e * N * K + j * K + k] : form == 1 ? B[e * N * K + k * K + j] : A[(r0 + k) * K + j];
              s += x * y;
              mag += std::fabs(x * y);
            }
            if (!(std::fabs(got[i * J + j] - s) <= 1e-6 * std::sqrt(static_cast<double>(std::max<int64_t>(1, KK))) * mag + 1e-30) &&
                ++bad <= 5)
              ADD_FAILURE() << what << " group " << e << " at (" << i << "," << j << "): got " << got[i * J + j] << " want " << s;
          }
      }
      EXPECT_EQ(bad, 0) << what;
    }
  }
}

}  // namespace
