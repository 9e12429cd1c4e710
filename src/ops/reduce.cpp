// Reductions. sum(x) -> [] (a scalar); sum_to(x, shape) sums x's leading dims away so that the
// result has `shape`, a suffix of x's shape; broadcast(x, shape) is its adjoint.
#include "ops/op.h"

namespace tandem {
namespace {

Shape sum_shape(const Node&, std::span<const Node* const>) { return {}; }
void sum_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  double acc = 0;
  for (double v : in[0]->data) acc += v;
  out.data[0] = acc;
}
void sum_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::broadcast, {b.grad_out()}, ShapeAttrs{b.input(0).shape}, "x"));
}

Shape sum_to_shape(const Node& n, std::span<const Node* const> in) {
  const Shape& s = n.attr<ShapeAttrs>().shape;
  check(is_suffix(s, in[0]->shape), "sum_to at node '", n.name, "': ", shape_str(s),
        " is not a suffix of input shape ", shape_str(in[0]->shape));
  return s;
}
void sum_to_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  size_t n = out.data.size();
  for (size_t i = 0; i < in[0]->data.size(); ++i) out.data[i % n] += in[0]->data[i];
}
void sum_to_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::broadcast, {b.grad_out()}, ShapeAttrs{b.input(0).shape}, "x"));
}

Shape broadcast_shape(const Node& n, std::span<const Node* const> in) {
  const Shape& s = n.attr<ShapeAttrs>().shape;
  check(is_suffix(in[0]->shape, s), "broadcast at node '", n.name, "': input shape ",
        shape_str(in[0]->shape), " is not a suffix of ", shape_str(s));
  return s;
}
void broadcast_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  size_t n = in[0]->data.size();
  for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = in[0]->data[i % n];
}
void broadcast_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::sum_to, {b.grad_out()}, ShapeAttrs{b.input(0).shape}, "x"));
}

}  // namespace

extern const OpDef sum_def{"sum", 1, sum_shape, sum_ref, sum_bwd};
extern const OpDef sum_to_def{"sum_to", 1, sum_to_shape, sum_to_ref, sum_to_bwd};
extern const OpDef broadcast_def{"broadcast", 1, broadcast_shape, broadcast_ref, broadcast_bwd};

}  // namespace tandem
