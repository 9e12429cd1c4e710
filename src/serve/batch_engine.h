// Continuous batching: one engine thread owns the model, a pool of KV-cache slots and the running
// batch. HTTP threads hand it Jobs through a bounded queue and read each Job's output as it grows.
//
// Every iteration of the engine thread:
//  1. admits queued jobs into free slots (a slot is one row of every layer's [S, Tmax, W] cache);
//  2. runs one prefill chunk for every slot still reading its prompt (models/batch_decoder.h:
//     the decode core shared with `grpo`); after the last chunk the first token is sampled;
//  3. runs one decode step for every generating slot at once: a single [S, 1] program over the
//     whole pool;
//  4. samples per job (its own seeded generator), applies stop strings, max_tokens and the
//     context limit, and frees finished or cancelled slots, so jobs join and leave the batch at
//     token granularity.
// The CPU kernels compute each row independently of the others, so a job's tokens do not depend
// on which slot it has or what else is running: greedy output alone equals output in a batch.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "models/batch_decoder.h"
#include "tokenizer/tokenizer.h"

namespace tandem::serve {

enum class FinishReason { stop, length, cancelled, error };
const char* finish_reason_name(FinishReason r);

struct JobSpec {
  std::vector<int32_t> prompt;  // non-empty, shorter than the engine's max_context
  int max_tokens = 16;
  SamplingOptions sampling;  // vocab_limit is set by the engine from the tokenizer
  std::vector<std::string> stop;
};

// One request's output channel: the engine thread appends text, one HTTP thread takes it.
class Job {
 public:
  struct Update {
    std::string text;  // new text since the previous update
    bool done = false;
    FinishReason reason = FinishReason::length;
    std::string error;  // why, for cancelled (by the server) and error
    int prompt_tokens = 0, completion_tokens = 0;
  };
  explicit Job(JobSpec spec) : spec_(std::move(spec)) {}
  const JobSpec& spec() const { return spec_; }
  // Waits up to `timeout` for new text or the end; returns what there is (maybe nothing yet).
  Update wait(std::chrono::milliseconds timeout);
  // The client went away: the engine drops the job and frees its slot at its next iteration.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class BatchEngine;
  void emit(std::string text);
  void finish(FinishReason r, int completion_tokens, std::string error = {});

  const JobSpec spec_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;  // guarded by mu_, like the fields below
  bool done_ = false;
  FinishReason reason_ = FinishReason::length;
  std::string error_;
  int completion_tokens_ = 0;
};

struct EngineStats {
  int active = 0, queued = 0, max_batch = 0, max_queue = 0;
  int64_t kv_tokens = 0, kv_capacity = 0;  // tokens held in the cache pool / slots * max_context
  uint64_t prompt_tokens = 0, generated_tokens = 0, steps = 0;
  uint64_t finished[4] = {};  // jobs ended, by FinishReason
  double tokens_per_s = 0;  // generated tokens per second over the last few seconds
};

class BatchEngine {
 public:
  struct Options {
    int max_batch = 8;         // cache slots = sequences decoded together
    int64_t max_context = 0;   // prompt + completion tokens per sequence; 0: the model's context
    int max_queue = 64;        // jobs waiting for a slot before submit() refuses
  };
  BatchEngine(const Model& model, Backend& backend, const ParamStore& params, const Tokenizer& tokenizer,
              Options opts);
  ~BatchEngine();  // cancels what is left and joins the engine thread

  enum class Admission { accepted, queue_full, shutting_down };
  Admission submit(const std::shared_ptr<Job>& job);
  // Stops admitting, lets running and queued jobs finish for up to `grace`, then cancels the rest
  // and joins the engine thread. Idempotent.
  void shutdown(std::chrono::milliseconds grace);

  EngineStats stats() const;
  int64_t max_context() const { return max_context_; }
  int max_batch() const { return max_batch_; }

 private:
  struct Slot;
  void loop();
  void iterate();
  void prefill_chunk(int s);
  void decode_step();
  void deliver(int s, std::span<const float> logits);
  void release(int s, FinishReason r, std::string error = {});

  const Model& model_;
  Backend& backend_;
  const Tokenizer& tokenizer_;
  BatchDecoder decoder_;
  int64_t max_context_ = 0;
  int max_batch_ = 0, max_queue_ = 0;

  // Owned by the engine thread.
  std::vector<Slot> slots_;

  // Shared with submitters; guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  int active_ = 0;
  bool stopping_ = false, cancel_all_ = false, exited_ = false;
  std::condition_variable exited_cv_;
  EngineStats stats_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int>> recent_;  // (step end, tokens)

  std::thread thread_;
};

}  // namespace tandem::serve
