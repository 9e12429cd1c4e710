// The emulator's own cases (check.sh): larger shapes than `tandem conform`'s (several tiles,
// blocks and chunks per op, long caches, empty experts), each node run in isolation as conform
// does (float64 reference inputs rounded to f32, sentinel bytes around the output), twice, with a
// bitwise determinism check. A row passes when its error is within the conformance bound or no
// worse than the CPU backend's on the same node (some cases sit at f32's limit on every backend).
// `emu_harness cuda errors`: device-side data errors are reported once, naming the node.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>

#include "backends/registry.h"
#include "core/backend.h"
#include "core/reference.h"
#include "core/tensor.h"
#include "qualify/compare.h"
#include "qualify/op_cases.h"
#include "qualify/tolerance.h"

using namespace tandem;
using qualify::OpCase;

namespace {

NodeId p(Graph& g, const char* name, Shape s) { return g.param(name, s); }

std::vector<OpCase> cases() {
  using K = OpKind;
  auto att = [](int64_t B, int64_t T, int H, int dqk, int dv) {
    return [=](Graph& g) {
      return g.add(K::attention, {p(g, "qkv", {B, T, H * (2 * dqk + dv)})}, AttentionAttrs{H, dqk, dv, 1.0f / std::sqrt(float(dqk))}, "out");
    };
  };
  std::vector<OpCase> c = {
      {"att_gpt2_dims", K::attention, att(2, 100, 2, 64, 64)},
      {"att_mla_dims", K::attention, att(1, 70, 2, 96, 64)},
      {"att_big_dims", K::attention, att(1, 40, 1, 192, 128)},
      {"att_odd", K::attention, att(3, 33, 3, 7, 5)},
      {"att_cached_long", K::attention_cached, [](Graph& g) {
         return g.add(K::attention_cached,
                      {g.input("qkv", {2, 37, 2 * (2 * 16 + 8)}), g.input("cache", {2, 140, 2 * (16 + 8)}),
                       g.input("cache_len@100", {2}, DType::i32)},
                      AttentionAttrs{2, 16, 8, 0.3f}, "out");
       }},
      {"att_cached_decode", K::attention_cached, [](Graph& g) {
         return g.add(K::attention_cached,
                      {g.input("qkv", {5, 1, 3 * (2 * 8 + 8)}), g.input("cache", {5, 90, 3 * (8 + 8)}),
                       g.input("cache_len@89", {5}, DType::i32)},
                      AttentionAttrs{3, 8, 8, 0.3f}, "out");
       }},
      {"latent_long", K::attention_latent, [](Graph& g) {
         return g.add(K::attention_latent,
                      {g.input("q", {2, 3, 4 * (8 + 4)}), g.input("entries", {2, 3, 40 + 4}), g.input("cache", {2, 600, 40 + 4}),
                       g.input("kv_b", {4 * (8 + 6), 40}), g.input("cache_len@590", {2}, DType::i32)},
                      MlaAttrs{4, 8, 4, 6, 0.25f}, "out");
       }},
      {"embedding_grad_many", K::embedding, [](Graph& g) {
         return g.add(K::embedding, {g.input("ids@37", {3, 300}, DType::i32), p(g, "table", {37, 70})}, NoAttrs{}, "out");
       }},
      {"embedding_grad_one_id", K::embedding, [](Graph& g) {
         return g.add(K::embedding, {g.input("ids@1", {700}, DType::i32), p(g, "table", {3, 5})}, NoAttrs{}, "out");
       }},
      {"gmm_big", K::grouped_matmul, [](Graph& g) {
         return g.add(K::grouped_matmul, {p(g, "x", {300, 65}), p(g, "w", {5, 70, 65}), g.input("ids@3", {150, 2}, DType::i32)},
                      GroupedMatmulAttrs{false}, "out");
       }},
      {"gmm_big_t", K::grouped_matmul, [](Graph& g) {
         return g.add(K::grouped_matmul, {p(g, "x", {300, 70}), p(g, "w", {5, 70, 131}), g.input("ids@4", {100, 3}, DType::i32)},
                      GroupedMatmulAttrs{true}, "out");
       }},
      {"dispatch_combine", K::moe_combine, [](Graph& g) {
         const RouteAttrs r{6, 3, 1, 1, true, 1.0f};
         NodeId ids = g.input("ids@6", {400, 3}, DType::i32);
         NodeId xs = g.add(K::moe_dispatch, {p(g, "x", {400, 33}), ids}, r, "dispatch");
         return g.add(K::moe_combine, {xs, p(g, "w", {400, 3}), ids}, r, "out");
       }},
      {"route_many", K::topk_route, [](Graph& g) {
         const RouteAttrs r{64, 6, 8, 3, true, 2.5f};
         NodeId s = g.add(K::sigmoid, {p(g, "logits", {300, 64})}, NoAttrs{}, "scores");
         NodeId idx = g.add(K::topk_route, {s, g.input("bias", {64})}, r, "route");
         return g.add(K::route_weights, {s, idx}, r, "out");
       }},
      {"ce_many_rows", K::cross_entropy, [](Graph& g) {
         return g.add(K::cross_entropy, {p(g, "logits", {40, 517}), g.input("targets_ignore@517", {40}, DType::i32)}, NoAttrs{}, "out");
       }},
      {"ln_many_rows", K::layernorm, [](Graph& g) {
         return g.add(K::layernorm, {p(g, "x", {600, 33}), p(g, "w", {33}), p(g, "b", {33})}, NormAttrs{1e-5f}, "out");
       }},
      {"rms_many_rows", K::rmsnorm, [](Graph& g) { return g.add(K::rmsnorm, {p(g, "x", {700, 19}), p(g, "w", {19})}, NormAttrs{1e-6f}, "out"); }},
      {"sum_huge", K::sum, [](Graph& g) { return g.add(K::sum, {p(g, "a", {5, 20011})}, NoAttrs{}, "out"); }},
      {"sum_to_huge", K::sum_to, [](Graph& g) { return g.add(K::sum_to, {p(g, "a", {1300, 7})}, ShapeAttrs{{7}}, "out"); }},
      {"softmax_rows", K::softmax, [](Graph& g) { return g.add(K::softmax, {p(g, "x", {50, 300})}, NoAttrs{}, "out"); }},
      {"matmul_batched_big", K::matmul, [](Graph& g) {
         return g.add(K::matmul, {p(g, "a", {3, 2, 17, 9}), p(g, "b", {3, 2, 9, 13})}, MatmulAttrs{false, false}, "out");
       }},
      {"matmul_tn_big", K::matmul, [](Graph& g) {
         return g.add(K::matmul, {p(g, "a", {4, 10, 17}), p(g, "b", {40, 9})}, MatmulAttrs{true, false}, "out");
       }},
      {"rope_big", K::rope, [](Graph& g) {
         RopeAttrs a;
         a.rot_offset = 3;
         a.rot_dim = 64;
         a.interleaved = true;
         return g.add(K::rope, {p(g, "x", {2, 9, 3, 70}), g.input("pos@5000", {2, 9}, DType::i32)}, a, "out");
       }},
  };
  std::vector<OpCase> out = c;
  for (const OpCase& x : c) {
    OpCase y = x;
    y.name += "@x100";
    y.magnitude = 100;
    out.push_back(y);
  }
  return out;
}

const size_t kGuard = std::getenv("HARNESS_GUARD") ? std::strtoul(std::getenv("HARNESS_GUARD"), nullptr, 10) : 64;

Tensor guarded(Backend& be, const Shape& shape, DType dt) {
  Tensor t;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dt;
  t.offset = kGuard;
  t.storage = std::make_shared<Storage>(&be, t.nbytes() + 2 * kGuard);
  return t;
}

void upload(Backend& be, const Tensor& t, const RefTensor& r) {
  std::vector<unsigned char> bytes(t.nbytes());
  for (size_t i = 0; i < r.data.size(); ++i) {
    if (t.dtype == DType::i32) {
      const auto v = static_cast<int32_t>(r.data[i]);
      std::memcpy(&bytes[4 * i], &v, 4);
    } else {
      const auto v = static_cast<float>(r.data[i]);
      std::memcpy(&bytes[4 * i], &v, 4);
    }
  }
  be.upload(t.storage->handle, t.offset, bytes.data(), bytes.size());
}

struct Result {
  std::string status = "PASS";
  double nmse = 0;
};

// One node in isolation, twice (inputs re-uploaded: state ops write their cache).
Result run_node(Backend& be, const qualify::CaseGraph& cg, const std::vector<RefTensor>& ref, const Node& n) {
  Result res;
  std::vector<RefTensor> ins_ref;
  std::vector<Tensor> ins;
  for (NodeId id : n.inputs) {
    const Node& in = cg.graph.node(id);
    RefTensor r = ref[static_cast<size_t>(id)];
    if (in.dtype == DType::f32)
      for (double& v : r.data) v = static_cast<float>(v);
    ins.push_back(guarded(be, in.shape, in.dtype));
    ins_ref.push_back(std::move(r));
  }
  std::vector<const RefTensor*> ptrs;
  for (const RefTensor& r : ins_ref) ptrs.push_back(&r);
  RefTensor want(n.shape);
  op_def(n.op).reference(n, ptrs, want);
  std::vector<unsigned char> first;
  for (int rep = 0; rep < 2; ++rep) {
    for (size_t k = 0; k < ins.size(); ++k) upload(be, ins[k], ins_ref[k]);
    Tensor out = guarded(be, n.shape, n.dtype);
    std::vector<unsigned char> buf(out.storage->bytes, 0xCD);
    be.upload(out.storage->handle, 0, buf.data(), buf.size());
    try {
      be.execute(n, ins, out);
      be.sync();
      be.download(buf.data(), out.storage->handle, 0, buf.size());
    } catch (const std::exception& e) {
      res.status = std::string("ERROR ") + e.what();
      return res;
    }
    for (size_t i = 0; i < buf.size(); ++i)
      if ((i < kGuard || i >= kGuard + out.nbytes()) && buf[i] != 0xCD) {
        res.status = "OUT-OF-BOUNDS WRITE";
        return res;
      }
    std::vector<unsigned char> body(buf.begin() + static_cast<long>(kGuard), buf.begin() + static_cast<long>(kGuard + out.nbytes()));
    if (rep == 1) {
      if (body != first) res.status = "NONDETERMINISTIC";
      break;
    }
    first = body;
    std::vector<float> got(static_cast<size_t>(out.numel()));
    for (size_t i = 0; i < got.size(); ++i) {
      if (n.dtype == DType::i32) {
        int32_t v;
        std::memcpy(&v, &body[4 * i], 4);
        got[i] = static_cast<float>(v);
      } else {
        std::memcpy(&got[i], &body[4 * i], 4);
      }
    }
    const qualify::ErrorStats st = qualify::compare(got, want.data);
    res.nmse = st.nan || st.inf_mismatch ? INFINITY : st.nmse;
    if (st.nan || st.inf_mismatch) res.status = "FAIL " + st.describe();
  }
  return res;
}

}  // namespace

int errors(Backend& be) {
  int bad = 0;
  auto expect_error = [&](const char* what, auto f) {
    try {
      f();
      be.sync();
      std::printf("%s: NO ERROR\n", what);
      ++bad;
    } catch (const std::exception& e) {
      std::printf("%s: %s\n", what, e.what());
    }
  };
  {
    Graph g;
    NodeId ids = g.input("ids", {2, 3}, DType::i32);
    NodeId tab = g.param("table", {7, 4});
    NodeId out = g.add(OpKind::embedding, {ids, tab}, NoAttrs{}, "model.wte");
    Tensor ti = Tensor::from_host_i32(be, {2, 3}, std::vector<int32_t>{1, 2, 99, 3, -4, 0});
    Tensor tt = Tensor::from_host(be, {7, 4}, std::vector<float>(28, 1.0f));
    Tensor to = Tensor::empty(be, {2, 3, 4}, DType::f32);
    std::vector<Tensor> ins{ti, tt};
    expect_error("embedding id 99", [&] { be.execute(g.node(out), ins, to); });
    // the error is reported once, then the backend is usable again
    Tensor ok = Tensor::from_host_i32(be, {2, 3}, std::vector<int32_t>{1, 2, 3, 3, 4, 0});
    std::vector<Tensor> ins2{ok, tt};
    be.execute(g.node(out), ins2, to);
    be.sync();
    std::printf("after the error: %g (want 1)\n", to.to_host()[5]);
  }
  {
    Graph g;
    NodeId qkv = g.input("qkv", {2, 3, 2 * (2 * 4 + 4)});
    NodeId cache = g.input("cache", {2, 5, 2 * (4 + 4)});
    NodeId lens = g.input("lens", {2}, DType::i32);
    NodeId out = g.add(OpKind::attention_cached, {qkv, cache, lens}, AttentionAttrs{2, 4, 4, 0.5f}, "layer.3.attn");
    Tensor a = Tensor::zeros(be, {2, 3, 24}, DType::f32), c = Tensor::zeros(be, {2, 5, 16}, DType::f32);
    Tensor l = Tensor::from_host_i32(be, {2}, std::vector<int32_t>{1, 3});
    Tensor o = Tensor::empty(be, {2, 3, 8}, DType::f32);
    std::vector<Tensor> ins{a, c, l};
    expect_error("cache overflow", [&] { be.execute(g.node(out), ins, o); });
  }
  {
    Graph g;
    NodeId x = g.param("x", {2, 3});
    NodeId ids = g.input("ids", {2, 2}, DType::i32);
    NodeId out = g.add(OpKind::moe_dispatch, {x, ids}, RouteAttrs{4, 2, 1, 1, true, 1.0f}, "layer.1.mlp.dispatch");
    Tensor tx = Tensor::zeros(be, {2, 3}, DType::f32);
    Tensor ti = Tensor::from_host_i32(be, {2, 2}, std::vector<int32_t>{0, 1, 7, 2});
    Tensor to = Tensor::empty(be, {4, 3}, DType::f32);
    std::vector<Tensor> ins{tx, ti};
    expect_error("expert id 7", [&] { be.execute(g.node(out), ins, to); });
  }
  {
    Graph g;
    NodeId lg = g.param("logits", {2, 5});
    NodeId t = g.input("t", {2}, DType::i32);
    NodeId out = g.add(OpKind::cross_entropy, {lg, t}, NoAttrs{}, "loss");
    Tensor tl = Tensor::zeros(be, {2, 5}, DType::f32);
    Tensor tt = Tensor::from_host_i32(be, {2}, std::vector<int32_t>{1, 5});
    Tensor to = Tensor::empty(be, {}, DType::f32);
    std::vector<Tensor> ins{tl, tt};
    expect_error("target 5", [&] { be.execute(g.node(out), ins, to); });
  }
  return bad;
}

int main(int argc, char** argv) {
  auto be = make_backend(argc > 1 ? argv[1] : "cuda");
  if (argc > 2 && std::string(argv[2]) == "errors") return errors(*be);
  auto cpu = make_backend("cpu");
  int fails = 0, rows = 0;
  for (const OpCase& c : cases()) {
    const qualify::CaseGraph cg = qualify::build_case(c);
    const auto ref = run_reference(cg.graph, cg.leaves);
    for (const Node& n : cg.graph.nodes()) {
      if (n.op == OpKind::input || n.op == OpKind::param || n.op == OpKind::reshape) continue;
      if (!(n.id <= cg.out || n.name.find(".bwd.") != std::string::npos)) continue;
      Result r = run_node(*be, cg, ref, n);
      const double bound = n.dtype == DType::i32 ? 0.0 : qualify::tolerance_for(n.op, DType::f32).nmse;
      double cpu_nmse = 0;
      if (r.status == "PASS" && r.nmse > bound) {
        cpu_nmse = run_node(*cpu, cg, ref, n).nmse;
        if (r.nmse > 4 * cpu_nmse) r.status = "FAIL (bound " + std::to_string(bound) + ", cpu " + std::to_string(cpu_nmse) + ")";
      }
      ++rows;
      fails += r.status != "PASS";
      std::printf("%-22s %-24s %-24s %10.3g  %s%s\n", op_name(n.op), c.name.c_str(), n.name.c_str(), r.nmse, r.status.c_str(),
                  cpu_nmse > 0 && r.status == "PASS" ? " (at the cpu's own error)" : "");
    }
  }
  std::printf("\nharness: %d rows, %d not passing\n", rows, fails);
  return fails ? 1 : 0;
}
