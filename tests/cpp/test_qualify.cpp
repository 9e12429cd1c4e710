// The conformance suite and the faulty backend: cpu (and opencl where it is built and sees a
// device) pass every supported case; each fault kind fails its op, and only its op; a kernel
// writing outside its output is caught by the sentinels.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "backends/cpu/cpu_backend.h"
#include "backends/faulty/faulty_backend.h"
#include "backends/registry.h"
#include "core/error.h"
#include "qualify/compare.h"
#include "qualify/conform.h"
#include "qualify/op_cases.h"
#include "qualify/tolerance.h"

using namespace tandem;
using qualify::Status;

namespace {

std::set<std::string> failing_ops(const std::vector<qualify::ConformRow>& rows) {
  std::set<std::string> ops;
  for (const auto& r : rows)
    if (r.status == Status::fail) ops.insert(r.op + " [" + r.case_name + " " + r.node + ": " + r.detail + "]");
  return ops;
}
std::set<std::string> failing_op_names(const std::vector<qualify::ConformRow>& rows) {
  std::set<std::string> ops;
  for (const auto& r : rows)
    if (r.status == Status::fail) ops.insert(r.op);
  return ops;
}

void expect_all_pass(Backend& be) {
  const auto rows = qualify::conform(be, {});
  int pass = 0, unsupported_bf16 = 0;
  for (const auto& r : rows) {
    pass += r.status == Status::pass;
    if (r.dtype == "bf16") unsupported_bf16 += r.status == Status::unsupported;
    if (r.dtype == "f32") {
      EXPECT_NE(r.status, Status::unsupported) << r.case_name << " " << r.node;
    }
  }
  EXPECT_TRUE(failing_ops(rows).empty()) << ::testing::PrintToString(failing_ops(rows));
  EXPECT_GE(pass, 250);
  // The optimizer kernels are rows too: AdamW's four outputs, the squared norm, axpy.
  std::set<std::string> optimizer_rows;
  for (const auto& r : rows)
    if (r.op == "adamw" || r.op == "sum_squares" || r.op == "axpy") optimizer_rows.insert(r.op + "." + r.node);
  EXPECT_EQ(optimizer_rows, (std::set<std::string>{"adamw.param", "adamw.update", "adamw.exp_avg", "adamw.exp_avg_sq",
                                                    "sum_squares.out", "axpy.y"}));
  EXPECT_EQ(pass + unsupported_bf16, static_cast<int>(rows.size()));  // bf16: no kernels yet
}

}  // namespace

TEST(Tolerance, EveryF32BoundCatchesARelativeErrorOf1e3) {
#define TANDEM_TOL(name) EXPECT_LT(qualify::tolerance_for(OpKind::name, DType::f32).nmse, 1e-6) << #name;
  TANDEM_OPS(TANDEM_TOL)
#undef TANDEM_TOL
  EXPECT_EQ(qualify::tolerance_for(OpKind::embedding, DType::f32).nmse, 0.0);
  EXPECT_EQ(qualify::tolerance_for(OpKind::broadcast, DType::bf16).nmse, 0.0);
}

// Every f32 per-element bound catches a 1e-3 relative error on any one element at >= 10% of the
// tensor's largest magnitude (max_rel 1e-4); exact classes are exact on both metrics; every row of
// every dtype states a per-element bound (a forgotten one is NaN, which nothing passes).
TEST(Tolerance, EveryRowBoundsThePerElementMetric) {
#define TANDEM_TOL(name)                                                                     \
  {                                                                                          \
    const auto t = qualify::tolerance_for(OpKind::name, DType::f32);                         \
    EXPECT_LT(t.max_rel, 1e-4) << #name;                                                     \
    EXPECT_EQ(t.nmse == 0, t.max_rel == 0) << #name << ": exact on one metric, not the other"; \
    EXPECT_FALSE(std::isnan(qualify::tolerance_for(OpKind::name, DType::bf16).max_rel)) << #name; \
  }
  TANDEM_OPS(TANDEM_TOL)
#undef TANDEM_TOL
  for (const char* k : {"adamw", "sum_squares", "axpy"}) {
    const auto t = qualify::optimizer_tolerance(k, DType::f32);
    EXPECT_GT(t.max_rel, 0) << k;
    EXPECT_LT(t.max_rel, 1e-4) << k;
    EXPECT_LT(t.nmse, 1e-6) << k;
  }
  EXPECT_THROW(qualify::optimizer_tolerance("sgd", DType::f32), std::exception);
}

// The case: one element of a 4000-element matmul output off by 0.1%. NMSE averages it away
// (~2.5e-10, under the matmul bound); the per-element metric does not.
TEST(Compare, OneBadElementHidesFromNmseButNotFromMaxRel) {
  std::mt19937 rng(7);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> want(4000);
  for (double& w : want) w = d(rng);
  std::vector<float> got(want.begin(), want.end());
  const size_t i = 1234;  // a typical element, not the largest
  got[i] = static_cast<float>(want[i] * (1 + 1e-3));
  const auto s = qualify::compare(got, want);
  const auto tol = qualify::tolerance_for(OpKind::matmul, DType::f32);
  double max_ref = 0;
  for (double w : want) max_ref = std::max(max_ref, std::abs(w));
  EXPECT_LT(s.nmse, tol.nmse);                                          // NMSE alone passes it
  EXPECT_NEAR(s.max_rel, 1e-3 * std::abs(want[i]) / max_ref, 1e-7);    // the element's own error
  EXPECT_GT(s.max_rel, tol.max_rel);                                    // the per-element bound fails it
  EXPECT_EQ(s.worst, static_cast<long>(i));
  EXPECT_FALSE(s.ok(tol.nmse, tol.max_rel));
}

TEST(OpCases, NamesAreUniqueAndEveryBaseCaseHasVariants) {
  std::set<std::string> names;
  for (const auto& c : qualify::op_cases()) EXPECT_TRUE(names.insert(c.name).second) << c.name;
  EXPECT_TRUE(names.contains("softmax_wide@x100"));
  EXPECT_TRUE(names.contains("matmul_odd_tiles@x1e-3"));
}

TEST(Conform, CpuPassesEverySupportedCase) {
  CpuBackend cpu;
  expect_all_pass(cpu);
}

// In CI (CI=true) the OpenCL backend and PoCL are required: a missing one fails instead of skipping,
// so coverage cannot be lost silently.
bool ci() {
  const char* v = std::getenv("CI");
  return v && std::string(v) == "true";
}

TEST(Conform, OpenClPassesEverySupportedCase) {
  const auto all = list_backends();
  bool has_device = false;
  for (const auto& b : all) has_device = has_device || (b.name == "opencl" && !b.devices.empty());
  if (!has_device && ci())
    FAIL() << "CI=true: the OpenCL backend is not built or sees no OpenCL device (PoCL: scripts/setup.sh installs "
              "pocl-opencl-icd and libclblast-dev); its conformance must run in CI";
  if (!has_device) GTEST_SKIP() << "opencl backend not built or no OpenCL device";
  auto be = make_backend("opencl");
  expect_all_pass(*be);
}

TEST(Conform, OpFilterSelectsCasesAndRows) {
  CpuBackend cpu;
  qualify::ConformOptions o;
  o.op = "softmax_grad";
  o.dtypes = {DType::f32};
  const auto rows = qualify::conform(cpu, o);
  ASSERT_FALSE(rows.empty());
  for (const auto& r : rows) EXPECT_EQ(r.op, "softmax_grad");
}

// Each fault kind fails the faulted op (for dropgrad: its gradient op) and nothing else.
struct FaultCase {
  std::string spec, expect;
};
class FaultyConform : public ::testing::TestWithParam<FaultCase> {};
TEST_P(FaultyConform, FailsThatOpOnly) {
  auto be = make_backend("faulty:cpu", GetParam().spec);
  qualify::ConformOptions o;
  o.dtypes = {DType::f32};
  const auto rows = qualify::conform(*be, o);
  EXPECT_EQ(failing_op_names(rows), std::set<std::string>{GetParam().expect})
      << ::testing::PrintToString(failing_ops(rows));
}
INSTANTIATE_TEST_SUITE_P(Kinds, FaultyConform,
                         ::testing::Values(FaultCase{"op=softmax,kind=scale,eps=1e-3", "softmax"},
                                           FaultCase{"op=gelu,kind=bitflip,rate=0.01", "gelu"},
                                           FaultCase{"op=layernorm,kind=bf16", "layernorm"},
                                           FaultCase{"op=softmax,kind=dropgrad", "softmax_grad"},
                                           FaultCase{"op=matmul,kind=dropgrad", "matmul"},
                                           // Localised faults at small magnitudes (0.1% of one element or tile,
                                           // a low mantissa bit: 2^-11 relative), intermittent ones, and the
                                           // optimizer kernels.
                                           FaultCase{"op=matmul,kind=element,eps=1e-3", "matmul"},
                                           FaultCase{"op=softmax,kind=element,eps=1e-3,index=5", "softmax"},
                                           FaultCase{"op=layernorm,kind=tile,eps=1e-3", "layernorm"},
                                           FaultCase{"op=attention,kind=tile,eps=1e-3,size=4,index=0", "attention"},
                                           FaultCase{"op=gelu,kind=stuck,bit=12", "gelu"},
                                           FaultCase{"op=rmsnorm,kind=stuck,bit=12,lane=3,lanes=8,value=1", "rmsnorm"},
                                           FaultCase{"op=softmax,kind=scale,eps=1e-3,every=3", "softmax"},
                                           FaultCase{"op=gelu,kind=element,eps=1e-3,p=0.5,seed=3", "gelu"},
                                           FaultCase{"op=adamw,kind=element,eps=1e-3", "adamw"},
                                           FaultCase{"op=adamw,kind=scale,eps=1e-5", "adamw"},
                                           FaultCase{"op=sum_squares,kind=scale,eps=1e-5", "sum_squares"},
                                           FaultCase{"op=axpy,kind=tile,eps=1e-3", "axpy"},
                                           FaultCase{"op=axpy,kind=stuck,bit=13,every=2", "axpy"}),
                         [](const auto& info) { return std::to_string(info.index); });

// The per-element metric is what catches one bad element: the faulted matmul rows fail on max_rel,
// and in the large outputs (3000-4500 elements) with their NMSE within its bound (NMSE alone would
// have passed them). Element 1000 (modulo the size): a typical element, not the largest.
TEST(FaultyConform, OneBadElementFailsOnMaxRelWhereNmsePasses) {
  auto be = make_backend("faulty:cpu", "op=matmul,kind=element,eps=1e-3,index=1000");
  qualify::ConformOptions o;
  o.op = "matmul";
  o.dtypes = {DType::f32};
  int fail = 0, nmse_would_pass = 0;
  for (const auto& r : qualify::conform(*be, o)) {
    if (r.status != Status::fail) continue;
    ++fail;
    nmse_would_pass += r.error <= r.tolerance;
    EXPECT_GT(r.max_rel, r.max_rel_tolerance) << r.case_name << " " << r.node;
    EXPECT_NE(r.detail.find("max_rel over bound"), std::string::npos) << r.detail;
  }
  EXPECT_GT(fail, 0);
  EXPECT_GT(nmse_would_pass, 0);
}

// every=N: the fault fires on every N-th execution of the op, and conform fails exactly those rows.
TEST(FaultyConform, IntermittentEveryNFailsEveryNthRow) {
  auto be = make_backend("faulty:cpu", "op=softmax,kind=scale,eps=1e-3,every=3");
  qualify::ConformOptions o;
  o.op = "softmax";
  o.dtypes = {DType::f32};
  const auto rows = qualify::conform(*be, o);
  int ran = 0, fail = 0;
  std::vector<bool> failed;
  for (const auto& r : rows)
    if (r.op == "softmax" && r.status != Status::unsupported) {
      ++ran;
      failed.push_back(r.status == Status::fail);
      fail += r.status == Status::fail;
    }
  ASSERT_GE(ran, 6);
  for (size_t i = 0; i < failed.size(); ++i) EXPECT_EQ(failed[i], i % 3 == 2) << "softmax row " << i;
  const auto* f = dynamic_cast<FaultyBackend*>(be.get());
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->executions(), ran);
  EXPECT_EQ(f->injected(), fail);
}

TEST(Faulty, SpecErrorsNameTheKey) {
  auto msg = [](const std::string& spec) {
    try {
      FaultSpec::parse(spec);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("op=softmax,kind=melt").find("melt"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=scale,wobble=1").find("wobble"), std::string::npos);
  EXPECT_NE(msg("op=softmaxx,kind=scale").find("softmaxx"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=scale,eps=abc").find("eps"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=stuck").find("bit"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=stuck,bit=32").find("bit"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=scale,bit=3").find("'bit' does not apply to kind=scale"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=element,eps=0").find("eps"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=scale,every=0").find("every"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=scale,p=1.5").find("p must"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=tile,size=0").find("size"), std::string::npos);
  EXPECT_NE(msg("op=softmax,kind=stuck,bit=3,lane=8,lanes=8").find("lane"), std::string::npos);
  EXPECT_NE(msg("op=adamw,kind=dropgrad").find("dropgrad"), std::string::npos);
  EXPECT_NE(msg("op=sgd,kind=scale").find("sgd"), std::string::npos);
  EXPECT_EQ(msg("op=adamw,kind=element,eps=1e-3,index=7,every=2,p=0.5,seed=9"), "no error");
  EXPECT_THROW(make_backend("faulty:cpu", ""), Error);
  EXPECT_THROW(make_backend("cpu", "op=softmax,kind=scale"), Error);
}

namespace {
// A broken kernel: `scale` also writes one float past its output.
class OverrunBackend final : public Backend {
 public:
  CpuBackend cpu;
  std::string name() const override { return "overrun"; }
  void* alloc(size_t b) override { return cpu.alloc(b); }
  void free(void* h) override { cpu.free(h); }
  void upload(void* d, size_t o, const void* s, size_t n) override { cpu.upload(d, o, s, n); }
  void download(void* d, const void* s, size_t o, size_t n) override { cpu.download(d, s, o, n); }
  void copy(void* d, size_t doff, const void* s, size_t soff, size_t n) override { cpu.copy(d, doff, s, soff, n); }
  void zero(void* d, size_t o, size_t n) override { cpu.zero(d, o, n); }
  void sync() override {}
  bool supports(const Node& n) const override { return cpu.supports(n); }
  void execute(const Node& n, std::span<const Tensor> in, const Tensor& out) override {
    cpu.execute(n, in, out);
    if (n.op == OpKind::scale) {
      const float junk = 1.0f;
      cpu.upload(out.storage->handle, out.offset + out.nbytes(), &junk, 4);
    }
  }
  double sum_squares(const Tensor& t) override { return cpu.sum_squares(t); }
  void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) override {
    cpu.adamw(p, g, m, v, s);
  }
  void axpy(const Tensor& y, float a, const Tensor& x) override { cpu.axpy(y, a, x); }
};
}  // namespace

TEST(Conform, SentinelsCatchAnOutOfBoundsWrite) {
  OverrunBackend be;
  qualify::ConformOptions o;
  o.op = "scale";
  o.dtypes = {DType::f32};
  const auto rows = qualify::conform(be, o);
  int caught = 0;
  for (const auto& r : rows)
    if (r.op == "scale") {
      EXPECT_EQ(r.status, Status::fail);
      caught += r.detail.find("outside") != std::string::npos;
    }
  EXPECT_GT(caught, 0);
}

namespace {
// Optimizer kernels with a known bug each: AdamW without bias correction (it steps as if at step
// 10^6), a squared norm summed naively in f32.
class WrongOptimizerBackend final : public Backend {
 public:
  CpuBackend cpu;
  std::string name() const override { return "wrong-optimizer"; }
  void* alloc(size_t b) override { return cpu.alloc(b); }
  void free(void* h) override { cpu.free(h); }
  void upload(void* d, size_t o, const void* s, size_t n) override { cpu.upload(d, o, s, n); }
  void download(void* d, const void* s, size_t o, size_t n) override { cpu.download(d, s, o, n); }
  void copy(void* d, size_t doff, const void* s, size_t soff, size_t n) override { cpu.copy(d, doff, s, soff, n); }
  void zero(void* d, size_t o, size_t n) override { cpu.zero(d, o, n); }
  void sync() override {}
  bool supports(const Node& n) const override { return cpu.supports(n); }
  void execute(const Node& n, std::span<const Tensor> in, const Tensor& out) override { cpu.execute(n, in, out); }
  double sum_squares(const Tensor& t) override {
    float acc = 0;
    for (float x : t.to_host()) acc += x * x;
    return acc;
  }
  void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) override {
    AdamWStep no_bias_correction = s;
    no_bias_correction.step = 1000000;
    cpu.adamw(p, g, m, v, no_bias_correction);
  }
  void axpy(const Tensor& y, float a, const Tensor& x) override { cpu.axpy(y, a, x); }
};
}  // namespace

TEST(ConformOptimizer, CatchesAdamWWithoutBiasCorrectionAndAnF32SquaredNorm) {
  WrongOptimizerBackend be;
  qualify::ConformOptions o;
  o.op = "adamw";
  o.dtypes = {DType::f32};
  std::set<std::string> failed_cases, passed_cases;
  for (const auto& r : qualify::conform(be, o)) {
    EXPECT_EQ(r.op, "adamw");
    (r.status == Status::fail ? failed_cases : passed_cases).insert(r.case_name.substr(0, r.case_name.find("_n")));
  }
  // Steps 1 and 7 need the correction; at step 1000 (beta2 0.95) it is 1 to within 1e-22.
  EXPECT_TRUE(failed_cases.contains("adamw_step1"));
  EXPECT_TRUE(failed_cases.contains("adamw_step7_clipped"));
  EXPECT_FALSE(failed_cases.contains("adamw_step1000_nodecay"));
  o.op = "sum_squares";
  bool large_failed = false;
  for (const auto& r : qualify::conform(be, o))
    if (r.case_name.starts_with("sum_squares_n70001")) large_failed = large_failed || r.status == Status::fail;
  EXPECT_TRUE(large_failed) << "70001 squares summed in f32 should be over the sum_squares bound";
}

// Each localised kind perturbs exactly the elements it says, by the amount it says (expected values
// computed here from the spec). axpy with alpha 0 leaves y as it was, so what changes is the fault.
TEST(Faulty, LocalisedKindsTouchExactlyTheirElements) {
  const int64_t n = 100;
  std::vector<float> y0(n);
  for (int64_t i = 0; i < n; ++i) y0[static_cast<size_t>(i)] = 1.0f + 0.01f * static_cast<float>(i % 17);
  y0[42] = -5.0f;  // the largest magnitude
  auto run = [&](const std::string& spec) {
    auto be = make_backend("faulty:cpu", spec);
    Tensor y = Tensor::from_host(*be, {n}, y0), x = Tensor::zeros(*be, {n}, DType::f32);
    be->axpy(y, 0.0f, x);
    return y.to_host();
  };
  auto changed = [&](const std::vector<float>& y) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < n; ++i)
      if (y[static_cast<size_t>(i)] != y0[static_cast<size_t>(i)]) idx.push_back(i);
    return idx;
  };
  auto y = run("op=axpy,kind=element,eps=1e-3");
  EXPECT_EQ(changed(y), std::vector<int64_t>{42});
  EXPECT_FLOAT_EQ(y[42], -5.0f * 1.001f);
  y = run("op=axpy,kind=element,eps=1e-3,index=107");  // modulo the size
  EXPECT_EQ(changed(y), std::vector<int64_t>{7});
  y = run("op=axpy,kind=tile,eps=0.5,size=4,index=5");
  EXPECT_EQ(changed(y), (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_FLOAT_EQ(y[6], y0[6] * 1.5f);
  y = run("op=axpy,kind=tile,eps=0.5,size=8");  // the aligned block of 8 holding element 42
  EXPECT_EQ(changed(y), (std::vector<int64_t>{40, 41, 42, 43, 44, 45, 46, 47}));
  y = run("op=axpy,kind=stuck,bit=22,lane=3,lanes=32");  // bit 22 = the top mantissa bit
  std::vector<int64_t> want;
  for (int64_t i = 3; i < n; i += 32) {
    uint32_t u;
    std::memcpy(&u, &y0[static_cast<size_t>(i)], 4);
    if (!(u & (1u << 22))) want.push_back(i);
    u |= 1u << 22;
    float f;
    std::memcpy(&f, &u, 4);
    EXPECT_EQ(y[static_cast<size_t>(i)], f) << i;
  }
  EXPECT_EQ(changed(y), want);
  EXPECT_FALSE(want.empty());
}

// An intermittent fault with p: seeded, so the same executions fire every run; about p of them.
TEST(Faulty, IntermittentProbabilityIsSeededAndAboutP) {
  auto count = [](const std::string& spec) {
    auto be = make_backend("faulty:cpu", spec);
    std::vector<float> y0(8, 1.0f);
    Tensor y = Tensor::from_host(*be, {8}, y0), x = Tensor::zeros(*be, {8}, DType::f32);
    std::string fired;
    for (int i = 0; i < 400; ++i) {
      y.copy_from_host(y0);
      be->axpy(y, 0.0f, x);
      fired += y.to_host()[0] != 1.0f ? '1' : '0';
    }
    return fired;
  };
  const std::string a = count("op=axpy,kind=element,eps=1,index=0,p=0.25,seed=5");
  EXPECT_EQ(a, count("op=axpy,kind=element,eps=1,index=0,p=0.25,seed=5"));
  const auto hits = std::count(a.begin(), a.end(), '1');
  EXPECT_GT(hits, 70);  // 400 x 0.25 = 100, +-3 sigma
  EXPECT_LT(hits, 130);
  const std::string every = count("op=axpy,kind=element,eps=1,index=0,every=4");
  for (size_t i = 0; i < every.size(); ++i) EXPECT_EQ(every[i], i % 4 == 3 ? '1' : '0') << i;
}

// A graph-op fault that no node of the run uses stops the run at its first optimizer step.
TEST(Faulty, UnusedGraphOpStopsAtTheOptimizer) {
  auto be = make_backend("faulty:cpu", "op=rmsnorm,kind=scale,eps=1e-3");
  Tensor t = Tensor::zeros(*be, {4}, DType::f32);
  try {
    be->sum_squares(t);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rmsnorm"), std::string::npos) << e.what();
  }
}
