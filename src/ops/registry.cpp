// The op table, leaves and views, and the shape-check helpers every definition uses.
#include "ops/op.h"

namespace tandem {

const char* op_name(OpKind op) {
  switch (op) {
#define TANDEM_NAME(name) \
  case OpKind::name: return #name;
    TANDEM_OPS(TANDEM_NAME)
#undef TANDEM_NAME
  }
  return "?";
}

void expect_rank_at_least(const Node& n, const Node& in, size_t rank) {
  check(in.shape.size() >= rank, "op ", op_name(n.op), " at node '", n.name, "': input '", in.name,
        "' has shape ", shape_str(in.shape), ", needs rank >= ", rank);
}

void expect_same_shape(const Node& n, const Node& a, const Node& b) {
  check(a.shape == b.shape, "op ", op_name(n.op), " at node '", n.name, "': inputs '", a.name, "' ",
        shape_str(a.shape), " and '", b.name, "' ", shape_str(b.shape), " must have the same shape");
}

void expect_dtype(const Node& n, const Node& in, DType dt) {
  check(in.dtype == dt, "op ", op_name(n.op), " at node '", n.name, "': input '", in.name, "' is ",
        dtype_name(in.dtype), ", expected ", dtype_name(dt));
}

bool is_suffix(const Shape& small, const Shape& big) {
  if (small.size() > big.size()) return false;
  return std::equal(small.begin(), small.end(), big.end() - static_cast<long>(small.size()));
}

DType default_dtype(const Node& n, std::span<const Node* const> inputs) {
  const Node* first = nullptr;
  for (const Node* in : inputs) {
    if (!is_float(in->dtype)) continue;
    if (!first) first = in;
    else
      check(in->dtype == first->dtype, "op ", op_name(n.op), " at node '", n.name, "': inputs '", first->name, "' (",
            dtype_name(first->dtype), ") and '", in->name, "' (", dtype_name(in->dtype),
            ") differ in dtype; insert a cast");
  }
  return first ? first->dtype : DType::f32;
}

NodeId GradBuilder::like_input(NodeId id, int i, const std::string& what) {
  if (g_.node(id).shape == input(i).shape) return id;
  return add(OpKind::reshape, {id}, ShapeAttrs{input(i).shape}, what);
}

namespace {

Shape leaf_shape(const Node& n, std::span<const Node* const>) { return n.shape; }

Shape reshape_shape(const Node& n, std::span<const Node* const> in) {
  const Shape& s = n.attr<ShapeAttrs>().shape;
  check(numel(s) == in[0]->numel(), "reshape at node '", n.name, "': cannot view ",
        shape_str(in[0]->shape), " as ", shape_str(s));
  return s;
}
void reshape_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  out.data = in[0]->data;
}
void reshape_bwd(GradBuilder& b) { b.to(0, b.like_input(b.grad_out(), 0, "reshape")); }

}  // namespace

extern const OpDef embedding_def, embedding_grad_def, matmul_def, add_def, mul_def, scale_def,
    sum_to_def, sum_def, broadcast_def, layernorm_def, layernorm_grad_x_def, layernorm_grad_w_def, rmsnorm_def,
    rmsnorm_grad_x_def, rmsnorm_grad_w_def, gelu_def, gelu_grad_def, silu_def, silu_grad_def,
    softmax_def, softmax_grad_def, attention_def, attention_grad_def, attention_cached_def, cross_entropy_def,
    cross_entropy_grad_def, token_nll_def, token_nll_grad_def, slice_last_def, pad_last_def, concat_last_def, sigmoid_def, sigmoid_grad_def, swiglu_def,
    swiglu_grad_def, rope_def, mla_qkv_def, mla_qkv_grad_def, attention_latent_def, topk_route_def, route_weights_def,
    route_weights_grad_def, moe_dispatch_def, moe_dispatch_grad_def, grouped_matmul_def, grouped_matmul_grad_w_def,
    moe_combine_def, moe_combine_grad_y_def, moe_combine_grad_w_def, seq_balance_loss_def,
    seq_balance_loss_grad_def, shift_tokens_def, ep_dispatch_def, ep_combine_def, ep_ids_def, cast_def;

static const OpDef input_def{"input", 0, leaf_shape, nullptr, nullptr};
static const OpDef param_def{"param", 0, leaf_shape, nullptr, nullptr};
static const OpDef reshape_def{"reshape", 1, reshape_shape, reshape_ref, reshape_bwd,
                               [](const Node&, std::span<const Node* const> in) { return in[0]->dtype; }};

const OpDef& op_def(OpKind op) {
  switch (op) {
#define TANDEM_DEF(name) \
  case OpKind::name: return name##_def;
    TANDEM_OPS(TANDEM_DEF)
#undef TANDEM_DEF
  }
  throw Error("unknown op kind");
}

}  // namespace tandem
