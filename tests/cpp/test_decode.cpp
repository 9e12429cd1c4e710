// Decoding's fast paths.
//
// tandem::cpu::skinny_gemm (the decode-time matmul, src/backends/cpu/gemv.h) against a float64
// reference loop: both layouts of B, M = 1..8, N and K around the 16-lane and 4-row edges, leading
// dimensions padded with NaN (reading past an operand's extent poisons the result), C NaN-filled
// (it must be overwritten, never read), shapes large enough to take the threaded path. Then the
// contract the server's determinism rests on: every row of C is bit-identical whether it is
// computed alone (M = 1) or among other rows, with 1 or 2 threads, inside or outside a parallel
// region.
//
// Tolerance, as tests/cpp/test_gemm.cpp: |C - C64| <= 1e-6 * sqrt(K) * sum_k |a_mk b_kn| + 1e-30.
//
// skinny_gemm_q8_0 (the same kernel reading q8_0 weights): against the float64 reference on the
// dequantized weights, and bit-identical to skinny_gemm on them (dequantization is exact).
//
// sample_token (models/generator.h), which orders only the top_k candidates (a partial sort),
// against the full stable sort it replaced: the same token for the same logits, options and
// generator state, ties included.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/gemv.h"
#include "core/dtype.h"
#include "models/generator.h"

namespace {

struct Problem {
  bool tb;
  int64_t M, N, K, lda, ldb, ldc;
  std::vector<float> A, B;
};

Problem make(bool tb, int64_t M, int64_t N, int64_t K, int64_t pad, uint32_t seed) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Problem p{tb, M, N, K, K + pad, (tb ? K : N) + pad, N + pad, {}, {}};
  const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
  p.A.assign(static_cast<size_t>(M * p.lda), nan);
  p.B.assign(static_cast<size_t>(b_rows * p.ldb), nan);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) p.A[static_cast<size_t>(i * p.lda + k)] = d(rng);
  for (int64_t i = 0; i < b_rows; ++i)
    for (int64_t j = 0; j < b_cols; ++j) p.B[static_cast<size_t>(i * p.ldb + j)] = d(rng);
  return p;
}

// Rows [m0, m0 + rows) of C, computed by one call; C's padding and unwritten parts stay NaN.
std::vector<float> run(const Problem& p, int64_t m0, int64_t rows) {
  std::vector<float> C(static_cast<size_t>(rows * p.ldc), std::numeric_limits<float>::quiet_NaN());
  tandem::cpu::skinny_gemm(p.tb, rows, p.N, p.K, p.A.data() + m0 * p.lda, p.lda, p.B.data(), p.ldb, C.data(), p.ldc);
  return C;
}

// Bit-for-bit equality (NaN padding included).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_against_reference(const Problem& p, const std::vector<float>& C) {
  const std::string what = std::string("tb=") + (p.tb ? "1" : "0") + " M=" + std::to_string(p.M) +
                           " N=" + std::to_string(p.N) + " K=" + std::to_string(p.K);
  const double tol = 1e-6 * std::sqrt(static_cast<double>(p.K));
  int64_t bad = 0;
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t n = 0; n < p.N; ++n) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double a = p.A[static_cast<size_t>(m * p.lda + k)];
        const double b = p.tb ? p.B[static_cast<size_t>(n * p.ldb + k)] : p.B[static_cast<size_t>(k * p.ldb + n)];
        s += a * b;
        mag += std::fabs(a * b);
      }
      const double got = C[static_cast<size_t>(m * p.ldc + n)];
      if (!(std::fabs(got - s) <= tol * mag + 1e-30) && bad++ < 5)
        ADD_FAILURE() << what << ": C[" << m << "," << n << "] = " << got << ", float64 reference " << s;
    }
  EXPECT_EQ(bad, 0) << what;
  for (int64_t m = 0; m < p.M; ++m)  // padding columns are never written
    for (int64_t n = p.N; n < p.ldc; ++n) EXPECT_TRUE(std::isnan(C[static_cast<size_t>(m * p.ldc + n)])) << what;
}

TEST(SkinnyGemm, MatchesFloat64ReferenceOnEdgeShapes) {
  uint32_t seed = 1;
  for (bool tb : {false, true})
    for (int64_t M : {1, 2, 3, 5, 8})
      for (int64_t N : {1, 3, 4, 15, 16, 17, 33, 130})
        for (int64_t K : {1, 3, 4, 5, 15, 16, 17, 67}) {
          const Problem p = make(tb, M, N, K, (N + K) % 3, seed++);
          check_against_reference(p, run(p, 0, M));
        }
}

TEST(SkinnyGemm, MatchesFloat64ReferenceOnDecodeShapes) {
  // GPT-2 124M's decode matmuls (QKV, MLP in, MLP out) and an odd lm_head-like one: threaded.
  // K <= 64 (one piece of rows: no partial sums, written straight into C) and K = 100 (a whole
  // piece and a partial one ending in single-row passes), threaded too.
  struct S { bool tb; int64_t M, N, K; };
  for (const S& s : {S{false, 1, 2304, 768}, S{false, 3, 3072, 768}, S{false, 8, 768, 3072}, S{true, 1, 5003, 768},
                     S{true, 8, 1001, 771}, S{false, 2, 1500, 40}, S{false, 1, 4000, 61}, S{false, 5, 777, 100}}) {
    const Problem p = make(s.tb, s.M, s.N, s.K, 0, 42);
    check_against_reference(p, run(p, 0, s.M));
  }
}

TEST(SkinnyGemm, EachRowIsTheSameBitsAloneInABatchWithAnyThreadCount) {
  const int saved = omp_get_max_threads();
  for (bool tb : {false, true}) {
    const Problem p = make(tb, 8, tb ? 2049 : 3073, 771, 1, 7);
    const std::vector<float> all = run(p, 0, 8);
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_TRUE(same_bits(run(p, 0, 8), all)) << "tb=" << tb << " threads=" << threads;
      for (int64_t m = 0; m < 8; ++m) {
        const std::vector<float> one = run(p, m, 1);
        const std::vector<float> want(all.begin() + m * p.ldc, all.begin() + (m + 1) * p.ldc);
        EXPECT_TRUE(same_bits(one, want)) << "tb=" << tb << " row " << m << " alone, threads=" << threads;
      }
      const std::vector<float> three = run(p, 2, 3);
      EXPECT_TRUE(same_bits(three, std::vector<float>(all.begin() + 2 * p.ldc, all.begin() + 5 * p.ldc))) << "tb=" << tb;
    }
    omp_set_num_threads(saved);
    std::vector<float> inside;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      inside = run(p, 0, 8);
    }
    EXPECT_TRUE(same_bits(inside, all)) << "tb=" << tb << " inside a parallel region";
  }
  omp_set_num_threads(saved);
}

TEST(SkinnyGemmQ8_0, MatchesFloat64AndIsTheF32KernelOnDequantizedWeights) {
  struct S { bool tb; int64_t M, N, K; };
  // decode shapes (GPT-2's Conv1D layout and a tied lm_head), odd K / N where the layout allows
  // (q8_0 needs whole 32-value blocks along B's rows only), one piece and several.
  for (const S& s : {S{false, 1, 2304, 768}, S{false, 8, 768, 3072}, S{false, 3, 96, 61}, S{false, 1, 32, 1},
                     S{true, 1, 5003, 768}, S{true, 5, 17, 96}, S{true, 8, 1001, 32}}) {
    Problem p = make(s.tb, s.M, s.N, s.K, 0, 11);
    // B as q8_0 bytes, and p.B replaced by its exact dequantization (the reference's operand).
    std::vector<uint8_t> q(tandem::storage_bytes(tandem::DType::q8_0, static_cast<int64_t>(p.B.size())));
    tandem::quantize_q8_0(p.B.data(), q.data(), static_cast<int64_t>(p.B.size()));
    tandem::dequantize_q8_0(q.data(), p.B.data(), static_cast<int64_t>(p.B.size()));
    const std::vector<float> f32 = run(p, 0, s.M);
    check_against_reference(p, f32);
    for (int threads : {1, 2}) {
      const int saved = omp_get_max_threads();
      omp_set_num_threads(threads);
      std::vector<float> C(static_cast<size_t>(s.M * p.ldc), std::numeric_limits<float>::quiet_NaN());
      tandem::cpu::skinny_gemm_q8_0(s.tb, s.M, s.N, s.K, p.A.data(), p.lda, q.data(), p.ldb, C.data(), p.ldc);
      omp_set_num_threads(saved);
      EXPECT_TRUE(same_bits(C, f32)) << "tb=" << s.tb << " M=" << s.M << " N=" << s.N << " K=" << s.K
                                     << " threads=" << threads;
    }
  }
}

// sample_token as it was before the partial sort: every id stably sorted by logit, descending.
int32_t sample_token_full_sort(std::span<const float> logits, const tandem::SamplingOptions& o, std::mt19937_64& rng) {
  const auto V = static_cast<int32_t>(logits.size());
  if (o.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = idx.size();
  if (o.top_k > 0) keep = std::min(keep, static_cast<size_t>(o.top_k));
  std::vector<double> p(keep);
  const double mx = logits[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (p[i] = std::exp((logits[idx[i]] - mx) / o.temperature));
  for (auto& v : p) v /= sum;
  if (o.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep && (n == 0 || cum < o.top_p)) cum += p[n++];
    keep = n;
    p.resize(keep);
  }
  double r = std::uniform_real_distribution<double>(0.0, std::accumulate(p.begin(), p.end(), 0.0))(rng);
  for (size_t i = 0; i < keep; ++i) {
    if (r < p[i]) return idx[i];
    r -= p[i];
  }
  return idx[keep - 1];
}

TEST(SampleToken, PartialSortPicksWhatTheFullSortPicked) {
  std::mt19937 gen(11);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t V = trial % 25 == 0 ? 50257 : 1 + static_cast<int64_t>(gen() % 300);
    std::vector<float> logits(static_cast<size_t>(V));
    // Coarse values (many exact ties) or fine ones.
    const bool coarse = trial % 2 == 0;
    std::normal_distribution<float> d(0.0f, 2.0f);
    for (auto& x : logits) x = coarse ? std::round(d(gen)) : d(gen);
    tandem::SamplingOptions o;
    o.temperature = std::vector<float>{0.0f, 0.3f, 1.0f, 1.7f}[static_cast<size_t>(trial % 4)];
    o.top_k = std::vector<int>{0, 1, 5, 50, 100000}[static_cast<size_t>(trial % 5)];
    o.top_p = std::vector<float>{1.0f, 0.9f, 0.5f}[static_cast<size_t>(trial % 3)];
    const uint64_t seed = gen();
    std::mt19937_64 r1(seed), r2(seed);
    for (int draw = 0; draw < 3; ++draw)
      ASSERT_EQ(tandem::sample_token(logits, o, r1), sample_token_full_sort(logits, o, r2))
          << "trial " << trial << " V=" << V << " temperature=" << o.temperature << " top_k=" << o.top_k
          << " top_p=" << o.top_p << " draw " << draw;
  }
}

}  // namespace
