// A DeepSeekMoE layer's grouped GEMMs (forward, input gradient, weight gradient of the fused
// gate/up and the down projection) on ds-tiny and ds-small shapes with uneven expert loads:
// tandem's grouped GEMM (gemm.h: all experts as one job), the same experts as a loop of tandem
// sgemm calls spread over the threads (tandem before the grouped GEMM), and a loop of OpenBLAS
// sgemm calls (each call threaded by OpenBLAS: how PyTorch's per-expert loop runs). The machine's
// sgemm ceiling (a 2048^3 GEMM, OpenBLAS and tandem, the faster) is measured in the same run and
// every side is printed as GFLOP/s and % of it; the bf16 grouped GEMM (vdpbf16ps) on the same
// operands rounded to bf16, against the bf16 ceiling (a 2048^3 bgemm) of the same run.
// bench/bench_moe.sh adds PyTorch's per-expert loop.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/tandem_bench_moe [--filter SUBSTR] [--seconds S]
//
// Loads (rows per expert, N tokens x top-k rows in all; an expert gets at most one row per token):
//   uniform: equal; zipf: expert e's share ~ 1 / (e + 1); hot: expert 0 gets every token, the
//   others' rows go to half of the experts, the other half get none.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_bf16.h"
#include "core/dtype.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

struct Model {
  const char* name;
  int64_t tokens, hidden, inter, experts, top_k;
};
const Model kModels[] = {{"ds-tiny", 12 * 64, 128, 96, 8, 2}, {"ds-small", 8 * 256, 512, 256, 32, 4}};

std::vector<int64_t> loads(const Model& m, const std::string& kind) {
  const int64_t E = m.experts, N = m.tokens, rows = N * m.top_k;
  std::vector<double> w(static_cast<size_t>(E), 0.0);
  std::vector<int64_t> n(static_cast<size_t>(E), 0);
  if (kind == "hot") {
    n[0] = N;
    for (int64_t e = 1; e <= E / 2; ++e) w[static_cast<size_t>(e)] = 1.0;
  } else {
    for (int64_t e = 0; e < E; ++e) w[static_cast<size_t>(e)] = kind == "zipf" ? 1.0 / static_cast<double>(e + 1) : 1.0;
  }
  double sum = 0;
  for (double x : w) sum += x;
  int64_t left = rows - n[0];
  const int64_t share = left;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t c = std::min(N - n[static_cast<size_t>(e)], static_cast<int64_t>(std::floor(share * w[static_cast<size_t>(e)] / sum)));
    n[static_cast<size_t>(e)] += c;
    left -= c;
  }
  for (int64_t e = 0; left > 0; e = (e + 1) % E)  // remainders, one row at a time, to experts with room
    if (w[static_cast<size_t>(e)] > 0 && n[static_cast<size_t>(e)] < N) ++n[static_cast<size_t>(e)], --left;
  return n;
}

// One grouped GEMM of the layer: rows x (out, in) per expert, in one of three forms.
struct Gemm {
  const char* what;
  int form;  // 0: y = x W^T (forward), 1: dx = g W (input gradient), 2: dW = g^T x (weight gradient)
  int64_t out, in;
};

}  // namespace

int main(int argc, char** argv) {
  std::string filter;
  double seconds = 0.3;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--filter SUBSTR] [--seconds S]\n", argv[0]);
      return 2;
    }
  }
  const int threads = omp_get_max_threads();
  std::printf("CPU: %s; OpenMP threads: %d\n", cpu_model().c_str(), threads);
  for (const char* v : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS"})
    if (const char* s = std::getenv(v)) std::printf("note: %s=%s is set\n", v, s);

  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto fill = [&](std::vector<float>& v) { for (float& x : v) x = dist(rng); };

  // The ceiling: a 2048^3 GEMM, OpenBLAS and tandem, alternately; the faster median.
  double ceiling = 0, bf16_ceiling = 0;
  {
    const int64_t S = 2048;
    std::vector<float> A(S * S), B(S * S), C(S * S);
    fill(A), fill(B);
    std::vector<double> tb, tt;
    for (int r = 0; r < 7; ++r) {
      double a = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, S, 1.0f, A.data(), S, B.data(), S, 0.0f, C.data(), S);
      double b = now();
      tandem::cpu::sgemm(false, false, S, S, S, 1.0f, A.data(), S, B.data(), S, 0.0f, C.data(), S);
      double c = now();
      if (r) tb.push_back(b - a), tt.push_back(c - b);
    }
    const double flop = 2.0 * S * S * S, gb = flop / median(tb) * 1e-9, gt = flop / median(tt) * 1e-9;
    ceiling = std::max(gb, gt);
    std::vector<uint16_t> A16(S * S), B16(S * S);
    tandem::f32_to_bf16(A.data(), A16.data(), A.size());
    tandem::f32_to_bf16(B.data(), B16.data(), B.size());
    std::vector<double> th;
    for (int r = 0; r < 7; ++r) {
      double a = now();
      tandem::cpu::bgemm(false, false, S, S, S, A16.data(), S, B16.data(), S, C.data(), S);
      if (r) th.push_back(now() - a);
    }
    bf16_ceiling = flop / median(th) * 1e-9;
    std::printf("sgemm ceiling (2048^3): %.1f GFLOP/s (OpenBLAS %.1f, tandem %.1f); bf16 ceiling (tandem bgemm, %s): %.1f GFLOP/s\n",
                ceiling, gb, gt, tandem::cpu::bgemm_native() ? "vdpbf16ps" : "widened to f32", bf16_ceiling);
  }

  std::printf("%-9s %-7s %-11s %-28s | %8s %5s | %8s %5s | %8s %5s | %7s %7s | %8s %5s\n", "model", "load", "gemm",
              "rows per expert (min/max/0s)", "grouped", "%ceil", "loop", "%ceil", "openblas", "%ceil", "vs loop",
              "vs oblas", "bf16 grp", "%bf16");
  double log_loop = 0, log_ob = 0;
  int count = 0;
  for (const Model& m : kModels) {
    const Gemm gemms[] = {{"fwd gateup", 0, 2 * m.inter, m.hidden}, {"fwd down", 0, m.hidden, m.inter},
                          {"dx gateup", 1, 2 * m.inter, m.hidden},  {"dx down", 1, m.hidden, m.inter},
                          {"dw gateup", 2, 2 * m.inter, m.hidden},  {"dw down", 2, m.hidden, m.inter}};
    for (const char* load : {"uniform", "zipf", "hot"}) {
      const std::vector<int64_t> n = loads(m, load);
      const int64_t E = m.experts;
      std::vector<int64_t> off(static_cast<size_t>(E + 1), 0);
      for (int64_t e = 0; e < E; ++e) off[static_cast<size_t>(e + 1)] = off[static_cast<size_t>(e)] + n[static_cast<size_t>(e)];
      const int64_t rows = off.back();
      const int64_t lo = *std::min_element(n.begin(), n.end()), hi = *std::max_element(n.begin(), n.end());
      const int64_t zeros = std::count(n.begin(), n.end(), 0);
      for (const Gemm& g : gemms) {
        const std::string label = std::string(m.name) + " " + load + " " + g.what;
        if (!filter.empty() && label.find(filter) == std::string::npos) continue;
        const int64_t O = g.out, I = g.in;
        // form 0: X [rows, I] W [E, O, I] -> Y [rows, O]; 1: G [rows, O] W -> DX [rows, I];
        // 2: G [rows, O], X [rows, I] -> DW [E, O, I]
        std::vector<float> W(static_cast<size_t>(E * O * I)), X(static_cast<size_t>(rows * std::max(O, I)));
        std::vector<float> Y1(static_cast<size_t>(std::max(rows * std::max(O, I), E * O * I))), Y2(Y1.size()), Y3(Y1.size());
        std::vector<float> G(static_cast<size_t>(rows * O));
        fill(W), fill(X), fill(G);
        std::vector<uint16_t> W16(W.size()), X16(X.size()), G16(G.size());
        tandem::f32_to_bf16(W.data(), W16.data(), W.size());
        tandem::f32_to_bf16(X.data(), X16.data(), X.size());
        tandem::f32_to_bf16(G.data(), G16.data(), G.size());
        auto grouped_bf16 = [&] {
          if (g.form == 0) tandem::cpu::grouped_bgemm(true, E, off.data(), O, I, X16.data(), I, W16.data(), I, O * I, Y3.data(), O);
          else if (g.form == 1) tandem::cpu::grouped_bgemm(false, E, off.data(), I, O, G16.data(), O, W16.data(), I, O * I, Y3.data(), I);
          else tandem::cpu::grouped_bgemm_tn(E, off.data(), O, I, G16.data(), O, X16.data(), I, Y3.data());
        };
        auto grouped = [&] {
          if (g.form == 0) tandem::cpu::grouped_sgemm(true, E, off.data(), O, I, X.data(), I, W.data(), I, O * I, Y1.data(), O);
          else if (g.form == 1) tandem::cpu::grouped_sgemm(false, E, off.data(), I, O, G.data(), O, W.data(), I, O * I, Y1.data(), I);
          else tandem::cpu::grouped_sgemm_tn(E, off.data(), O, I, G.data(), O, X.data(), I, Y1.data());
        };
        auto one = [&](int64_t e, float* Y, auto&& f) {  // expert e's GEMM through f (cblas-style arguments)
          const int64_t r0 = off[static_cast<size_t>(e)], r = n[static_cast<size_t>(e)];
          if (g.form == 0) f(false, true, r, O, I, X.data() + r0 * I, I, W.data() + e * O * I, I, Y + r0 * O, O);
          else if (g.form == 1) f(false, false, r, I, O, G.data() + r0 * O, O, W.data() + e * O * I, I, Y + r0 * I, I);
          else f(true, false, O, I, r, G.data() + r0 * O, O, X.data() + r0 * I, I, Y + e * O * I, I);
        };
        auto loop = [&] {
#pragma omp parallel for schedule(dynamic)
          for (int64_t e = 0; e < E; ++e)
            one(e, Y2.data(), [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                      int64_t ldb, float* C, int64_t ldc) { tandem::cpu::sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc); });
        };
        auto openblas = [&] {
          for (int64_t e = 0; e < E; ++e)
            one(e, Y3.data(), [&](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float* C, int64_t ldc) {
              if (M == 0 || N == 0) return;
              if (K == 0) {  // an expert without rows: its weight gradient is zero
                std::fill(C, C + M * ldc, 0.0f);
                return;
              }
              cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(M),
                          static_cast<int>(N), static_cast<int>(K), 1.0f, A, static_cast<int>(lda), B, static_cast<int>(ldb),
                          0.0f, C, static_cast<int>(ldc));
            });
        };
        double t0 = now();
        for (int w = 0; w < 2; ++w) grouped(), loop(), openblas(), grouped_bf16();
        const double per = (now() - t0) / 2;
        const int reps = std::clamp(static_cast<int>(3 * seconds / per), 5, 500);
        std::vector<double> tg, tl, tb, th;
        for (int r = 0; r < reps; ++r) {
          double a = now();
          grouped();
          double b = now();
          loop();
          double c = now();
          openblas();
          double d = now();
          grouped_bf16();
          double f = now();
          tg.push_back(b - a), tl.push_back(c - b), tb.push_back(d - c), th.push_back(f - d);
        }
        // the grouped result against the loop of tandem sgemm calls: the same arithmetic per element
        const size_t used = static_cast<size_t>(g.form == 2 ? E * O * I : rows * (g.form == 0 ? O : I));
        if (std::memcmp(Y1.data(), Y2.data(), used * 4) != 0) {
          std::fprintf(stderr, "bench_moe: %s: grouped GEMM differs from the per-expert sgemm loop\n", label.c_str());
          return 1;
        }
        const double flop = 2.0 * static_cast<double>(rows) * static_cast<double>(O * I);
        const double gg = flop / median(tg) * 1e-9, gl = flop / median(tl) * 1e-9, gb = flop / median(tb) * 1e-9,
                     gh = flop / median(th) * 1e-9;
        char loadtxt[64];
        std::snprintf(loadtxt, sizeof loadtxt, "%ldx(%ld..%ld) %ld empty", static_cast<long>(E), static_cast<long>(lo),
                      static_cast<long>(hi), static_cast<long>(zeros));
        std::printf("%-9s %-7s %-11s %-28s | %8.1f %4.0f%% | %8.1f %4.0f%% | %8.1f %4.0f%% | %6.2fx %6.2fx | %8.1f %4.0f%%\n",
                    m.name, load, g.what, loadtxt, gg, 100 * gg / ceiling, gl, 100 * gl / ceiling, gb, 100 * gb / ceiling,
                    gg / gl, gg / gb, gh, 100 * gh / bf16_ceiling);
        std::fflush(stdout);
        log_loop += std::log(gg / gl), log_ob += std::log(gg / gb);
        ++count;
      }
    }
  }
  if (count)
    std::printf("geometric mean over %d GEMMs: grouped %.2fx the tandem per-expert loop, %.2fx the OpenBLAS loop\n", count,
                std::exp(log_loop / count), std::exp(log_ob / count));
  return 0;
}
