// Multi-head latent attention (DeepSeek-V2/V3) glue.
//
// mla_qkv(q [B,T,H*(dn+dr)], kv [B,T,H*(dn+dv)], k_rope [B,T,dr]) packs the heads into attention's
// layout (ops/attention.h): q as is; key h = [kv_h[0:dn] | k_rope] (the rope key is shared by all
// heads); value h = kv_h[dn:dn+dv]. mla_qkv_grad(dqkv) returns the gradient of input `part`.
//
// attention_latent(q [B,Tn,H*(dn+dr)], entries [B,Tn,L+dr], cache [B,Tmax,L+dr], kv_b [H*(dn+dv), L],
// cache_len [B] i32) -> [B,Tn,H*dv] is decoding on the compressed cache: each cache row holds a
// token's normalised latent (L = kv_lora_rank) and its rotated rope key; the op first writes the
// new entries at cache_len[b].. (a state op), then attends. Its kernels absorb kv_b into the query
// and the output (never expanding per-head keys and values); the reference expands them.
#include "ops/attention.h"
#include "ops/op.h"

namespace tandem {
namespace {

struct MlaDims {
  int64_t B, T, H, dn, dr, dv;
  int64_t wq() const { return H * (dn + dr); }
  int64_t wkv() const { return H * (dn + dv); }
  int64_t wout() const { return 2 * H * (dn + dr) + H * dv; }
};

MlaDims mla_dims(const Node& n, const Shape& q) {
  const auto& a = n.attr<MlaAttrs>();
  check(q.size() == 3 && a.n_head > 0 && a.d_nope >= 0 && a.d_rope > 0 && a.d_v > 0, op_name(n.op), " at node '",
        n.name, "': q must be [B, T, H*(dn+dr)] with positive sizes, got ", shape_str(q));
  MlaDims d{q[0], q[1], a.n_head, a.d_nope, a.d_rope, a.d_v};
  check(q[2] == d.wq(), op_name(n.op), " at node '", n.name, "': q width ", q[2], " != n_head*(d_nope+d_rope) = ", d.wq());
  return d;
}

Shape qkv_shape(const Node& n, std::span<const Node* const> in) {
  const MlaDims d = mla_dims(n, in[0]->shape);
  check(in[1]->shape == Shape{d.B, d.T, d.wkv()} && in[2]->shape == Shape{d.B, d.T, d.dr}, "mla_qkv at node '", n.name,
        "': kv ", shape_str(in[1]->shape), " / k_rope ", shape_str(in[2]->shape), " do not fit q ", shape_str(in[0]->shape));
  return {d.B, d.T, d.wout()};
}

void qkv_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const MlaDims d = mla_dims(n, in[0]->shape);
  const int64_t dqk = d.dn + d.dr;
  for (int64_t r = 0; r < d.B * d.T; ++r) {
    const double* q = in[0]->data.data() + r * d.wq();
    const double* kv = in[1]->data.data() + r * d.wkv();
    const double* kr = in[2]->data.data() + r * d.dr;
    double* o = out.data.data() + r * d.wout();
    std::copy(q, q + d.wq(), o);
    for (int64_t h = 0; h < d.H; ++h) {
      double* k = o + d.H * dqk + h * dqk;
      std::copy(kv + h * (d.dn + d.dv), kv + h * (d.dn + d.dv) + d.dn, k);
      std::copy(kr, kr + d.dr, k + d.dn);
      std::copy(kv + h * (d.dn + d.dv) + d.dn, kv + (h + 1) * (d.dn + d.dv), o + 2 * d.H * dqk + h * d.dv);
    }
  }
}

void qkv_bwd(GradBuilder& b) {
  for (int part = 0; part < 3; ++part) {
    MlaAttrs a = b.node().attr<MlaAttrs>();
    a.part = part;
    b.to(part, b.add(OpKind::mla_qkv_grad, {b.grad_out()}, a, part == 0 ? "q" : part == 1 ? "kv" : "k_rope"));
  }
}

// The gradient of one input: the matching slices of dqkv; the shared rope key sums over heads.
Shape qkv_grad_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<MlaAttrs>();
  check(in[0]->shape.size() == 3, "mla_qkv_grad at node '", n.name, "': dqkv must be [B, T, W]");
  const int64_t B = in[0]->shape[0], T = in[0]->shape[1];
  const MlaDims d{B, T, a.n_head, a.d_nope, a.d_rope, a.d_v};
  check(in[0]->shape[2] == d.wout() && a.part >= 0 && a.part < 3, "mla_qkv_grad at node '", n.name, "': bad dqkv width or part");
  return a.part == 0 ? Shape{B, T, d.wq()} : a.part == 1 ? Shape{B, T, d.wkv()} : Shape{B, T, d.dr};
}

void qkv_grad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<MlaAttrs>();
  const MlaDims d{in[0]->shape[0], in[0]->shape[1], a.n_head, a.d_nope, a.d_rope, a.d_v};
  const int64_t dqk = d.dn + d.dr;
  for (int64_t r = 0; r < d.B * d.T; ++r) {
    const double* g = in[0]->data.data() + r * d.wout();
    if (a.part == 0) {
      std::copy(g, g + d.wq(), out.data.begin() + r * d.wq());
      continue;
    }
    for (int64_t h = 0; h < d.H; ++h) {
      const double* gk = g + d.H * dqk + h * dqk;
      if (a.part == 1) {
        double* o = out.data.data() + r * d.wkv() + h * (d.dn + d.dv);
        std::copy(gk, gk + d.dn, o);
        std::copy(g + 2 * d.H * dqk + h * d.dv, g + 2 * d.H * dqk + (h + 1) * d.dv, o + d.dn);
      } else {
        for (int64_t c = 0; c < d.dr; ++c) out.data[static_cast<size_t>(r * d.dr + c)] += gk[d.dn + c];
      }
    }
  }
}

Shape latent_shape(const Node& n, std::span<const Node* const> in) {
  const MlaDims d = mla_dims(n, in[0]->shape);
  const Shape& e = in[1]->shape;
  const Shape& c = in[2]->shape;
  check(e.size() == 3 && e[0] == d.B && e[1] == d.T && e[2] > d.dr, "attention_latent at node '", n.name, "': entries ",
        shape_str(e), " must be [B, Tn, kv_lora_rank + d_rope]");
  const int64_t L = e[2] - d.dr;
  check(c.size() == 3 && c[0] == d.B && c[2] == e[2] && c[1] >= d.T, "attention_latent at node '", n.name, "': cache ",
        shape_str(c), " does not fit entries ", shape_str(e));
  check(in[3]->shape == Shape{d.wkv(), L}, "attention_latent at node '", n.name, "': kv_b weight ", shape_str(in[3]->shape),
        " must be [", d.wkv(), ", ", L, "]");
  expect_dtype(n, *in[4], DType::i32);
  check(in[4]->shape == Shape{d.B}, "attention_latent at node '", n.name, "': cache_len must be [", d.B, "]");
  return {d.B, d.T, d.H * d.dv};
}

// Reference: per sequence, expand every cached and new latent through kv_b into per-head keys and
// values, and run the plain attention reference on the assembled qkv.
void latent_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const MlaDims d = mla_dims(n, in[0]->shape);
  const auto& ma = n.attr<MlaAttrs>();
  const int64_t We = in[1]->shape[2], L = We - d.dr, Tmax = in[2]->shape[1], dqk = d.dn + d.dr;
  const double* Wb = in[3]->data.data();
  for (int64_t b = 0; b < d.B; ++b) {
    const auto len = static_cast<int64_t>(in[4]->data[static_cast<size_t>(b)]);
    const int64_t total = len + d.T;
    check(len >= 0 && total <= Tmax, "attention_latent at node '", n.name, "': cache overflow (", total, " > ", Tmax, ")");
    RefTensor qkv(Shape{1, total, d.wout()});
    for (int64_t t = 0; t < total; ++t) {
      const double* e = t < len ? in[2]->data.data() + (b * Tmax + t) * We : in[1]->data.data() + (b * d.T + t - len) * We;
      double* row = qkv.data.data() + t * d.wout();
      if (t >= len) std::copy_n(in[0]->data.data() + (b * d.T + t - len) * d.wq(), d.wq(), row);
      for (int64_t h = 0; h < d.H; ++h)
        for (int64_t j = 0; j < d.dn + d.dv; ++j) {
          double acc = 0;
          for (int64_t l = 0; l < L; ++l) acc += Wb[(h * (d.dn + d.dv) + j) * L + l] * e[l];
          if (j < d.dn) row[d.H * dqk + h * dqk + j] = acc;
          else row[2 * d.H * dqk + h * d.dv + (j - d.dn)] = acc;
        }
      for (int64_t h = 0; h < d.H; ++h) std::copy_n(e + L, d.dr, row + d.H * dqk + h * dqk + d.dn);
    }
    Node plain = n;
    plain.attrs = AttentionAttrs{static_cast<int>(d.H), static_cast<int>(dqk), static_cast<int>(d.dv), ma.scale};
    RefTensor all(Shape{1, total, d.H * d.dv});
    op_def(OpKind::attention).reference(plain, std::vector<const RefTensor*>{&qkv}, all);
    std::copy(all.data.begin() + len * d.H * d.dv, all.data.end(), out.data.begin() + b * d.T * d.H * d.dv);
  }
}

}  // namespace

extern const OpDef mla_qkv_def{"mla_qkv", 3, qkv_shape, qkv_ref, qkv_bwd};
extern const OpDef mla_qkv_grad_def{"mla_qkv_grad", 1, qkv_grad_shape, qkv_grad_ref, nullptr};
extern const OpDef attention_latent_def{"attention_latent", 5, latent_shape, latent_ref, nullptr};

}  // namespace tandem
