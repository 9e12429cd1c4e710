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
#include "ops/op.h"

using namespace tandem;

namespace {

struct OpCase {
  std::string name;
  std::function<NodeId(Graph&)> build;  // returns the output node; leaves are inputs/params
  double nmse = 1e-10;                  // CPU f32 vs float64 bound
};

RefTensor random_leaf(const Node& n, std::mt19937& rng) {
  RefTensor t(n.shape);
  if (n.dtype == DType::i32) {
    // ids: the consumer's range is encoded in the leaf's name suffix "@<max>" (exclusive)
    auto at = n.name.rfind('@');
    int hi = std::stoi(n.name.substr(at + 1));
    std::uniform_int_distribution<int> d(0, hi - 1);
    for (auto& v : t.data) v = d(rng);
    if (n.name.find("ignore") != std::string::npos) t.data[1] = -1;
    return t;
  }
  std::normal_distribution<double> d(0.0, 1.0);
  for (auto& v : t.data) v = d(rng);
  return t;
}

void run_case(const OpCase& c) {
  SCOPED_TRACE(c.name);
  Graph g;
  NodeId out = c.build(g);
  NodeId weights = g.input("loss_weights", g.node(out).shape);
  NodeId weighted = g.add(OpKind::mul, {out, weights}, NoAttrs{}, "weighted");
  NodeId loss = g.add(OpKind::sum, {weighted}, NoAttrs{}, "loss");
  std::vector<NodeId> wrt;
  for (const Node& n : g.nodes())
    if (n.op == OpKind::param) wrt.push_back(n.id);
  Backward bw = build_backward(g, loss, wrt);

  std::mt19937 rng(1234);
  std::map<NodeId, RefTensor> leaves;
  for (const Node& n : g.nodes())
    if ((n.op == OpKind::input || n.op == OpKind::param) && n.id != bw.seed) leaves[n.id] = random_leaf(n, rng);
  leaves[bw.seed] = RefTensor(Shape{});
  leaves[bw.seed].data[0] = 1.0;
  auto ref = run_reference(g, leaves);

  // 1. gradients vs central differences (at most 40 coordinates per parameter).
  for (NodeId w : wrt) {
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
    EXPECT_LE(nmse, c.nmse) << "node " << n.name << " (" << op_name(n.op) << ")";
  }
}

NodeId p(Graph& g, const char* name, Shape s) { return g.param(name, s); }

std::vector<OpCase> cases() {
  return {
      {"embedding", [](Graph& g) {
         return g.add(OpKind::embedding, {g.input("ids@7", {2, 5}, DType::i32), p(g, "table", {7, 6})}, NoAttrs{}, "out");
       }},
      {"matmul_nn_flattened", [](Graph& g) {
         return g.add(OpKind::matmul, {p(g, "a", {2, 3, 5}), p(g, "b", {5, 4})}, MatmulAttrs{}, "out");
       }},
      {"matmul_nt", [](Graph& g) {
         return g.add(OpKind::matmul, {p(g, "a", {3, 5}), p(g, "b", {4, 5})}, MatmulAttrs{false, true}, "out");
       }},
      {"matmul_tn_flattened", [](Graph& g) {
         return g.add(OpKind::matmul, {p(g, "a", {2, 3, 5}), p(g, "b", {6, 4})}, MatmulAttrs{true, false}, "out");
       }},
      {"matmul_batched", [](Graph& g) {
         return g.add(OpKind::matmul, {p(g, "a", {2, 3, 5}), p(g, "b", {2, 5, 4})}, MatmulAttrs{}, "out");
       }},
      {"matmul_batched_nt", [](Graph& g) {
         return g.add(OpKind::matmul, {p(g, "a", {2, 3, 5}), p(g, "b", {2, 4, 5})}, MatmulAttrs{false, true}, "out");
       }},
      {"matmul_batched_tn", [](Graph& g) {
         return g.add(OpKind::matmul, {p(g, "a", {2, 5, 3}), p(g, "b", {2, 5, 4})}, MatmulAttrs{true, false}, "out");
       }},
      {"add_broadcast", [](Graph& g) { return g.add(OpKind::add, {p(g, "a", {2, 3, 4}), p(g, "b", {4})}, NoAttrs{}, "out"); }},
      {"add_same", [](Graph& g) { return g.add(OpKind::add, {p(g, "a", {3, 4}), p(g, "b", {3, 4})}, NoAttrs{}, "out"); }},
      {"mul_broadcast", [](Graph& g) { return g.add(OpKind::mul, {p(g, "a", {2, 3, 4}), p(g, "b", {3, 4})}, NoAttrs{}, "out"); }},
      {"scale", [](Graph& g) { return g.add(OpKind::scale, {p(g, "a", {5, 3})}, ScaleAttrs{-0.37f}, "out"); }},
      {"sum", [](Graph& g) { return g.add(OpKind::sum, {p(g, "a", {4, 3})}, NoAttrs{}, "out"); }},
      {"sum_to", [](Graph& g) { return g.add(OpKind::sum_to, {p(g, "a", {2, 3, 70})}, ShapeAttrs{{70}}, "out"); }},
      {"broadcast", [](Graph& g) { return g.add(OpKind::broadcast, {p(g, "a", {3})}, ShapeAttrs{{2, 3}}, "out"); }},
      {"reshape", [](Graph& g) { return g.add(OpKind::reshape, {p(g, "a", {2, 6})}, ShapeAttrs{{3, 4}}, "out"); }},
      {"layernorm", [](Graph& g) {
         return g.add(OpKind::layernorm, {p(g, "x", {3, 2, 9}), p(g, "w", {9}), p(g, "b", {9})}, NormAttrs{1e-5f}, "out");
       }},
      {"rmsnorm", [](Graph& g) { return g.add(OpKind::rmsnorm, {p(g, "x", {4, 7}), p(g, "w", {7})}, NormAttrs{1e-6f}, "out"); }},
      {"gelu", [](Graph& g) { return g.add(OpKind::gelu, {p(g, "x", {3, 37})}, NoAttrs{}, "out"); }},
      {"silu", [](Graph& g) { return g.add(OpKind::silu, {p(g, "x", {3, 37})}, NoAttrs{}, "out"); }},
      {"softmax", [](Graph& g) { return g.add(OpKind::softmax, {p(g, "x", {4, 11})}, NoAttrs{}, "out"); }},
      {"attention", [](Graph& g) {
         return g.add(OpKind::attention, {p(g, "qkv", {2, 5, 2 * (2 * 3 + 3)})}, AttentionAttrs{2, 3, 3, 0.577f}, "out");
       }},
      {"attention_dv_differs", [](Graph& g) {
         return g.add(OpKind::attention, {p(g, "qkv", {1, 6, 3 * (2 * 4 + 2)})}, AttentionAttrs{3, 4, 2, 0.5f}, "out");
       }},
      {"attention_two_query_blocks", [](Graph& g) {
         return g.add(OpKind::attention, {p(g, "qkv", {1, 70, 2 * (2 * 4 + 4)})}, AttentionAttrs{2, 4, 4, 0.5f}, "out");
       }},
      {"attention_cached", [](Graph& g) {
         return g.add(OpKind::attention_cached,
                      {g.input("qkv", {3, 2, 2 * (2 * 3 + 2)}), g.input("cache", {3, 6, 2 * (3 + 2)}),
                       g.input("cache_len@5", {3}, DType::i32)},
                      AttentionAttrs{2, 3, 2, 0.6f}, "out");
       }},
      {"cross_entropy", [](Graph& g) {
         return g.add(OpKind::cross_entropy, {p(g, "logits", {2, 3, 13}), g.input("targets_ignore@13", {2, 3}, DType::i32)},
                      NoAttrs{}, "out");
       }},
  };
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
