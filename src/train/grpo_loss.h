// The GRPO objective (DeepSeekMath arXiv 2402.03300 eq. 3) with the known fixes as options, as a
// per-token weighted NLL: for a weight w_t held constant,
//   grad L = sum_t w_t * grad nll_t,   w_t = (1/N) [ A_i r_t 1{not clipped} - beta (1 - pi_ref/pi_theta) ]
// with r_t = pi_theta/pi_old and N the loss type's normaliser. The graph computes
// sum(mul(token_nll, weights)) (ops/cross_entropy.cpp); everything here is host arithmetic on
// per-token log-probabilities, in double.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem {

enum class GrpoLossType {
  grpo,     // mean over sequences of (token sum / |o_i|); advantages divided by the group std
  dr_grpo,  // token sum / (sequences * max_new_tokens); advantages not divided by the std (Dr. GRPO)
  dapo,     // token sum / all completion tokens of the batch; advantages divided by the group std
};
GrpoLossType parse_grpo_loss_type(const std::string& s, const std::string& where);
const char* grpo_loss_type_name(GrpoLossType t);

struct GrpoLossOptions {
  GrpoLossType type = GrpoLossType::dapo;
  double clip_low = 0.2, clip_high = 0.2;  // ratio clipped to [1 - low, 1 + high] (DAPO clip-higher: high 0.28)
  double kl_beta = 0.0;                    // k3 KL to the reference, added to the loss
  int64_t max_new_tokens = 0;              // dr_grpo's constant length normaliser
};

// Group-normalised advantages: rewards are `groups` consecutive groups of equal size. A = r - mean,
// divided by (Bessel std + 1e-4) unless dr_grpo; a group without reward spread gets A = 0.
std::vector<double> grpo_advantages(std::span<const double> rewards, int64_t group, GrpoLossType type);

// One batch of sequences in [S, T] layout: mask[s*T+t] is 1 on completion tokens (the ones trained).
struct GrpoBatch {
  int64_t S = 0, T = 0;
  std::vector<uint8_t> mask;
  std::vector<double> advantages;  // [S]
  std::vector<double> logp, old_logp, ref_logp;  // [S*T]; ref_logp only read when kl_beta != 0
};

struct GrpoLossResult {
  std::vector<float> weights;  // [S*T], 0 off the mask
  double loss = 0;             // the true objective's value (not the surrogate's)
  double kl = 0;               // mean k3 over completion tokens (0 when kl_beta == 0)
  double clip_frac = 0, clip_low_frac = 0, clip_high_frac = 0;  // fractions of completion tokens
  int64_t tokens = 0;
};

// `normaliser_tokens`: the completion tokens of the global batch (dapo), and `normaliser_sequences`
// the sequences of the global batch (grpo, dr_grpo): with data parallelism each rank passes the
// global counts so that the reduced gradients are the single-process ones.
GrpoLossResult grpo_token_weights(const GrpoBatch& b, const GrpoLossOptions& o, int64_t normaliser_tokens,
                                  int64_t normaliser_sequences);

}  // namespace tandem
