// Autoregressive generation with a KV cache: one prefill pass over the prompt, then one
// single-token decode pass per new token, attending to the cached keys and values.
#pragma once
#include <functional>
#include <memory>
#include <random>

#include "core/program.h"
#include "models/params.h"

namespace tandem {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
  int64_t vocab_limit = 0;  // sample only ids below this (a tokenizer smaller than the model's vocab); 0: all
};

// Picks the next token from one row of logits.
int32_t sample_token(std::span<const float> logits, const SamplingOptions& opts, std::mt19937_64& rng);

// The last row of a decode pass's logits ([B, T, V], or [B, 1, V] for a model that computes the
// last position only, as GPT-2 does): a [V] view, so only that row is copied to the host.
Tensor last_logits_row(const Tensor& logits, int64_t V);

class Generator {
 public:
  Generator(const Model& model, Backend& backend, const ParamStore& params);
  ~Generator();
  // Generates up to max_tokens after `prompt`; stops early when `on_token` returns false, when
  // `stop_token` is produced, or when the context is full. Returns the generated ids.
  std::vector<int32_t> generate(std::span<const int32_t> prompt, int max_tokens, const SamplingOptions& opts,
                                std::optional<int32_t> stop_token = std::nullopt,
                                const std::function<bool(int32_t)>& on_token = {});

 private:
  struct Pass;  // a decode-mode program for a fixed number of new tokens
  std::unique_ptr<Pass> make_pass(int64_t T);
  std::vector<float> run_pass(Pass& pass, std::span<const int32_t> ids, int64_t start);

  const Model& model_;
  Backend& backend_;
  const ParamStore& params_;
  std::vector<Tensor> caches_;
  Tensor cache_len_;
  std::unique_ptr<Pass> step_pass_;
};

}  // namespace tandem
