#include "qualify/optimizer_conform.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>

#include "core/error.h"
#include "qualify/compare.h"
#include "qualify/tolerance.h"

namespace tandem::qualify {

namespace {

constexpr size_t kGuard = 64;
constexpr unsigned char kSentinel = 0xCD;

const int64_t kSizes[] = {1, 33, 4099, 70001};
const double kMagnitudes[] = {1.0, 100.0, 1e-3};

std::string magnitude_tag(double m) { return m == 1.0 ? "" : m == 100.0 ? "@x100" : "@x1e-3"; }

// An f32 vector at byte offset kGuard of a buffer with kGuard sentinel bytes on either side.
class Guarded {
 public:
  Guarded(Backend& be, const std::vector<float>& values) : n_(values.size()) {
    t.shape = {static_cast<int64_t>(n_)};
    t.strides = contiguous_strides(t.shape);
    t.dtype = DType::f32;
    t.offset = kGuard;
    t.storage = std::make_shared<Storage>(&be, 4 * n_ + 2 * kGuard);
    std::vector<unsigned char> buf(t.storage->bytes, kSentinel);
    std::memcpy(buf.data() + kGuard, values.data(), 4 * n_);
    be.upload(t.storage->handle, 0, buf.data(), buf.size());
  }
  // The values, or an error naming the first byte written outside them.
  std::vector<float> read(Backend& be, const std::string& what) const {
    std::vector<unsigned char> buf(t.storage->bytes);
    be.sync();
    be.download(buf.data(), t.storage->handle, 0, buf.size());
    for (size_t i = 0; i < buf.size(); ++i)
      if ((i < kGuard || i >= kGuard + 4 * n_) && buf[i] != kSentinel)
        throw Error(what + ": wrote outside its tensor (byte " +
                    std::to_string(static_cast<long>(i) - static_cast<long>(kGuard)) + " of " + std::to_string(4 * n_) + ")");
    std::vector<float> v(n_);
    std::memcpy(v.data(), buf.data() + kGuard, 4 * n_);
    return v;
  }
  Tensor t;

 private:
  size_t n_;
};

std::vector<float> normal(std::mt19937& rng, int64_t n, double scale) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(d(rng));
  return v;
}

ConformRow make_row(const std::string& op, const std::string& case_name, const std::string& node) {
  const Tolerance tol = optimizer_tolerance(op, DType::f32);
  ConformRow row;
  row.op = op;
  row.dtype = "f32";
  row.case_name = case_name;
  row.node = node;
  row.metric = "nmse";
  row.tolerance = tol.nmse;
  row.max_rel_tolerance = tol.max_rel;
  row.klass = tol.klass;
  row.detail = tol.klass;
  return row;
}

// Runs `body`, which fills the rows named in `nodes`; an exception fails all of them.
void run_case(std::vector<ConformRow>& out, const std::string& op, const std::string& case_name,
              const std::vector<std::string>& nodes, const std::function<void(std::vector<ConformRow>&)>& body) {
  std::vector<ConformRow> rows;
  for (const auto& n : nodes) rows.push_back(make_row(op, case_name, n));
  try {
    body(rows);
  } catch (const std::exception& e) {
    for (auto& r : rows) {
      r.status = Status::fail;
      r.error = r.max_rel = INFINITY;
      r.detail = e.what();
    }
  }
  out.insert(out.end(), rows.begin(), rows.end());
}

struct AdamWCase {
  const char* name;
  int64_t step;
  float beta2, weight_decay, grad_scale;
  bool fresh;  // zero moments (a first step) or moments carried over
};

void adamw_rows(Backend& be, std::vector<ConformRow>& out) {
  // beta2: PyTorch's default 0.999, baby-gpt's 0.99, gpt2-124m's 0.95. At step 1 with beta2 = 0.99
  // the two bias corrections cancel ((1 - 0.9) / sqrt(1 - 0.99) = 1), so that case uses 0.999.
  const AdamWCase cases[] = {{"adamw_step1", 1, 0.999f, 0.1f, 1.0f, true},
                             {"adamw_step7_clipped", 7, 0.99f, 0.1f, 0.37f, false},
                             {"adamw_step1000_nodecay", 1000, 0.95f, 0.0f, 1.0f, false}};
  for (const AdamWCase& c : cases)
    for (double mag : kMagnitudes)
      for (int64_t n : kSizes) {
        const std::string name = std::string(c.name) + "_n" + std::to_string(n) + magnitude_tag(mag);
        run_case(out, "adamw", name, {"param", "update", "exp_avg", "exp_avg_sq"}, [&](std::vector<ConformRow>& rows) {
          std::mt19937 rng(static_cast<unsigned>(n * 7 + c.step));
          const std::vector<float> p0 = normal(rng, n, 1.0), g = normal(rng, n, mag);
          std::vector<float> m0(static_cast<size_t>(n), 0.0f), v0(m0);
          if (!c.fresh) {
            m0 = normal(rng, n, 0.3 * mag);
            const std::vector<float> r = normal(rng, n, mag);
            for (size_t i = 0; i < v0.size(); ++i) v0[i] = static_cast<float>(0.5 * double(r[i]) * r[i] + 0.1 * mag * mag);
          }
          const AdamWStep s{0.05f, 0.9f, c.beta2, 1e-8f, c.weight_decay, c.step, c.grad_scale};
          Guarded P(be, p0), G(be, g), M(be, m0), V(be, v0);
          be.adamw(P.t, G.t, M.t, V.t, s);
          const auto p1 = P.read(be, "adamw param"), m1 = M.read(be, "adamw exp_avg"), v1 = V.read(be, "adamw exp_avg_sq");
          (void)G.read(be, "adamw grad");
          // The float64 reference on the same f32 inputs and hyperparameters (PyTorch's AdamW).
          const double b1 = s.beta1, b2 = s.beta2, lr = s.lr, eps = s.eps, wd = s.weight_decay, gs = s.grad_scale;
          const double bc1 = 1 - std::pow(b1, double(s.step)), bc2 = 1 - std::pow(b2, double(s.step));
          std::vector<double> wp(p0.size()), wu(p0.size()), wm(p0.size()), wv(p0.size()), gu(p0.size());
          for (size_t i = 0; i < p0.size(); ++i) {
            const double gi = double(g[i]) * gs;
            wm[i] = double(m0[i]) + (1 - b1) * (gi - double(m0[i]));
            wv[i] = double(v0[i]) * b2 + (1 - b2) * gi * gi;
            const double denom = std::sqrt(wv[i]) / std::sqrt(bc2) + eps;
            wp[i] = double(p0[i]) * (1 - lr * wd) - lr / bc1 * (wm[i] / denom);
            wu[i] = wp[i] - double(p0[i]);
            gu[i] = double(p1[i]) - double(p0[i]);
          }
          judge(rows[0], compare(p1, wp));
          judge(rows[1], compare(gu, wu));
          judge(rows[2], compare(m1, wm));
          judge(rows[3], compare(v1, wv));
        });
      }
}

void sum_squares_rows(Backend& be, std::vector<ConformRow>& out) {
  for (double mag : kMagnitudes)
    for (int64_t n : kSizes) {
      const std::string name = "sum_squares_n" + std::to_string(n) + magnitude_tag(mag);
      run_case(out, "sum_squares", name, {"out"}, [&](std::vector<ConformRow>& rows) {
        std::mt19937 rng(static_cast<unsigned>(n * 13 + 5));
        const std::vector<float> x = normal(rng, n, mag);
        Guarded X(be, x);
        const double got = be.sum_squares(X.t);
        (void)X.read(be, "sum_squares input");
        double want = 0;
        for (float v : x) want += double(v) * v;
        const std::vector<double> g{got}, w{want};
        judge(rows[0], compare(g, w));
      });
    }
}

void axpy_rows(Backend& be, std::vector<ConformRow>& out) {
  for (float alpha : {1.0f, -0.37f})
    for (double mag : kMagnitudes)
      for (int64_t n : kSizes) {
        // One element of y + alpha x can cancel to near zero: its rounding (2^-24 of |alpha x|, two
        // roundings without FMA) is then large against the tensor's max; 33 elements and up are not.
        if (n == 1) continue;
        const std::string name =
            std::string(alpha == 1.0f ? "axpy_accumulate" : "axpy_alpha") + "_n" + std::to_string(n) + magnitude_tag(mag);
        run_case(out, "axpy", name, {"y"}, [&](std::vector<ConformRow>& rows) {
          std::mt19937 rng(static_cast<unsigned>(n * 17 + 3));
          const std::vector<float> y0 = normal(rng, n, mag), x = normal(rng, n, mag);
          Guarded Y(be, y0), X(be, x);
          be.axpy(Y.t, alpha, X.t);
          const auto y1 = Y.read(be, "axpy y");
          (void)X.read(be, "axpy x");
          std::vector<double> want(y0.size());
          for (size_t i = 0; i < want.size(); ++i) want[i] = double(y0[i]) + double(alpha) * double(x[i]);
          judge(rows[0], compare(y1, want));
        });
      }
}

}  // namespace

bool is_optimizer_kernel(const std::string& name) { return name == "adamw" || name == "sum_squares" || name == "axpy"; }

std::vector<ConformRow> conform_optimizer(Backend& backend, const std::optional<std::string>& op) {
  std::vector<ConformRow> rows;
  if (!op || *op == "adamw") adamw_rows(backend, rows);
  if (!op || *op == "sum_squares") sum_squares_rows(backend, rows);
  if (!op || *op == "axpy") axpy_rows(backend, rows);
  return rows;
}

}  // namespace tandem::qualify
