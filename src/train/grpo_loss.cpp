#include "train/grpo_loss.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tandem {

GrpoLossType parse_grpo_loss_type(const std::string& s, const std::string& where) {
  if (s == "grpo") return GrpoLossType::grpo;
  if (s == "dr_grpo") return GrpoLossType::dr_grpo;
  if (s == "dapo") return GrpoLossType::dapo;
  throw Error(where + ": unknown loss type '" + s + "' (grpo, dr_grpo or dapo)");
}

const char* grpo_loss_type_name(GrpoLossType t) {
  return t == GrpoLossType::grpo ? "grpo" : t == GrpoLossType::dr_grpo ? "dr_grpo" : "dapo";
}

std::vector<double> grpo_advantages(std::span<const double> rewards, int64_t group, GrpoLossType type) {
  check(group > 0 && static_cast<int64_t>(rewards.size()) % group == 0, "grpo: ", rewards.size(),
        " rewards do not split into groups of ", group);
  std::vector<double> a(rewards.size());
  for (size_t g0 = 0; g0 < rewards.size(); g0 += static_cast<size_t>(group)) {
    const auto G = static_cast<size_t>(group);
    double mean = 0, var = 0;
    for (size_t i = 0; i < G; ++i) mean += rewards[g0 + i];
    mean /= static_cast<double>(G);
    for (size_t i = 0; i < G; ++i) var += (rewards[g0 + i] - mean) * (rewards[g0 + i] - mean);
    // Bessel-corrected, as TRL's nanstd and verl's torch.std; a group of one has no spread.
    const double sd = G > 1 ? std::sqrt(var / static_cast<double>(G - 1)) : 0.0;
    for (size_t i = 0; i < G; ++i) {
      const double d = rewards[g0 + i] - mean;
      a[g0 + i] = sd == 0.0 ? 0.0 : type == GrpoLossType::dr_grpo ? d : d / (sd + 1e-4);
    }
  }
  return a;
}

GrpoLossResult grpo_token_weights(const GrpoBatch& b, const GrpoLossOptions& o, int64_t normaliser_tokens,
                                  int64_t normaliser_sequences) {
  const auto n = static_cast<size_t>(b.S * b.T);
  check(b.mask.size() == n && b.logp.size() == n && b.old_logp.size() == n &&
            b.advantages.size() == static_cast<size_t>(b.S) && (o.kl_beta == 0 || b.ref_logp.size() == n),
        "grpo: batch arrays do not match [", b.S, ", ", b.T, "]");
  check(o.type != GrpoLossType::dr_grpo || o.max_new_tokens > 0, "grpo: dr_grpo needs max_new_tokens > 0");
  GrpoLossResult r;
  r.weights.assign(n, 0.0f);
  int64_t clipped_low = 0, clipped_high = 0;
  double kl_sum = 0;
  for (int64_t s = 0; s < b.S; ++s) {
    int64_t len = 0;
    for (int64_t t = 0; t < b.T; ++t) len += b.mask[static_cast<size_t>(s * b.T + t)];
    if (len == 0) continue;
    double N = 0;
    switch (o.type) {
      case GrpoLossType::grpo: N = static_cast<double>(normaliser_sequences) * static_cast<double>(len); break;
      case GrpoLossType::dr_grpo: N = static_cast<double>(normaliser_sequences) * static_cast<double>(o.max_new_tokens); break;
      case GrpoLossType::dapo: N = static_cast<double>(normaliser_tokens); break;
    }
    const double A = b.advantages[static_cast<size_t>(s)];
    for (int64_t t = 0; t < b.T; ++t) {
      const auto i = static_cast<size_t>(s * b.T + t);
      if (!b.mask[i]) continue;
      const double ratio = std::exp(b.logp[i] - b.old_logp[i]);
      const double clipped_ratio = std::clamp(ratio, 1.0 - o.clip_low, 1.0 + o.clip_high);
      // -min(r A, clip(r) A) takes the clipped branch (and no gradient) exactly when it is smaller.
      const bool clip = clipped_ratio * A < ratio * A;
      clipped_low += clip && A < 0;
      clipped_high += clip && A > 0;
      double tok_loss = -std::min(ratio * A, clipped_ratio * A), w = clip ? 0.0 : A * ratio;
      if (o.kl_beta != 0) {
        const double d = b.ref_logp[i] - b.logp[i], k3 = std::exp(d) - d - 1.0;
        kl_sum += k3;
        tok_loss += o.kl_beta * k3;
        w -= o.kl_beta * (1.0 - std::exp(d));  // d k3 / d logp = 1 - pi_ref/pi, and nll = -logp
      }
      r.loss += tok_loss / N;
      r.weights[i] = static_cast<float>(w / N);
      ++r.tokens;
    }
  }
  if (r.tokens) {
    const double T = static_cast<double>(r.tokens);
    r.kl = kl_sum / T;
    r.clip_low_frac = static_cast<double>(clipped_low) / T;
    r.clip_high_frac = static_cast<double>(clipped_high) / T;
    r.clip_frac = static_cast<double>(clipped_low + clipped_high) / T;
  }
  return r;
}

}  // namespace tandem
