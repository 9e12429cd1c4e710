// DeepSeekMoE, shared by the shape rules, the references and every backend.
//
// Routing (transformers' DeepseekV3TopkRouter): scores = sigmoid(x . gate^T) [N, E].
//   topk_route(scores, bias [E]) -> idx [N, K] i32: choice scores s + bias; each of n_group groups
//     is rated by the sum of its top-2 choice scores; the best topk_group groups stay, the other
//     experts are masked (-inf); the top_k remaining experts, best first (ties: lower index).
//     The bias steers selection only (auxiliary-loss-free balancing), it never weights outputs.
//   route_weights(scores, idx) -> w [N, K]: s[n, idx], divided by (sum + 1e-20) if norm_topk_prob,
//     times routed_scaling_factor.
// Expert computation on tokens grouped by expert (never a dense pass over all experts):
//   moe_dispatch(x [N, H], idx) -> xs [N*K, H]: row (n, k) lands at position pos(n, k), rows sorted
//     by expert (stable in n*K + k), so each expert's rows are one contiguous segment;
//   grouped_matmul(xs [M, in], W [E, out, in], idx) -> xs_e . W_e^T per segment (transpose_w:
//     xs_e . W_e, W [E, out, in] with xs [M, out]);
//   moe_combine(ys [N*K, H], w, idx) -> [N, H]: sum_k w[n, k] ys[pos(n, k)].
// Sequence-wise balance loss (DeepSeek-V3 eqs. 17-20, before alpha), per sequence b of T tokens:
//   seq_balance_loss(s [B, T, E], idx [B, T, K]) -> [B]: sum_i f_i P_i with
//     f_i = E / (K T) * #{(t, k): idx[b, t, k] = i}  (the experts actually chosen; a constant),
//     P_i = 1/T sum_t s[b, t, i] / sum_j s[b, t, j]  (s: the sigmoid affinities, all E experts, > 0);
//   1 when the load and the normalised affinities are uniform. The gradient flows through P only:
//   seq_balance_loss_grad(s, idx, dout [B]) -> [B, T, E]: dout_b / (T S_t) (f_j - sum_i f_i s_ti / S_t),
//   S_t = sum_j s_tj.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/graph.h"

namespace tandem {

// Counting sort of (n, k) pairs by expert: offsets[e]..offsets[e+1] is expert e's segment and
// pos[n*K + k] the row of pair (n, k). `Id` is int32_t (kernels) or double (reference).
template <typename Id>
void expert_order(const Id* idx, int64_t N, int64_t K, int64_t E, std::vector<int64_t>& offsets, std::vector<int64_t>& pos) {
  offsets.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t f = 0; f < N * K; ++f) ++offsets[static_cast<size_t>(idx[f]) + 1];
  for (int64_t e = 0; e < E; ++e) offsets[static_cast<size_t>(e + 1)] += offsets[static_cast<size_t>(e)];
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  pos.resize(static_cast<size_t>(N * K));
  for (int64_t f = 0; f < N * K; ++f) pos[static_cast<size_t>(f)] = next[static_cast<size_t>(idx[f])]++;
}

// Working memory of route_row, reused across rows (a kernel keeps one per thread).
template <typename T>
struct RouteScratch {
  std::vector<T> choice;
  std::vector<std::pair<T, int64_t>> groups, cand;
};

// One row's routing choice (shared by the reference and the CPU kernel): writes top_k expert ids.
template <typename T>
void route_row(const T* scores, const T* bias, const RouteAttrs& a, int32_t* out, RouteScratch<T>& scratch) {
  const int64_t E = a.n_experts, per = E / a.n_group;
  std::vector<T>& choice = scratch.choice;
  choice.resize(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) choice[static_cast<size_t>(e)] = scores[e] + bias[e];
  std::vector<std::pair<T, int64_t>>& groups = scratch.groups;
  groups.clear();
  for (int64_t g = 0; g < a.n_group; ++g) {
    T best = -INFINITY, second = -INFINITY;
    for (int64_t e = g * per; e < (g + 1) * per; ++e) {
      const T v = choice[static_cast<size_t>(e)];
      if (v > best) { second = best; best = v; }
      else if (v > second) second = v;
    }
    groups.emplace_back(per >= 2 ? best + second : best, g);
  }
  auto better = [](const auto& x, const auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); };
  std::partial_sort(groups.begin(), groups.begin() + a.topk_group, groups.end(), better);
  std::vector<std::pair<T, int64_t>>& cand = scratch.cand;
  cand.clear();
  for (int64_t i = 0; i < a.topk_group; ++i)
    for (int64_t e = groups[static_cast<size_t>(i)].second * per; e < (groups[static_cast<size_t>(i)].second + 1) * per; ++e)
      cand.emplace_back(choice[static_cast<size_t>(e)], e);
  std::partial_sort(cand.begin(), cand.begin() + a.top_k, cand.end(), better);
  for (int64_t k = 0; k < a.top_k; ++k) out[k] = static_cast<int32_t>(cand[static_cast<size_t>(k)].second);
}

}  // namespace tandem
