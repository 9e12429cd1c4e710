// The conformance suite and the faulty backend: cpu (and opencl where it is built and sees a
// device) pass every supported case; each fault kind fails its op, and only its op; a kernel
// writing outside its output is caught by the sentinels.
#include <gtest/gtest.h>

#include <set>

#include "backends/cpu/cpu_backend.h"
#include "backends/faulty/faulty_backend.h"
#include "backends/registry.h"
#include "core/error.h"
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

TEST(Conform, OpenClPassesEverySupportedCase) {
  const auto all = list_backends();
  bool has_device = false;
  for (const auto& b : all) has_device = has_device || (b.name == "opencl" && !b.devices.empty());
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
                                           FaultCase{"op=gelu,kind=bitflip,p=0.01", "gelu"},
                                           FaultCase{"op=layernorm,kind=bf16", "layernorm"},
                                           FaultCase{"op=softmax,kind=dropgrad", "softmax_grad"},
                                           FaultCase{"op=matmul,kind=dropgrad", "matmul"}),
                         [](const auto& info) { return std::to_string(info.index); });

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
