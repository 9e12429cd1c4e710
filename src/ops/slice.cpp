// Windows of the last dim. slice_last(x) = x[..., start:start+len]; pad_last(g) is its adjoint
// (g placed at the window, zeros elsewhere: shape [..., full]); concat_last(a, b) = [a | b].
#include "ops/op.h"

namespace tandem {
namespace {

Shape slice_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<SliceAttrs>();
  expect_rank_at_least(n, *in[0], 1);
  check(a.full == in[0]->shape.back() && a.start >= 0 && a.len > 0 && a.start + a.len <= a.full, "slice_last at node '",
        n.name, "': window [", a.start, ", ", a.start + a.len, ") does not fit last dim ", in[0]->shape.back());
  Shape s = in[0]->shape;
  s.back() = a.len;
  return s;
}
void slice_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<SliceAttrs>();
  const int64_t rows = in[0]->numel() / a.full;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < a.len; ++c)
      out.data[static_cast<size_t>(r * a.len + c)] = in[0]->data[static_cast<size_t>(r * a.full + a.start + c)];
}
void slice_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::pad_last, {b.grad_out()}, b.node().attrs, "x")); }

Shape pad_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<SliceAttrs>();
  check(in[0]->shape.back() == a.len && a.start >= 0 && a.start + a.len <= a.full, "pad_last at node '", n.name,
        "': input last dim ", in[0]->shape.back(), " does not match the window");
  Shape s = in[0]->shape;
  s.back() = a.full;
  return s;
}
void pad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<SliceAttrs>();
  const int64_t rows = in[0]->numel() / a.len;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < a.len; ++c)
      out.data[static_cast<size_t>(r * a.full + a.start + c)] = in[0]->data[static_cast<size_t>(r * a.len + c)];
}
void pad_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::slice_last, {b.grad_out()}, b.node().attrs, "x")); }

Shape concat_shape(const Node& n, std::span<const Node* const> in) {
  expect_rank_at_least(n, *in[0], 1);
  Shape a = in[0]->shape, b = in[1]->shape;
  check(a.size() == b.size() && std::equal(a.begin(), a.end() - 1, b.begin()), "concat_last at node '", n.name,
        "': ", shape_str(a), " and ", shape_str(b), " differ before the last dim");
  a.back() += b.back();
  return a;
}
void concat_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  const int64_t la = in[0]->shape.back(), lb = in[1]->shape.back(), rows = in[0]->numel() / la;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < la; ++c) out.data[static_cast<size_t>(r * (la + lb) + c)] = in[0]->data[static_cast<size_t>(r * la + c)];
    for (int64_t c = 0; c < lb; ++c) out.data[static_cast<size_t>(r * (la + lb) + la + c)] = in[1]->data[static_cast<size_t>(r * lb + c)];
  }
}
void concat_bwd(GradBuilder& b) {
  const int64_t la = b.input(0).shape.back(), lb = b.input(1).shape.back();
  b.to(0, b.add(OpKind::slice_last, {b.grad_out()}, SliceAttrs{0, la, la + lb}, "a"));
  b.to(1, b.add(OpKind::slice_last, {b.grad_out()}, SliceAttrs{la, lb, la + lb}, "b"));
}

}  // namespace

extern const OpDef slice_last_def{"slice_last", 1, slice_shape, slice_ref, slice_bwd};
extern const OpDef pad_last_def{"pad_last", 1, pad_shape, pad_ref, pad_bwd};
extern const OpDef concat_last_def{"concat_last", 2, concat_shape, concat_ref, concat_bwd};

}  // namespace tandem
