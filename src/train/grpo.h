// `tandem grpo`: reinforcement learning with verifiable rewards (GRPO, DeepSeekMath arXiv
// 2402.03300), on a model trained with `tandem train` (or any model directory with a tokenizer).
// Each step:
//   1. choose prompts_per_step prompts (a generator seeded by (seed, step): resuming needs no
//      sampler state);
//   2. rollout: `group` completions per prompt, sampled by the batched KV-cached decoder
//      (models/batch_decoder.h), each row with its own seed (seed, step, row);
//   3. rewards (train/rewards.h); with resample_zero_spread, up to that many extra rounds that
//      replace each group whose rewards are all equal by a fresh prompt's group (DAPO's dynamic
//      sampling); group-normalised advantages;
//   4. updates_per_batch times: current (and, once, old) per-token log-probabilities, the token
//      weights of the objective (train/grpo_loss.h), forward/backward of the weighted NLL, AdamW;
//   5. a metrics.jsonl line; every eval_every steps an evaluation on the held-out prompts; every
//      checkpoint_every steps a checkpoint in `train`'s format (generate, eval, serve read it).
// Under mpirun each rank samples and scores its share of the step's prompts (prompts_per_step a
// multiple of the world size) and the gradients are reduced as in `train` (train/data_parallel.h).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

namespace tandem {

struct GrpoOptions {
  std::filesystem::path model, prompts, eval, out_dir;
  int64_t group = 8, prompts_per_step = 16, steps = 200, max_new_tokens = 32, updates_per_batch = 1;
  double temperature = 1.0, clip = 0.2, clip_high = -1, kl_beta = 0.0;
  std::string loss = "dapo", reward = "exact", backend = "cpu";
  double reward_timeout = 60;
  double learning_rate = 1e-4, weight_decay = 0.0, grad_clip = 1.0;
  int64_t warmup_steps = 10;
  int64_t eval_every = 25, eval_limit = 512, eval_samples = 8;
  int64_t checkpoint_every = 50;
  int64_t resample_zero_spread = 0;  // extra sampling rounds for groups without reward spread
  int64_t decode_batch = 0;  // KV-cache slots for rollouts (0: group * prompts_per_step, at most 256)
  double collective_timeout = 300;  // seconds any collective may take under mpirun
  uint64_t seed = 1;
  bool resume = false;
};

void grpo(const GrpoOptions& opts);

}  // namespace tandem
