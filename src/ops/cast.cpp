// cast: the one place a value changes dtype (f32 <-> bf16; q8_0 weights dequantized to f32/bf16). Mixed-precision graphs say with cast
// nodes where values are rounded; every other op keeps its inputs' dtype (ops/op.h default_dtype).
// The reference rounds exactly as the kernels must (core/dtype.h: RNE, NaN kept quiet); the
// backward rule casts the gradient back to the input's dtype (the adjoint of a rounding is the
// identity, as in PyTorch's autocast).
#include "ops/op.h"

namespace tandem {
namespace {

Shape cast_shape(const Node& n, std::span<const Node* const> in) {
  const DType to = n.attr<CastAttrs>().to, from = in[0]->dtype;
  check((is_float(from) || from == DType::q8_0) && is_float(to), "cast at node '", n.name,
        "': casts between f32 and bf16, or dequantizes q8_0; got ", dtype_name(from), " -> ", dtype_name(to));
  return in[0]->shape;
}

DType cast_dtype(const Node& n, std::span<const Node* const>) { return n.attr<CastAttrs>().to; }

void cast_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const bool to_bf16 = n.attr<CastAttrs>().to == DType::bf16;
  for (size_t i = 0; i < out.data.size(); ++i) {
    const float f = static_cast<float>(in[0]->data[i]);
    out.data[i] = to_bf16 ? round_bf16(f) : f;
  }
}

// (A q8_0 input's reference values are already its dequantized values: the cast is exact.)
void cast_bwd(GradBuilder& b) {
  const DType from = b.input(0).dtype;
  NodeId g = b.grad_out();
  if (b.graph().node(g).dtype != from) g = b.add(OpKind::cast, {g}, CastAttrs{from}, "x");
  b.to(0, g);
}

}  // namespace

extern const OpDef cast_def{"cast", 1, cast_shape, cast_ref, cast_bwd, cast_dtype};

}  // namespace tandem
