#include "qualify/op_cases.h"

namespace tandem::qualify {

namespace {

NodeId p(Graph& g, const char* name, Shape s) { return g.param(name, s); }
NodeId mm(Graph& g, Shape a, Shape b, bool ta, bool tb) {
  return g.add(OpKind::matmul, {p(g, "a", std::move(a)), p(g, "b", std::move(b))}, MatmulAttrs{ta, tb}, "out");
}
NodeId att(Graph& g, int64_t B, int64_t T, int H, int dqk, int dv, float scale) {
  return g.add(OpKind::attention, {p(g, "qkv", {B, T, H * (2 * dqk + dv)})}, AttentionAttrs{H, dqk, dv, scale}, "out");
}

std::vector<OpCase> base_cases() {
  using K = OpKind;
  return {
      {"embedding", K::embedding, [](Graph& g) {
         return g.add(K::embedding, {g.input("ids@7", {2, 5}, DType::i32), p(g, "table", {7, 6})}, NoAttrs{}, "out");
       }},
      {"embedding_one_row", K::embedding, [](Graph& g) {
         return g.add(K::embedding, {g.input("ids@1", {3}, DType::i32), p(g, "table", {1, 5})}, NoAttrs{}, "out");
       }},
      {"embedding_repeated_ids", K::embedding, [](Graph& g) {
         return g.add(K::embedding, {g.input("ids@3", {4, 33}, DType::i32), p(g, "table", {3, 17})}, NoAttrs{}, "out");
       }},
      {"matmul_nn_flattened", K::matmul, [](Graph& g) { return mm(g, {2, 3, 5}, {5, 4}, false, false); }},
      {"matmul_nt", K::matmul, [](Graph& g) { return mm(g, {3, 5}, {4, 5}, false, true); }},
      {"matmul_tn_flattened", K::matmul, [](Graph& g) { return mm(g, {2, 3, 5}, {6, 4}, true, false); }},
      {"matmul_batched", K::matmul, [](Graph& g) { return mm(g, {2, 3, 5}, {2, 5, 4}, false, false); }},
      {"matmul_batched_nt", K::matmul, [](Graph& g) { return mm(g, {2, 3, 5}, {2, 4, 5}, false, true); }},
      {"matmul_batched_tn", K::matmul, [](Graph& g) { return mm(g, {2, 5, 3}, {2, 5, 4}, true, false); }},
      {"matmul_1x1x1", K::matmul, [](Graph& g) { return mm(g, {1, 1}, {1, 1}, false, false); }},
      {"matmul_odd_tiles", K::matmul, [](Graph& g) { return mm(g, {33, 65}, {65, 17}, false, false); }},
      {"matmul_odd_tiles_nt", K::matmul, [](Graph& g) { return mm(g, {2, 37, 19}, {71, 19}, false, true); }},
      {"add_broadcast", K::add, [](Graph& g) { return g.add(K::add, {p(g, "a", {2, 3, 4}), p(g, "b", {4})}, NoAttrs{}, "out"); }},
      {"add_same", K::add, [](Graph& g) { return g.add(K::add, {p(g, "a", {3, 4}), p(g, "b", {3, 4})}, NoAttrs{}, "out"); }},
      {"add_size1", K::add, [](Graph& g) { return g.add(K::add, {p(g, "a", {1}), p(g, "b", {1})}, NoAttrs{}, "out"); }},
      {"add_broadcast_scalar_row", K::add, [](Graph& g) {
         return g.add(K::add, {p(g, "a", {5, 1}), p(g, "b", {1})}, NoAttrs{}, "out");
       }},
      {"mul_broadcast", K::mul, [](Graph& g) { return g.add(K::mul, {p(g, "a", {2, 3, 4}), p(g, "b", {3, 4})}, NoAttrs{}, "out"); }},
      {"mul_odd", K::mul, [](Graph& g) { return g.add(K::mul, {p(g, "a", {7, 129}), p(g, "b", {129})}, NoAttrs{}, "out"); }},
      {"scale", K::scale, [](Graph& g) { return g.add(K::scale, {p(g, "a", {5, 3})}, ScaleAttrs{-0.37f}, "out"); }},
      {"sum", K::sum, [](Graph& g) { return g.add(K::sum, {p(g, "a", {4, 3})}, NoAttrs{}, "out"); }},
      {"sum_size1", K::sum, [](Graph& g) { return g.add(K::sum, {p(g, "a", {1})}, NoAttrs{}, "out"); }},
      {"sum_long", K::sum, [](Graph& g) { return g.add(K::sum, {p(g, "a", {3, 4099})}, NoAttrs{}, "out"); }},
      {"sum_to", K::sum_to, [](Graph& g) { return g.add(K::sum_to, {p(g, "a", {2, 3, 70})}, ShapeAttrs{{70}}, "out"); }},
      {"sum_to_tall", K::sum_to, [](Graph& g) { return g.add(K::sum_to, {p(g, "a", {515, 3})}, ShapeAttrs{{3}}, "out"); }},
      {"broadcast", K::broadcast, [](Graph& g) { return g.add(K::broadcast, {p(g, "a", {3})}, ShapeAttrs{{2, 3}}, "out"); }},
      {"reshape", K::reshape, [](Graph& g) { return g.add(K::reshape, {p(g, "a", {2, 6})}, ShapeAttrs{{3, 4}}, "out"); }},
      {"layernorm", K::layernorm, [](Graph& g) {
         return g.add(K::layernorm, {p(g, "x", {3, 2, 9}), p(g, "w", {9}), p(g, "b", {9})}, NormAttrs{1e-5f}, "out");
       }},
      {"layernorm_wide", K::layernorm, [](Graph& g) {
         return g.add(K::layernorm, {p(g, "x", {5, 769}), p(g, "w", {769}), p(g, "b", {769})}, NormAttrs{1e-5f}, "out");
       }},
      {"rmsnorm", K::rmsnorm, [](Graph& g) { return g.add(K::rmsnorm, {p(g, "x", {4, 7}), p(g, "w", {7})}, NormAttrs{1e-6f}, "out"); }},
      {"rmsnorm_wide", K::rmsnorm, [](Graph& g) {
         return g.add(K::rmsnorm, {p(g, "x", {3, 1025}), p(g, "w", {1025})}, NormAttrs{1e-6f}, "out");
       }},
      {"gelu", K::gelu, [](Graph& g) { return g.add(K::gelu, {p(g, "x", {3, 37})}, NoAttrs{}, "out"); }},
      {"silu", K::silu, [](Graph& g) { return g.add(K::silu, {p(g, "x", {3, 37})}, NoAttrs{}, "out"); }},
      {"softmax", K::softmax, [](Graph& g) { return g.add(K::softmax, {p(g, "x", {4, 11})}, NoAttrs{}, "out"); }},
      {"softmax_size1", K::softmax, [](Graph& g) { return g.add(K::softmax, {p(g, "x", {3, 1})}, NoAttrs{}, "out"); }},
      {"softmax_wide", K::softmax, [](Graph& g) { return g.add(K::softmax, {p(g, "x", {2, 1000})}, NoAttrs{}, "out"); }},
      {"attention", K::attention, [](Graph& g) { return att(g, 2, 5, 2, 3, 3, 0.577f); }},
      {"attention_dv_differs", K::attention, [](Graph& g) { return att(g, 1, 6, 3, 4, 2, 0.5f); }},
      {"attention_two_query_blocks", K::attention, [](Graph& g) { return att(g, 1, 70, 2, 4, 4, 0.5f); }},
      {"attention_t1", K::attention, [](Graph& g) { return att(g, 3, 1, 1, 5, 5, 0.44f); }},
      {"attention_cached", K::attention_cached, [](Graph& g) {
         return g.add(K::attention_cached,
                      {g.input("qkv", {3, 2, 2 * (2 * 3 + 2)}), g.input("cache", {3, 6, 2 * (3 + 2)}),
                       g.input("cache_len@5", {3}, DType::i32)},
                      AttentionAttrs{2, 3, 2, 0.6f}, "out");
       }},
      {"cross_entropy", K::cross_entropy, [](Graph& g) {
         return g.add(K::cross_entropy, {p(g, "logits", {2, 3, 13}), g.input("targets_ignore@13", {2, 3}, DType::i32)},
                      NoAttrs{}, "out");
       }},
      {"cross_entropy_vocab1", K::cross_entropy, [](Graph& g) {
         return g.add(K::cross_entropy, {p(g, "logits", {4, 1}), g.input("targets@1", {4}, DType::i32)}, NoAttrs{}, "out");
       }},
      {"cross_entropy_wide", K::cross_entropy, [](Graph& g) {
         return g.add(K::cross_entropy, {p(g, "logits", {3, 1031}), g.input("targets@1031", {3}, DType::i32)}, NoAttrs{},
                      "out");
       }},
  };
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> out = base_cases();
  const size_t n = out.size();
  for (auto [suffix, mag] : {std::pair{"@x100", 100.0}, std::pair{"@x1e-3", 1e-3}})
    for (size_t i = 0; i < n; ++i) {
      OpCase c = out[i];
      if (c.op == OpKind::reshape) continue;  // a view: nothing computes
      c.name += suffix;
      c.magnitude = mag;
      out.push_back(std::move(c));
    }
  return out;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = all_cases();
  return cases;
}

RefTensor random_leaf(const Node& n, std::mt19937& rng, double magnitude) {
  RefTensor t(n.shape);
  if (n.dtype == DType::i32) {
    auto at = n.name.rfind('@');
    check(at != std::string::npos, "op case: id input '", n.name, "' must end in @<max>");
    int hi = std::stoi(n.name.substr(at + 1));
    std::uniform_int_distribution<int> d(0, hi - 1);
    for (auto& v : t.data) v = d(rng);
    if (n.name.find("ignore") != std::string::npos && t.data.size() > 1) t.data[1] = -1;
    return t;
  }
  std::normal_distribution<double> d(0.0, magnitude);
  for (auto& v : t.data) v = d(rng);
  return t;
}

CaseGraph build_case(const OpCase& c, uint64_t seed) {
  CaseGraph cg;
  Graph& g = cg.graph;
  cg.out = c.build(g);
  NodeId weights = g.input("loss_weights", g.node(cg.out).shape);
  NodeId weighted = g.add(OpKind::mul, {cg.out, weights}, NoAttrs{}, "weighted");
  cg.loss = g.add(OpKind::sum, {weighted}, NoAttrs{}, "loss");
  for (const Node& n : g.nodes())
    if (n.op == OpKind::param) cg.wrt.push_back(n.id);
  cg.backward = build_backward(g, cg.loss, cg.wrt);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (const Node& n : g.nodes())
    if ((n.op == OpKind::input || n.op == OpKind::param) && n.id != cg.backward.seed)
      cg.leaves[n.id] = random_leaf(n, rng, n.name == "loss_weights" ? 1.0 : c.magnitude);
  cg.leaves[cg.backward.seed] = RefTensor(Shape{});
  cg.leaves[cg.backward.seed].data[0] = 1.0;
  return cg;
}

}  // namespace tandem::qualify
