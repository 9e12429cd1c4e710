// OpenBLAS cblas_sgemm vs tandem::cpu::sgemm, side by side in one process, on tandem's GEMM shapes,
// and tandem's bf16 GEMM (tandem::cpu::bgemm: vdpbf16ps where the CPU has AVX512_BF16) on the same
// operands rounded to bf16: its GFLOP/s and its speed over tandem's f32 (the "peak square" row is
// the machine's bf16 ceiling, beside the sgemm one).
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/tandem_bench_gemm [--filter SUBSTR] [--seconds S]
//
// For each shape: both sides warmed up, then timed alternately (OpenBLAS, tandem, OpenBLAS, ...) so
// that background noise hits both alike; the median of each side is reported, with GFLOP/s
// (2 M N K / time), the speed-up tandem over OpenBLAS (OpenBLAS time / tandem time) and the largest
// difference between the two results relative to the largest |C|.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_bf16.h"
#include "core/dtype.h"

extern "C" {
char* openblas_get_config(void);
char* openblas_get_corename(void);
}

namespace {

struct Shape {
  const char* what;
  bool ta, tb;
  int64_t M, N, K;
};

const Shape kShapes[] = {
    // baby GPT (768 rows = batch 12 x 64), width 128
    {"baby qkv/fc fwd", false, false, 768, 384, 128},
    {"baby mlp up fwd", false, false, 768, 512, 128},
    {"baby proj fwd", false, false, 768, 128, 128},
    {"baby mlp down fwd", false, false, 768, 128, 512},
    {"baby dX qkv", false, true, 768, 128, 384},
    {"baby dX mlp up", false, true, 768, 128, 512},
    {"baby dW qkv", true, false, 128, 384, 768},
    {"baby dW mlp up", true, false, 128, 512, 768},
    {"baby dW mlp down", true, false, 512, 128, 768},
    {"baby dW proj", true, false, 128, 128, 768},
    {"baby lm head fwd", false, true, 768, 65, 128},
    {"baby lm head dX", false, false, 768, 128, 65},
    {"baby lm head dW", true, false, 65, 128, 768},
    // GPT-2 124M, 256 rows (batch 4 x 64), width 768, vocab 50257
    {"gpt2 qkv fwd", false, false, 256, 2304, 768},
    {"gpt2 proj fwd", false, false, 256, 768, 768},
    {"gpt2 mlp up fwd", false, false, 256, 3072, 768},
    {"gpt2 mlp down fwd", false, false, 256, 768, 3072},
    {"gpt2 dX qkv", false, true, 256, 768, 2304},
    {"gpt2 dW qkv", true, false, 768, 2304, 256},
    {"gpt2 lm head fwd", false, true, 256, 50257, 768},
    {"gpt2 lm head dW", true, false, 50257, 768, 256},
    {"gpt2 lm head dX", false, false, 256, 768, 50257},
    // A large square GEMM: the machine's sgemm ceiling (bench_train.sh reads it as its roofline)
    {"peak square", false, false, 2048, 2048, 2048},
};

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string filter;
  double seconds = 0.4;  // target timed seconds per side per shape
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) {
      filter = argv[++i];
    } else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--filter SUBSTR] [--seconds S]\n", argv[0]);
      return 2;
    }
  }
  std::printf("OpenBLAS: %s (core %s); OpenMP threads: %d\n", openblas_get_config(), openblas_get_corename(),
              omp_get_max_threads());
  for (const char* v : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"})
    if (const char* s = std::getenv(v)) std::printf("note: %s=%s is set\n", v, s);
  std::printf("bf16 GEMM: %s\n", tandem::cpu::bgemm_native() ? "vdpbf16ps (AVX512_BF16)" : "widened to f32 (no AVX512_BF16)");
  std::printf("%-18s %-2s %17s | %9s %7s | %9s %7s | %7s %9s | %9s %7s %8s\n", "shape", "op", "M x N x K", "openblas",
              "GFLOP/s", "tandem", "GFLOP/s", "speedup", "max-diff", "bf16", "GFLOP/s", "bf16/f32");

  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  double log_sum = 0.0;
  int count = 0;
  for (const Shape& s : kShapes) {
    const std::string label = s.what;
    if (!filter.empty() && label.find(filter) == std::string::npos) continue;
    const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N, ldc = s.N;
    std::vector<float> A(static_cast<size_t>(s.M * s.K)), B(static_cast<size_t>(s.K * s.N));
    std::vector<float> C_ob(static_cast<size_t>(s.M * s.N)), C_td(static_cast<size_t>(s.M * s.N));
    for (float& x : A) x = dist(rng);
    for (float& x : B) x = dist(rng);
    std::vector<uint16_t> A16(A.size()), B16(B.size());
    tandem::f32_to_bf16(A.data(), A16.data(), A.size());
    tandem::f32_to_bf16(B.data(), B16.data(), B.size());
    std::vector<float> C_bf(static_cast<size_t>(s.M * s.N));
    auto run_bf = [&] { tandem::cpu::bgemm(s.ta, s.tb, s.M, s.N, s.K, A16.data(), lda, B16.data(), ldb, C_bf.data(), ldc); };
    auto run_ob = [&] {
      cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
                  static_cast<int>(s.M), static_cast<int>(s.N), static_cast<int>(s.K), 1.0f, A.data(),
                  static_cast<int>(lda), B.data(), static_cast<int>(ldb), 0.0f, C_ob.data(), static_cast<int>(ldc));
    };
    auto run_td = [&] {
      tandem::cpu::sgemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C_td.data(), ldc);
    };
    // warm-up (also sizes the repetition count)
    double t0 = now();
    for (int w = 0; w < 2; ++w) {
      run_ob();
      run_td();
      run_bf();
    }
    const double per_pair = (now() - t0) / 2;
    const int reps = std::clamp(static_cast<int>(2 * seconds / per_pair), 5, 400);
    std::vector<double> t_ob, t_td, t_bf;
    for (int r = 0; r < reps; ++r) {
      double a = now();
      run_ob();
      double b = now();
      run_td();
      double c = now();
      run_bf();
      double d = now();
      t_ob.push_back(b - a);
      t_td.push_back(c - b);
      t_bf.push_back(d - c);
    }
    double maxc = 0.0, maxd = 0.0;
    for (size_t i = 0; i < C_ob.size(); ++i) {
      maxc = std::max(maxc, static_cast<double>(std::fabs(C_ob[i])));
      maxd = std::max(maxd, static_cast<double>(std::fabs(C_ob[i] - C_td[i])));
    }
    const double m_ob = median(t_ob), m_td = median(t_td), m_bf = median(t_bf), flop = 2.0 * s.M * s.N * s.K;
    char dims[32];
    std::snprintf(dims, sizeof dims, "%ldx%ldx%ld", static_cast<long>(s.M), static_cast<long>(s.N),
                  static_cast<long>(s.K));
    std::printf("%-18s %c%c %17s | %7.3fms %7.1f | %7.3fms %7.1f | %6.2fx %9.1e | %7.3fms %7.1f %7.2fx\n", s.what,
                s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', dims, m_ob * 1e3, flop / m_ob * 1e-9, m_td * 1e3, flop / m_td * 1e-9,
                m_ob / m_td, maxc > 0 ? maxd / maxc : maxd, m_bf * 1e3, flop / m_bf * 1e-9, m_td / m_bf);
    std::fflush(stdout);
    log_sum += std::log(m_ob / m_td);
    ++count;
  }
  if (count) std::printf("geometric-mean speedup (tandem over OpenBLAS): %.2fx over %d shapes\n", std::exp(log_sum / count), count);
  return 0;
}
