#include "ops/matmul.h"

#include "ops/op.h"

namespace tandem {

MatmulDims matmul_dims(const Node& node, const Shape& a, const Shape& b) {
  const auto& at = node.attr<MatmulAttrs>();
  MatmulDims d;
  d.trans_a = at.trans_a;
  d.trans_b = at.trans_b;
  auto fail = [&] {
    return Error("matmul at node '" + node.name + "': cannot multiply " + shape_str(a) +
                 (at.trans_a ? "^T" : "") + " by " + shape_str(b) + (at.trans_b ? "^T" : ""));
  };
  if (a.empty()) throw fail();
  if (b.size() == 2) {
    d.a_cols = a.back();
    d.a_rows = numel(a) / d.a_cols;
  } else {
    if (a.size() != b.size() || a.size() < 3 ||
        !std::equal(a.begin(), a.end() - 2, b.begin()))
      throw fail();
    d.batched = true;
    d.a_rows = a[a.size() - 2];
    d.a_cols = a.back();
    d.batch = numel(a) / (d.a_rows * d.a_cols);
  }
  d.b_rows = b[b.size() - 2];
  d.b_cols = b.back();
  d.m = d.trans_a ? d.a_cols : d.a_rows;
  d.k = d.trans_a ? d.a_rows : d.a_cols;
  int64_t kb = d.trans_b ? d.b_cols : d.b_rows;
  d.n = d.trans_b ? d.b_rows : d.b_cols;
  if (kb != d.k) throw fail();
  return d;
}

namespace {

Shape mm_shape(const Node& n, std::span<const Node* const> in) {
  expect_rank_at_least(n, *in[0], 1);
  expect_rank_at_least(n, *in[1], 2);
  MatmulDims d = matmul_dims(n, in[0]->shape, in[1]->shape);
  Shape s;
  if (d.batched) {
    s.assign(in[0]->shape.begin(), in[0]->shape.end() - 2);
    s.push_back(d.m);
  } else if (d.trans_a) {
    s = {d.m};
  } else {
    s.assign(in[0]->shape.begin(), in[0]->shape.end() - 1);
  }
  s.push_back(d.n);
  return s;
}

void mm_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  MatmulDims d = matmul_dims(n, in[0]->shape, in[1]->shape);
  const double* A = in[0]->data.data();
  const double* Bm = in[1]->data.data();
  for (int64_t p = 0; p < d.batch; ++p) {
    const double* a = A + p * d.a_rows * d.a_cols;
    const double* b = Bm + (d.batched ? p * d.b_rows * d.b_cols : 0);
    double* o = out.data.data() + p * d.m * d.n;
    for (int64_t i = 0; i < d.m; ++i)
      for (int64_t j = 0; j < d.n; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < d.k; ++k) {
          double av = d.trans_a ? a[k * d.a_cols + i] : a[i * d.a_cols + k];
          double bv = d.trans_b ? b[j * d.b_cols + k] : b[k * d.b_cols + j];
          acc += av * bv;
        }
        o[i * d.n + j] = acc;
      }
  }
}

// out = op(A).op(B). The adjoints, with G = dout:
//   C = A B    : dA = G B^T,   dB = A^T G
//   C = A B^T  : dA = G B,     dB = G^T A
//   C = A^T B  : dA = B G^T,   dB = A G
void mm_bwd(GradBuilder& b) {
  const auto& at = b.node().attr<MatmulAttrs>();
  check(!(at.trans_a && at.trans_b), "matmul at node '", b.node().name,
        "': backward of A^T B^T is not defined; transpose the operands instead");
  NodeId A = b.in(0), B = b.in(1), G = b.grad_out();
  // With a 2-D b, a's leading dims are flattened rows: contracting over them (dB) needs a and dout
  // as explicit 2-D views, or matmul would read them as a batch.
  NodeId A2 = A, G2 = G;
  if (b.input(1).shape.size() == 2 && !at.trans_a && b.input(0).shape.size() > 2) {
    const Shape& as = b.input(0).shape;
    const Shape& gs = b.graph().node(G).shape;
    A2 = b.add(OpKind::reshape, {A}, ShapeAttrs{{rows_of(as), as.back()}}, "a2d");
    G2 = b.add(OpKind::reshape, {G}, ShapeAttrs{{rows_of(gs), gs.back()}}, "dout2d");
  }
  if (!at.trans_a && !at.trans_b) {
    if (b.needs(0)) b.to(0, b.like_input(b.add(OpKind::matmul, {G, B}, MatmulAttrs{false, true}, "a"), 0, "a.view"));
    if (b.needs(1)) b.to(1, b.like_input(b.add(OpKind::matmul, {A2, G2}, MatmulAttrs{true, false}, "b"), 1, "b.view"));
  } else if (at.trans_b) {
    if (b.needs(0)) b.to(0, b.like_input(b.add(OpKind::matmul, {G, B}, MatmulAttrs{false, false}, "a"), 0, "a.view"));
    if (b.needs(1)) b.to(1, b.like_input(b.add(OpKind::matmul, {G2, A2}, MatmulAttrs{true, false}, "b"), 1, "b.view"));
  } else {
    if (b.needs(0)) b.to(0, b.like_input(b.add(OpKind::matmul, {B, G}, MatmulAttrs{false, true}, "a"), 0, "a.view"));
    if (b.needs(1)) b.to(1, b.like_input(b.add(OpKind::matmul, {A, G}, MatmulAttrs{false, false}, "b"), 1, "b.view"));
  }
}

}  // namespace

extern const OpDef matmul_def{"matmul", 2, mm_shape, mm_ref, mm_bwd};

}  // namespace tandem
