// Every op, forward and backward:
//  1. gradient check: the backward rules, run by the float64 reference interpreter, against
//     float64 central differences of the reference forward;
//  2. the CPU backend (f32) against the float64 reference, node by node, backward nodes included,
//     by normalised MSE sum (a-b)^2 / sum b^2.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "core/autodiff.h"
#include "core/backend.h"
#include "core/program.h"
#include "core/reference.h"
#include "ops/moe.h"
#include "ops/op.h"
#include "qualify/op_cases.h"

using namespace tandem;

namespace {

using qualify::OpCase;

// CPU f32 vs float64 bound for a whole program (errors of upstream nodes included).
constexpr double kCpuNmse = 1e-10;

void run_case(const OpCase& c) {
  SCOPED_TRACE(c.name);
  qualify::CaseGraph cg = qualify::build_case(c);
  Graph& g = cg.graph;
  const NodeId loss = cg.loss;
  const std::vector<NodeId>& wrt = cg.wrt;
  const Backward& bw = cg.backward;
  std::map<NodeId, RefTensor>& leaves = cg.leaves;
  auto ref = run_reference(g, leaves);

  // 1. gradients vs central differences (at most 40 coordinates per parameter). A cast rounds: a
  // step function, whose derivative is 0 almost everywhere; its backward rule is by definition the
  // straight-through identity (as PyTorch's autocast) in the value's dtype: f32 -> bf16 -> f32
  // passes d loss / d out back as a bf16 gradient, so d loss / d x = round_bf16(d loss / d out).
  if (c.op == OpKind::cast) {
    for (NodeId w : wrt) {
      std::vector<double> want = ref[static_cast<size_t>(bw.grad.at(cg.out))].data;
      for (double& v : want) v = round_bf16(static_cast<float>(v));
      EXPECT_EQ(ref[static_cast<size_t>(bw.grad.at(w))].data, want);
    }
  }
  for (NodeId w : c.op == OpKind::cast ? std::vector<NodeId>{} : wrt) {
    const RefTensor& grad = ref[static_cast<size_t>(bw.grad.at(w))];
    double gmax = 1e-3;
    for (double v : grad.data) gmax = std::max(gmax, std::abs(v));
    const int64_t n = leaves[w].numel();
    const int64_t stride = std::max<int64_t>(1, n / 40);
    for (int64_t i = 0; i < n; i += stride) {
      auto perturbed = [&](double delta) {
        auto l = leaves;
        l[w].data[static_cast<size_t>(i)] += delta;
        return run_reference(g, l)[static_cast<size_t>(loss)].data[0];
      };
      const double h = 1e-5;
      const double fd = (perturbed(h) - perturbed(-h)) / (2 * h);
      EXPECT_NEAR(grad.data[static_cast<size_t>(i)], fd, 1e-6 * gmax)
          << "d loss / d " << g.node(w).name << "[" << i << "]";
    }
  }

  // 2. CPU backend vs reference, every node.
  auto cpu = make_backend("cpu");
  std::set<NodeId> keep;
  for (const Node& n : g.nodes()) keep.insert(n.id);
  Program prog(g, *cpu, keep);
  for (auto& [id, t] : leaves) {
    const Node& n = g.node(id);
    std::vector<float> f(t.data.begin(), t.data.end());
    if (n.dtype == DType::i32) {
      std::vector<int32_t> ids(t.data.begin(), t.data.end());
      prog.bind(id, Tensor::from_host_i32(*cpu, n.shape, ids));
    } else {
      prog.bind(id, Tensor::from_host(*cpu, n.shape, f));
    }
  }
  prog.run();
  for (const Node& n : g.nodes()) {
    if (n.dtype != DType::f32 || n.op == OpKind::input || n.op == OpKind::param) continue;
    auto got = prog.get(n.id).to_host();
    const auto& want = ref[static_cast<size_t>(n.id)].data;
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      num += (got[i] - want[i]) * (got[i] - want[i]);
      den += want[i] * want[i];
    }
    double nmse = den > 0 ? num / den : num;
    EXPECT_LE(nmse, kCpuNmse) << "node " << n.name << " (" << op_name(n.op) << ")";
  }
}

// The shared case list (src/qualify/op_cases.cpp), at magnitude 1: the gradient check's step and
// bound are tuned for unit-scale values; `tandem conform` covers the large and tiny variants.
std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (const OpCase& c : qualify::op_cases())
    if (c.magnitude == 1.0) out.push_back(c);
  return out;
}

}  // namespace

class OpTest : public ::testing::TestWithParam<OpCase> {};
TEST_P(OpTest, GradientsAndCpuMatchFloat64Reference) { run_case(GetParam()); }
INSTANTIATE_TEST_SUITE_P(AllOps, OpTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(OpErrors, ShapeErrorsNameTheNode) {
  Graph g;
  NodeId a = g.param("a", {3, 4});
  NodeId b = g.param("b", {5, 6});
  try {
    g.add(OpKind::matmul, {a, b}, MatmulAttrs{}, "h.0.mlp.c_fc");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("h.0.mlp.c_fc"), std::string::npos) << e.what();
  }
}

// Routing against a hand-worked example: group-limited top-k with the bias steering selection only.
TEST(DeepSeekRouting, GroupLimitedTopK) {
  Graph g;
  const RouteAttrs a{8, 2, 4, 2, true, 1.0f};
  NodeId s = g.input("s", {1, 8});
  NodeId bias = g.input("bias", {8});
  NodeId idx = g.add(OpKind::topk_route, {s, bias}, a, "route");
  NodeId w = g.add(OpKind::route_weights, {s, idx}, a, "w");
  std::map<NodeId, RefTensor> leaves;
  leaves[s] = RefTensor(Shape{1, 8});
  leaves[s].data = {0.9, 0.1, 0.5, 0.45, 0.2, 0.3, 0.85, 0.05};  // groups: {0.9,0.1} {0.5,0.45} {0.2,0.3} {0.85,0.05}
  leaves[bias] = RefTensor(Shape{8});
  leaves[bias].data = {0, 0, 0, 0, 0, 0, 0, 0.5};  // lifts group 3 (0.85 + 0.55 = 1.4) above group 0 (1.0)
  auto ref = run_reference(g, leaves);
  // Groups kept: 3 (1.4) and 0 (1.0), not 1 (0.95); best choices there: expert 0 (0.9) and 6 (0.85),
  // while expert 7 (0.05 + 0.5 = 0.55) lifted its group but is not chosen.
  EXPECT_EQ(ref[static_cast<size_t>(idx)].data, (std::vector<double>{0, 6}));
  // Weights use the raw scores, normalised: 0.9 / 1.75 and 0.85 / 1.75.
  EXPECT_NEAR(ref[static_cast<size_t>(w)].data[0], 0.9 / 1.75, 1e-12);
  EXPECT_NEAR(ref[static_cast<size_t>(w)].data[1], 0.85 / 1.75, 1e-12);
  // Without the bias, group 3 (0.9) loses to group 1 (0.95): experts 0 and 2.
  leaves[bias].data.assign(8, 0.0);
  EXPECT_EQ(run_reference(g, leaves)[static_cast<size_t>(idx)].data, (std::vector<double>{0, 2}));
}
