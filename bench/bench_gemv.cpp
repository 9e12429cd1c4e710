// One decode step's matmuls of GPT-2 124M (12 x {QKV 768x2304, attention projection 768x768, MLP
// 768x3072 and 3072x768} + the tied lm_head 50257x768, 0.49 GB of f32 weights: far more than the
// caches), computed for M rows by OpenBLAS cblas_sgemm and by tandem::cpu::skinny_gemm, timed
// alternately (so background load hits both alike), with a third side that only reads the same
// weights (a vectorised sum, all threads): the memory-read ceiling of a decode step, measured in
// the same run. Prints the median and best time per step of each and the weight bytes streamed per
// second. Built and run by bench/bench_gemv.sh.
//
//   bench_gemv [M] [steps]      M rows (default 1), steps timed per side (default 15)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backends/cpu/gemv.h"

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? std::atoll(argv[1]) : 1;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 15;
  if (M < 1 || M > tandem::cpu::kSkinnyMaxRows || steps < 1) {
    std::fprintf(stderr, "usage: bench_gemv [M in 1..%lld] [steps]\n", static_cast<long long>(tandem::cpu::kSkinnyMaxRows));
    return 2;
  }
  const int64_t C = 768, V = 50257, L = 12;
  struct Weight { int64_t rows, cols; bool lm_head; std::vector<float> w; };
  std::vector<Weight> ws;
  auto add = [&](int64_t rows, int64_t cols, bool lm_head) {
    ws.push_back({rows, cols, lm_head, std::vector<float>(static_cast<size_t>(rows * cols))});
    for (size_t i = 0; i < ws.back().w.size(); ++i) ws.back().w[i] = static_cast<float>(i % 13) * 0.01f - 0.06f;
  };
  for (int64_t l = 0; l < L; ++l) {
    add(C, 3 * C, false);
    add(C, C, false);
    add(C, 4 * C, false);
    add(4 * C, C, false);
  }
  add(V, C, true);  // stored [V, C]: logits = x . W^T
  double bytes = 0;
  for (const auto& w : ws) bytes += static_cast<double>(w.w.size()) * sizeof(float);
  std::vector<float> x(static_cast<size_t>(M * 4 * C), 0.5f), y(static_cast<size_t>(M * V));
  auto step = [&](bool skinny) {
    for (const auto& w : ws) {
      // Conv1D: [M, rows] . [rows, cols]; lm_head: [M, cols] . [rows, cols]^T.
      const int64_t K = w.lm_head ? w.cols : w.rows, N = w.lm_head ? w.rows : w.cols;
      if (skinny)
        tandem::cpu::skinny_gemm(w.lm_head, M, N, K, x.data(), K, w.w.data(), w.cols, y.data(), N);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, w.lm_head ? CblasTrans : CblasNoTrans, static_cast<int>(M),
                    static_cast<int>(N), static_cast<int>(K), 1.0f, x.data(), static_cast<int>(K), w.w.data(),
                    static_cast<int>(w.cols), 0.0f, y.data(), static_cast<int>(N));
    }
  };
  volatile float sink = 0;
  auto read = [&] {  // every weight once, nothing computed with it: the bandwidth bound
    float total = 0;
    for (const auto& w : ws) {
      const float* p = w.w.data();
      const int64_t n = static_cast<int64_t>(w.w.size());
      float s = 0;
#pragma omp parallel for simd reduction(+ : s) schedule(static)
      for (int64_t i = 0; i < n; ++i) s += p[i];
      total += s;
    }
    sink = total;
  };
  step(false);
  step(true);
  read();
  std::vector<double> t[3];
  for (int i = 0; i < steps; ++i)
    for (int s = 0; s < 3; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      if (s == 2) read();
      else step(s == 1);
      t[s].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  std::printf("one GPT-2 124M decode step, M = %lld, %.0f MB of f32 weights, %d steps per side\n",
              static_cast<long long>(M), bytes / 1e6, steps);
  const char* names[] = {"OpenBLAS sgemm", "skinny_gemm", "read only"};
  double med[3];
  for (int s = 0; s < 3; ++s) {
    std::sort(t[s].begin(), t[s].end());
    med[s] = t[s][t[s].size() / 2];
    std::printf("  %-15s median %7.2f ms (%5.1f GB/s), best %7.2f ms (%5.1f GB/s)\n", names[s], med[s] * 1e3,
                bytes / med[s] / 1e9, t[s][0] * 1e3, bytes / t[s][0] / 1e9);
  }
  std::printf("  speed-up (median): %.2fx; skinny_gemm at %.0f%% of the read-only rate\n", med[0] / med[1],
              100.0 * med[2] / med[1]);
}
