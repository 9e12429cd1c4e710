// Expert-parallel token exchange: ep_dispatch, ep_combine, ep_ids (see ops/expert_parallel.h).
#include "ops/expert_parallel.h"

#include "ops/op.h"

namespace tandem {

namespace {

void check_ep(const Node& n, const Node& idx) {
  const auto& a = n.attr<ExpertParallelAttrs>();
  check(a.ranks >= 1 && a.n_experts % a.ranks == 0, op_name(n.op), " at node '", n.name, "': ", a.n_experts,
        " experts cannot be split evenly over ", a.ranks, " ranks");
  check(idx.shape.size() == 2 && idx.shape[1] == a.top_k, op_name(n.op), " at node '", n.name, "': expert ids ",
        shape_str(idx.shape), " are not [tokens, ", a.top_k, "]");
  expect_dtype(n, idx, DType::i32);
}

void check_one_rank(const Node& n) {
  check(n.attr<ExpertParallelAttrs>().ranks == 1, op_name(n.op), " at node '", n.name,
        "': the float64 reference runs one rank; an exchange between ranks has no single-process reference");
}

Shape dispatch_shape(const Node& n, std::span<const Node* const> in) {
  check_ep(n, *in[1]);
  const int64_t NK = in[1]->numel();
  check(in[0]->shape.size() == 2 && in[0]->shape[0] == NK, "ep_dispatch at node '", n.name, "': rows ",
        shape_str(in[0]->shape), " do not match ids ", shape_str(in[1]->shape));
  return {n.attr<ExpertParallelAttrs>().ranks * NK, in[0]->shape[1]};
}
void identity_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  check_one_rank(n);
  out.data = in[0]->data;
}
void dispatch_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::ep_combine, {b.grad_out(), b.in(1)}, b.node().attrs, "xs")); }

Shape combine_shape(const Node& n, std::span<const Node* const> in) {
  check_ep(n, *in[1]);
  const int64_t NK = in[1]->numel();
  check(in[0]->shape.size() == 2 && in[0]->shape[0] == n.attr<ExpertParallelAttrs>().ranks * NK, "ep_combine at node '",
        n.name, "': rows ", shape_str(in[0]->shape), " do not match ids ", shape_str(in[1]->shape));
  return {NK, in[0]->shape[1]};
}
void combine_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::ep_dispatch, {b.grad_out(), b.in(1)}, b.node().attrs, "yr")); }

Shape ids_shape(const Node& n, std::span<const Node* const> in) {
  check_ep(n, *in[0]);
  return {n.attr<ExpertParallelAttrs>().ranks * in[0]->numel(), 1};
}
void ids_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  check_one_rank(n);
  const int64_t E = n.attr<ExpertParallelAttrs>().n_experts;
  std::vector<int64_t> count(static_cast<size_t>(E), 0);
  for (double id : in[0]->data) {
    check(id >= 0 && id < static_cast<double>(E), "ep_ids at node '", n.name, "': expert id ", id, " out of range");
    ++count[static_cast<size_t>(id)];
  }
  size_t r = 0;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t c = 0; c < count[static_cast<size_t>(e)]; ++c) out.data[r++] = static_cast<double>(e);
}
DType i32_out(const Node&, std::span<const Node* const>) { return DType::i32; }

}  // namespace

extern const OpDef ep_dispatch_def{"ep_dispatch", 2, dispatch_shape, identity_ref, dispatch_bwd};
extern const OpDef ep_combine_def{"ep_combine", 2, combine_shape, identity_ref, combine_bwd};
extern const OpDef ep_ids_def{"ep_ids", 1, ids_shape, ids_ref, nullptr, i32_out};

}  // namespace tandem
