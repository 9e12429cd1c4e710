#include "qualify/op_cases.h"

#include <cmath>

namespace tandem::qualify {

namespace {

NodeId p(Graph& g, const char* name, Shape s) { return g.param(name, s); }
NodeId mm(Graph& g, Shape a, Shape b, bool ta, bool tb) {
  return g.add(OpKind::matmul, {p(g, "a", std::move(a)), p(g, "b", std::move(b))}, MatmulAttrs{ta, tb}, "out");
}
NodeId att(Graph& g, int64_t B, int64_t T, int H, int dqk, int dv, float scale) {
  return g.add(OpKind::attention, {p(g, "qkv", {B, T, H * (2 * dqk + dv)})}, AttentionAttrs{H, dqk, dv, scale}, "out");
}

// Leaves whose scale follows magnitude^power instead of magnitude (power 0: unit at every
// magnitude; -1: the inverse, so that a product with a scaled leaf stays O(1)).
std::function<RefTensor(const Node&, std::mt19937&, double)> leaf_powers(std::map<std::string, double> power) {
  return [power = std::move(power)](const Node& n, std::mt19937& rng, double m) {
    auto it = power.find(n.name);
    return random_leaf(n, rng, it == power.end() ? m : std::pow(m, it->second));
  };
}

// DeepSeekMoE's routed path, as the model builds it: sigmoid router scores of x . gate^T, group-
// limited top-k, normalised weights, tokens grouped per expert, SwiGLU experts, weighted combine.
// The gate scales as 1/magnitude so the router logits stay O(1) (see op_cases.h).
// expert_parallel: the rows also take the expert-parallel exchange (ops/expert_parallel.h) on one
// rank, its only single-process form, so ep_dispatch, ep_ids and ep_combine are conformance rows.
OpCase moe_case(std::string name, int64_t N, int64_t H, int64_t I, RouteAttrs route, bool expert_parallel = false) {
  return {std::move(name), expert_parallel ? OpKind::ep_dispatch : OpKind::moe_combine,
          [=](Graph& g) {
            NodeId x = p(g, "x", {N, H});
            NodeId logits = g.add(OpKind::matmul, {x, p(g, "gate", {route.n_experts, H})}, MatmulAttrs{false, true}, "logits");
            NodeId scores = g.add(OpKind::sigmoid, {logits}, NoAttrs{}, "scores");
            NodeId idx = g.add(OpKind::topk_route, {scores, g.input("bias", {route.n_experts})}, route, "route");
            NodeId w = g.add(OpKind::route_weights, {scores, idx}, route, "weights");
            NodeId xs = g.add(OpKind::moe_dispatch, {x, idx}, route, "dispatch");
            const ExpertParallelAttrs ep{1, route.n_experts, route.top_k};
            NodeId ids = idx;
            if (expert_parallel) {
              xs = g.add(OpKind::ep_dispatch, {xs, idx}, ep, "ep_dispatch");
              ids = g.add(OpKind::ep_ids, {idx}, ep, "ep_ids");
            }
            NodeId h = g.add(OpKind::grouped_matmul, {xs, p(g, "gate_up", {route.n_experts, 2 * I, H}), ids},
                             GroupedMatmulAttrs{}, "gate_up_proj");
            h = g.add(OpKind::swiglu, {h}, NoAttrs{}, "act");
            NodeId ys = g.add(OpKind::grouped_matmul, {h, p(g, "down", {route.n_experts, H, I}), ids}, GroupedMatmulAttrs{},
                              "down_proj");
            if (expert_parallel) ys = g.add(OpKind::ep_combine, {ys, idx}, ep, "ep_combine");
            return g.add(OpKind::moe_combine, {ys, w, idx}, route, "out");
          },
          1.0, leaf_powers({{"gate", -1.0}, {"bias", 0.0}})};
}

// The sequence-wise balance loss of B sequences of T tokens over the ids topk_route chooses. Scores
// are positive, as sigmoid affinities are: |N(0, magnitude^2)| (P is invariant to their scale, so
// the variants test the kernel's sums at large and tiny values, not a different loss).
OpCase balance_case(std::string name, int64_t B, int64_t T, RouteAttrs route) {
  const int64_t E = route.n_experts, K = route.top_k;
  return {std::move(name), OpKind::seq_balance_loss,
          [=](Graph& g) {
            NodeId s = p(g, "scores", {B * T, E});
            NodeId idx = g.add(OpKind::topk_route, {s, g.input("bias", {E})}, route, "route");
            return g.add(OpKind::seq_balance_loss,
                         {g.add(OpKind::reshape, {s}, ShapeAttrs{{B, T, E}}, "scores_seq"),
                          g.add(OpKind::reshape, {idx}, ShapeAttrs{{B, T, K}}, "ids_seq")},
                         NoAttrs{}, "out");
          },
          1.0,
          [](const Node& n, std::mt19937& rng, double m) {
            RefTensor t = random_leaf(n, rng, m);
            if (n.name == "scores")
              for (double& v : t.data) v = std::abs(v);
            return t;
          }};
}

// Routing alone on sigmoid scores (unit logits at every magnitude; the bias scales, so x100 routes
// by the bias and x1e-3 by the scores): topk_route's ids feed route_weights.
OpCase route_case(std::string name, int64_t N, RouteAttrs route) {
  return {std::move(name), OpKind::topk_route,
          [=](Graph& g) {
            NodeId s = g.add(OpKind::sigmoid, {p(g, "logits", {N, route.n_experts})}, NoAttrs{}, "scores");
            NodeId idx = g.add(OpKind::topk_route, {s, g.input("bias", {route.n_experts})}, route, "route");
            return g.add(OpKind::route_weights, {s, idx}, route, "out");
          },
          1.0, leaf_powers({{"logits", 0.0}})};
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
      // Even K: the bf16 GEMM's vectorised packing of k-pairs (odd K above takes its scalar path).
      // Shapes of whole q8_0 blocks (32 values along the weight's last dimension), so these are
      // also the q8_0 rows: one decoding row against a [N, K] weight (nn.Linear), a few rows and
      // many rows against a [K, N] weight (GPT-2's Conv1D), an embedding table.
      {"matmul_q8_0_decode_nt", K::matmul, [](Graph& g) { return mm(g, {1, 64}, {96, 64}, false, true); }},
      {"matmul_q8_0_few_rows_nn", K::matmul, [](Graph& g) { return mm(g, {2, 3, 64}, {64, 96}, false, false); }},
      {"matmul_q8_0_many_rows_nn", K::matmul, [](Graph& g) { return mm(g, {37, 96}, {96, 64}, false, false); }},
      {"matmul_q8_0_many_rows_nt", K::matmul, [](Graph& g) { return mm(g, {21, 160}, {33, 160}, false, true); }},
      {"embedding_q8_0_table", K::embedding, [](Graph& g) {
         return g.add(K::embedding, {g.input("ids@9", {3, 4}, DType::i32), p(g, "table", {9, 64})}, NoAttrs{}, "out");
       }},
      {"matmul_even_k_tiles", K::matmul, [](Graph& g) { return mm(g, {45, 64}, {64, 70}, false, false); }},
      {"matmul_even_k_tiles_nt", K::matmul, [](Graph& g) { return mm(g, {30, 96}, {50, 96}, false, true); }},
      // The f32-accumulation probe: K = 1024 random-sign products. A kernel that accumulates in
      // bf16 (or rounds partial sums to bf16) lands near NMSE 1e-3 here, 50x over the bf16 bound.
      {"matmul_acc_probe_k1024", K::matmul, [](Graph& g) { return mm(g, {8, 1024}, {1024, 16}, false, false); }},
      // f32 -> bf16 -> f32: both directions of the one conversion, forward and backward.
      {"cast_roundtrip", K::cast, [](Graph& g) {
         NodeId h = g.add(K::cast, {p(g, "x", {3, 70})}, CastAttrs{DType::bf16}, "to_bf16");
         return g.add(K::cast, {h}, CastAttrs{DType::f32}, "out");
       }},
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
      {"token_nll", K::token_nll, [](Graph& g) {
         return g.add(K::token_nll, {p(g, "logits", {2, 3, 13}), g.input("targets_ignore@13", {2, 3}, DType::i32)},
                      NoAttrs{}, "out");
       }},
      {"token_nll_wide", K::token_nll, [](Graph& g) {
         return g.add(K::token_nll, {p(g, "logits", {3, 1031}), g.input("targets_ignore@1031", {3}, DType::i32)},
                      NoAttrs{}, "out");
       }},
      {"cross_entropy_wide", K::cross_entropy, [](Graph& g) {
         return g.add(K::cross_entropy, {p(g, "logits", {3, 1031}), g.input("targets@1031", {3}, DType::i32)}, NoAttrs{},
                      "out");
       }},

      // --- DeepSeek-V3: MLA, RoPE, DeepSeekMoE, multi-token prediction
      {"slice_last", K::slice_last, [](Graph& g) { return g.add(K::slice_last, {p(g, "x", {2, 3, 9})}, SliceAttrs{2, 4, 9}, "out"); }},
      {"slice_last_wide", K::slice_last, [](Graph& g) {
         return g.add(K::slice_last, {p(g, "x", {5, 577})}, SliceAttrs{512, 65, 577}, "out");
       }},
      {"concat_last", K::concat_last, [](Graph& g) {
         return g.add(K::concat_last, {p(g, "a", {2, 3, 4}), p(g, "b", {2, 3, 5})}, NoAttrs{}, "out");
       }},
      {"concat_last_width1", K::concat_last, [](Graph& g) {
         return g.add(K::concat_last, {p(g, "a", {7, 1}), p(g, "b", {7, 129})}, NoAttrs{}, "out");
       }},
      {"sigmoid", K::sigmoid, [](Graph& g) { return g.add(K::sigmoid, {p(g, "x", {3, 37})}, NoAttrs{}, "out"); }},
      {"swiglu", K::swiglu, [](Graph& g) { return g.add(K::swiglu, {p(g, "x", {3, 2, 22})}, NoAttrs{}, "out"); }},
      {"swiglu_wide", K::swiglu, [](Graph& g) { return g.add(K::swiglu, {p(g, "x", {2, 2 * 515})}, NoAttrs{}, "out"); }},
      {"rope_interleaved", K::rope, [](Graph& g) {
         RopeAttrs a;
         a.rot_offset = 2;
         a.rot_dim = 4;
         return g.add(K::rope, {p(g, "x", {2, 5, 3, 6}), g.input("pos@40", {5}, DType::i32)}, a, "out");
       }},
      {"rope_half_yarn_per_batch", K::rope, [](Graph& g) {
         RopeAttrs a;
         a.rot_dim = 8;
         a.interleaved = false;
         a.yarn_factor = 4.0;
         a.yarn_original_max_position = 16;
         a.attention_factor = 1.2;
         return g.add(K::rope, {p(g, "x", {2, 3, 2, 8}), g.input("pos@64", {2, 3}, DType::i32)}, a, "out");
       }},
      {"mla_qkv", K::mla_qkv, [](Graph& g) {
         return g.add(K::mla_qkv, {p(g, "q", {2, 3, 2 * (3 + 2)}), p(g, "kv", {2, 3, 2 * (3 + 4)}), p(g, "kr", {2, 3, 2})},
                      MlaAttrs{2, 3, 2, 4}, "out");
       }},
      {"mla_qkv_no_nope", K::mla_qkv, [](Graph& g) {
         return g.add(K::mla_qkv, {p(g, "q", {1, 4, 3 * 2}), p(g, "kv", {1, 4, 3 * 5}), p(g, "kr", {1, 4, 2})},
                      MlaAttrs{3, 0, 2, 5}, "out");
       }},
      {"attention_latent", K::attention_latent, [](Graph& g) {
         return g.add(K::attention_latent,
                      {g.input("q", {2, 2, 3 * (4 + 2)}), g.input("entries", {2, 2, 5 + 2}), g.input("cache", {2, 7, 5 + 2}),
                       g.input("kv_b", {3 * (4 + 3), 5}), g.input("cache_len@6", {2}, DType::i32)},
                      MlaAttrs{3, 4, 2, 3, 0.4f}, "out");
       }},
      moe_case("moe_route_and_experts", 6, 5, 3, RouteAttrs{8, 2, 4, 2, true, 2.5f}),
      // ds-small's routing (32 experts in 4 groups, top-4 of 2 groups) over enough tokens for the
      // kernels' parallel paths.
      moe_case("moe_ds_small_routing", 67, 24, 8, RouteAttrs{32, 4, 4, 2, true, 2.5f}),
      moe_case("moe_expert_parallel_one_rank", 6, 5, 3, RouteAttrs{8, 2, 4, 2, true, 2.5f}, true),
      route_case("topk_route_groups", 9, RouteAttrs{16, 3, 4, 2, true, 1.0f}),
      route_case("topk_route_one_group", 5, RouteAttrs{6, 6, 1, 1, true, 1.0f}),
      balance_case("seq_balance_loss", 3, 5, RouteAttrs{8, 2, 4, 2, true, 1.0f}),
      balance_case("seq_balance_loss_ds_small", 2, 33, RouteAttrs{32, 4, 4, 2, true, 1.0f}),
      {"grouped_matmul_transposed", K::grouped_matmul, [](Graph& g) {
         return g.add(K::grouped_matmul, {p(g, "x", {12, 4}), p(g, "w", {8, 4, 3}), g.input("ids@8", {6, 2}, DType::i32)},
                      GroupedMatmulAttrs{true}, "out");
       }},
      // Very uneven expert loads, as a collapsing router produces: expert 0 takes every token but
      // one, experts 1-3 the second choices, 4-7 nothing (zero-row GEMMs, zero weight gradients).
      // Large enough (1.2 M multiply-adds) that the kernels' parallel, work-splitting paths run.
      {"grouped_matmul_uneven_loads", K::grouped_matmul, [](Graph& g) {
         return g.add(K::grouped_matmul, {p(g, "x", {600, 24}), p(g, "w", {8, 40, 24}), g.input("ids@8", {300, 2}, DType::i32)},
                      GroupedMatmulAttrs{}, "out");
       }, 1.0, [](const Node& n, std::mt19937& rng, double m) {
         RefTensor t = random_leaf(n, rng, m);
         if (n.dtype == DType::i32)
           for (size_t f = 0; f < t.data.size(); ++f) t.data[f] = f % 2 == 0 ? (f == 10 ? 2 : 0) : 1 + static_cast<double>(f / 2 % 3);
         return t;
       }},
      {"route_weights_unnormalised", K::route_weights, [](Graph& g) {
         const RouteAttrs a{8, 3, 1, 1, false, 1.5f};
         NodeId s = p(g, "s", {4, 8});
         NodeId idx = g.add(K::topk_route, {s, g.input("bias", {8})}, a, "route");
         return g.add(K::route_weights, {s, idx}, a, "out");
       }},
      {"shift_tokens", K::shift_tokens, [](Graph& g) {
         // ids only: feeds an embedding so the case ends in a float output.
         NodeId ids = g.add(K::shift_tokens, {g.input("labels@11", {2, 7}, DType::i32)}, ShiftAttrs{2, 0}, "shifted");
         return g.add(K::embedding, {ids, p(g, "table", {11, 3})}, NoAttrs{}, "out");
       }},
  };
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> out = base_cases();
  const size_t n = out.size();
  // Magnitude matters to an op that reads or writes floats; a view computes nothing.
  std::vector<bool> scales(n);
  for (size_t i = 0; i < n; ++i) {
    Graph g;
    out[i].build(g);
    for (const Node& nd : g.nodes()) {
      if (nd.op != out[i].op || nd.op == OpKind::reshape) continue;
      bool floats = nd.dtype != DType::i32;
      for (NodeId in : nd.inputs) floats = floats || g.node(in).dtype != DType::i32;
      scales[i] = scales[i] || floats;
    }
  }
  for (auto [suffix, mag] : {std::pair{"@x100", 100.0}, std::pair{"@x1e-3", 1e-3}})
    for (size_t i = 0; i < n; ++i) {
      OpCase c = out[i];
      if (!scales[i]) continue;
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
      cg.leaves[n.id] = n.name == "loss_weights"        ? random_leaf(n, rng, 1.0)
                        : c.leaf && n.dtype != DType::i32 ? c.leaf(n, rng, c.magnitude)
                                                          : random_leaf(n, rng, c.magnitude);
  cg.leaves[cg.backward.seed] = RefTensor(Shape{});
  cg.leaves[cg.backward.seed].data[0] = 1.0;
  return cg;
}

}  // namespace tandem::qualify
