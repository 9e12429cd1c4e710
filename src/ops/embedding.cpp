// embedding(ids [...] i32, table [V, C]) -> [..., C]: rows of the table.
// embedding_grad(ids, dout [..., C]) -> [V, C]: scatter-add of dout rows (shape from attrs).
#include "ops/op.h"

namespace tandem {
namespace {

Shape emb_shape(const Node& n, std::span<const Node* const> in) {
  expect_dtype(n, *in[0], DType::i32);
  check(in[1]->shape.size() == 2, "embedding at node '", n.name, "': table '", in[1]->name,
        "' must be [rows, dim], got ", shape_str(in[1]->shape));
  Shape s = in[0]->shape;
  s.push_back(in[1]->shape[1]);
  return s;
}

void emb_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& ids = *in[0];
  const auto& table = *in[1];
  int64_t V = table.shape[0], C = table.shape[1];
  for (int64_t i = 0; i < ids.numel(); ++i) {
    auto id = static_cast<int64_t>(ids.data[static_cast<size_t>(i)]);
    check(id >= 0 && id < V, "embedding at node '", n.name, "': id ", id, " out of range [0, ", V, ")");
    for (int64_t c = 0; c < C; ++c) out.data[static_cast<size_t>(i * C + c)] = table.data[static_cast<size_t>(id * C + c)];
  }
}

void emb_bwd(GradBuilder& b) {
  b.to(1, b.add(OpKind::embedding_grad, {b.in(0), b.grad_out()}, ShapeAttrs{b.input(1).shape}, "table"));
}

Shape emb_grad_shape(const Node& n, std::span<const Node* const> in) {
  expect_dtype(n, *in[0], DType::i32);
  const Shape& s = n.attr<ShapeAttrs>().shape;
  check(s.size() == 2 && in[1]->shape.size() == in[0]->shape.size() + 1 && in[1]->shape.back() == s[1],
        "embedding_grad at node '", n.name, "': dout ", shape_str(in[1]->shape), " does not fit ids ",
        shape_str(in[0]->shape), " and table ", shape_str(s));
  return s;
}

void emb_grad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& ids = *in[0];
  int64_t V = out.shape[0], C = out.shape[1];
  for (int64_t i = 0; i < ids.numel(); ++i) {
    auto id = static_cast<int64_t>(ids.data[static_cast<size_t>(i)]);
    check(id >= 0 && id < V, "embedding_grad at node '", n.name, "': id ", id, " out of range");
    for (int64_t c = 0; c < C; ++c) out.data[static_cast<size_t>(id * C + c)] += in[1]->data[static_cast<size_t>(i * C + c)];
  }
}

}  // namespace

extern const OpDef embedding_def{"embedding", 2, emb_shape, emb_ref, emb_bwd};
extern const OpDef embedding_grad_def{"embedding_grad", 2, emb_grad_shape, emb_grad_ref, nullptr};

}  // namespace tandem
