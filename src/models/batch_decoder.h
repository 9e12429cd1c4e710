// The batched, KV-cached decode core shared by `serve` (continuous batching) and `grpo`
// (rollouts): a pool of S cache slots (one row of every layer's [S, Tmax, W] cache each), prompts
// prefilled per slot in power-of-two chunks by [1, T] decode-mode programs bound to that slot's
// rows, and one [S, 1] program that advances every slot at once. It returns logits; callers sample
// (sample_token) and decide when a slot is done. Every program binds the ParamStore's tensors, so
// decoding sees an optimizer's in-place updates with no copy.
// The CPU kernels compute each row independently of the others, so a slot's logits do not depend
// on which slot it is or what the other slots hold.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "models/generator.h"

namespace tandem {

class BatchDecoder {
 public:
  // Longest prefill chunk: bounds how long one prompt holds up a running batch.
  static constexpr int64_t kMaxPrefillChunk = 512;

  BatchDecoder(const Model& model, Backend& backend, const ParamStore& params, int slots, int64_t max_context);
  ~BatchDecoder();
  int slots() const { return slots_; }
  int64_t max_context() const { return max_context_; }
  int64_t vocab_size() const { return V_; }

  // Runs the next prefill chunk of `prompt` into slot s, from token `done` on (the slot's cache
  // holds prompt[0, done)); returns the new `done`. When it reaches the end of the prompt,
  // `last_logits` receives the last position's logits [V].
  int64_t prefill_chunk(int s, std::span<const int32_t> prompt, int64_t done, std::vector<float>& last_logits);

  // Prefills every slot at once with prompts of one length L (one [S, L] program; rows[s] is slot
  // s's prompt) and returns the last position's logits of each, [S * V].
  const std::vector<float>& prefill_all(const std::vector<std::span<const int32_t>>& rows);

  // One step for the slots with active[s]: token next[s] at position len[s] (the slot's cache
  // holds len[s] tokens). Inactive slots compute on a dummy token in their own rows. Returns the
  // logits [S * V] (rows of inactive slots are meaningless).
  const std::vector<float>& decode(std::span<const int32_t> next, std::span<const int64_t> len,
                                   std::span<const uint8_t> active);

 private:
  struct Pass;
  Pass& prefill_pass(int64_t T);

  const Model& model_;
  Backend& backend_;
  const ParamStore& params_;
  int slots_ = 0;
  int64_t max_context_ = 0, V_ = 0;
  std::vector<Tensor> caches_;  // per layer [S, Tmax, W]
  std::unique_ptr<Pass> decode_;
  std::vector<std::unique_ptr<Pass>> prefill_;  // by log2(T)
  std::map<int64_t, std::unique_ptr<Pass>> prefill_all_;  // by L
  std::vector<float> logits_;
};

// Synchronous batched sampling (rollouts, evaluation): every prompt is completed up to
// max_new_tokens or until `stop` is produced, through a BatchDecoder. Rows go in waves of S: a
// wave whose prompts have one length is prefilled by one [S, L] pass (rollouts repeat each prompt
// `group` times, and task prompts share a length); otherwise slot by slot. Row i samples with its own generator seeded with seeds[i], so a row's tokens
// depend only on its prompt, seed and the weights.
struct SampledSequence {
  std::vector<int32_t> tokens;  // the completion, `stop` included when produced
  bool truncated = false;       // ended by max_new_tokens or the context, not by `stop`
  double entropy = 0;           // sum over its tokens of the sampling distribution's entropy (nats)
};
std::vector<SampledSequence> sample_batch(BatchDecoder& decoder, const std::vector<std::vector<int32_t>>& prompts,
                                          std::span<const uint64_t> seeds, const SamplingOptions& opts,
                                          int max_new_tokens, std::optional<int32_t> stop);

}  // namespace tandem
