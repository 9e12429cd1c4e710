#include "serve/batch_engine.h"

#include <omp.h>


#include "core/error.h"
#include "serve/text_stream.h"

namespace tandem::serve {

namespace {
// Window for the tokens/s gauge.
constexpr auto kRateWindow = std::chrono::seconds(5);
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::error: return "error";
  }
  return "error";
}

// ---- Job ----

Job::Update Job::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return done_ || !pending_.empty(); });
  Update u;
  u.text.swap(pending_);
  u.done = done_;
  u.reason = reason_;
  u.error = error_;
  u.prompt_tokens = static_cast<int>(spec_.prompt.size());
  u.completion_tokens = completion_tokens_;
  return u;
}

void Job::emit(std::string text) {
  if (text.empty()) return;
  {
    std::lock_guard lk(mu_);
    pending_ += text;
  }
  cv_.notify_all();
}

void Job::finish(FinishReason r, int completion_tokens, std::string error) {
  {
    std::lock_guard lk(mu_);
    if (done_) return;
    done_ = true;
    reason_ = r;
    completion_tokens_ = completion_tokens;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

// ---- engine ----

struct BatchEngine::Slot {
  std::shared_ptr<Job> job;  // null: the slot is free
  int64_t prefilled = 0;     // prompt tokens already in the cache
  int64_t len = 0;           // tokens in this slot's cache rows
  int32_t next = 0;          // the last sampled token, fed by the next decode step
  int generated = 0;
  std::mt19937_64 rng;
  std::unique_ptr<TextStream> text;
  bool prefilling() const { return job && prefilled < static_cast<int64_t>(job->spec().prompt.size()); }
  bool decoding() const { return job && !prefilling(); }
};

BatchEngine::BatchEngine(const Model& model, Backend& backend, const ParamStore& params, const Tokenizer& tokenizer,
                         Options opts)
    : model_(model), backend_(backend), tokenizer_(tokenizer), decoder_(model, backend, params, opts.max_batch, opts.max_context) {
  check(opts.max_queue >= 0, "--max-queue must not be negative");
  max_context_ = decoder_.max_context();
  max_batch_ = opts.max_batch;
  max_queue_ = opts.max_queue;
  slots_.resize(static_cast<size_t>(opts.max_batch));
  const int64_t S = opts.max_batch;
  stats_.max_batch = opts.max_batch;
  stats_.max_queue = opts.max_queue;
  stats_.kv_capacity = S * max_context_;
  // From here on only the engine thread runs kernels. Hand back the OpenMP workers this (loading)
  // thread holds: libgomp counts every pooled thread as busy, and with more of them than cores it
  // cuts its spin-waits short, so the engine's workers would sleep and wake at every parallel
  // region (gpt2-124m decode ~25% slower than `tandem generate` on the main thread).
  omp_pause_resource_all(omp_pause_hard);
  thread_ = std::thread([this] { loop(); });
}

BatchEngine::~BatchEngine() { shutdown(std::chrono::milliseconds(0)); }

BatchEngine::Admission BatchEngine::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return Admission::shutting_down;
    // Free slots take jobs at the engine's next iteration, so they count as queue room too.
    if (static_cast<int>(queue_.size()) + active_ >= static_cast<int>(slots_.size()) + max_queue_)
      return Admission::queue_full;
    queue_.push_back(job);
    stats_.queued = static_cast<int>(queue_.size());
  }
  cv_.notify_all();
  return Admission::accepted;
}

void BatchEngine::shutdown(std::chrono::milliseconds grace) {
  {
    std::unique_lock lk(mu_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    cv_.notify_all();
    if (!exited_cv_.wait_for(lk, grace, [&] { return exited_; })) {
      cancel_all_ = true;
      cv_.notify_all();
    }
  }
  thread_.join();
}

EngineStats BatchEngine::stats() const {
  std::lock_guard lk(mu_);
  EngineStats s = stats_;
  const auto now = std::chrono::steady_clock::now();
  int tokens = 0;
  for (const auto& [t, n] : recent_)
    if (now - t <= kRateWindow) tokens += n;
  s.tokens_per_s = tokens / std::chrono::duration<double>(kRateWindow).count();
  return s;
}

void BatchEngine::loop() {
  backend_.attach_thread();
  for (;;) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || cancel_all_ || !queue_.empty() || active_ > 0; });
      if (stopping_ && queue_.empty() && active_ == 0) break;
    }
    try {
      iterate();
    } catch (const std::exception& e) {
      // A failed step poisons only the jobs in the batch; the server carries on.
      for (size_t s = 0; s < slots_.size(); ++s)
        if (slots_[s].job) release(static_cast<int>(s), FinishReason::error, e.what());
    }
  }
  std::lock_guard lk(mu_);
  exited_ = true;
  exited_cv_.notify_all();
}

void BatchEngine::iterate() {
  bool cancel_all = false;
  {
    std::lock_guard lk(mu_);
    cancel_all = cancel_all_;
    std::erase_if(queue_, [&](const std::shared_ptr<Job>& j) {
      if (!j->cancelled() && !cancel_all) return false;
      j->finish(FinishReason::cancelled, 0, cancel_all ? "the server is shutting down" : "");
      ++stats_.finished[static_cast<int>(FinishReason::cancelled)];
      return true;
    });
    for (auto& slot : slots_) {
      if (slot.job || queue_.empty()) continue;
      slot = Slot{};
      slot.job = std::move(queue_.front());
      queue_.pop_front();
      const JobSpec& spec = slot.job->spec();
      slot.rng.seed(spec.sampling.seed);
      slot.text = std::make_unique<TextStream>(spec.stop);
      stats_.prompt_tokens += spec.prompt.size();
      ++active_;
    }
    stats_.queued = static_cast<int>(queue_.size());
  }
  for (size_t s = 0; s < slots_.size(); ++s)
    if (slots_[s].job && (cancel_all || slots_[s].job->cancelled()))
      release(static_cast<int>(s), FinishReason::cancelled, cancel_all ? "the server is shutting down" : "");

  int produced = 0;
  for (size_t s = 0; s < slots_.size(); ++s)
    if (slots_[s].prefilling()) {
      prefill_chunk(static_cast<int>(s));
      if (!slots_[s].prefilling()) ++produced;  // its last chunk: the first token was sampled
    }
  bool any = false;
  for (const auto& slot : slots_) any = any || slot.decoding();
  if (any) {
    for (const auto& slot : slots_) produced += slot.decoding() ? 1 : 0;
    decode_step();
  }

  std::lock_guard lk(mu_);
  ++stats_.steps;
  stats_.generated_tokens += static_cast<uint64_t>(produced);
  const auto now = std::chrono::steady_clock::now();
  recent_.emplace_back(now, produced);
  while (!recent_.empty() && now - recent_.front().first > kRateWindow) recent_.pop_front();
  stats_.active = active_;
  stats_.kv_tokens = 0;
  for (const auto& slot : slots_) stats_.kv_tokens += slot.job ? slot.len : 0;
}

void BatchEngine::prefill_chunk(int s) {
  Slot& slot = slots_[static_cast<size_t>(s)];
  std::vector<float> last;
  slot.prefilled = decoder_.prefill_chunk(s, slot.job->spec().prompt, slot.prefilled, last);
  slot.len = slot.prefilled;
  if (slot.prefilling()) return;
  deliver(s, last);
}

void BatchEngine::decode_step() {
  const size_t S = slots_.size();
  std::vector<int32_t> next(S, 0);
  std::vector<int64_t> len(S, 0);
  std::vector<uint8_t> active(S, 0);
  for (size_t s = 0; s < S; ++s)
    if (slots_[s].decoding()) {
      active[s] = 1;
      next[s] = slots_[s].next;
      len[s] = slots_[s].len;
    }
  const std::vector<float>& logits = decoder_.decode(next, len, active);
  const auto V = static_cast<size_t>(model_.vocab_size());
  for (size_t s = 0; s < S; ++s)
    if (active[s]) {
      ++slots_[s].len;
      deliver(static_cast<int>(s), std::span(logits).subspan(s * V, V));
    }
}

void BatchEngine::deliver(int s, std::span<const float> logits) {
  Slot& slot = slots_[static_cast<size_t>(s)];
  const JobSpec& spec = slot.job->spec();
  SamplingOptions opts = spec.sampling;
  const auto vocab = static_cast<size_t>(tokenizer_.vocab_size());
  if (vocab < logits.size()) logits = logits.first(vocab);  // ids past the tokenizer never decode
  const int32_t tok = sample_token(logits, opts, slot.rng);
  ++slot.generated;
  if (tokenizer_.eos_id() && tok == *tokenizer_.eos_id()) {
    slot.job->emit(slot.text->flush());
    return release(s, FinishReason::stop);
  }
  slot.job->emit(slot.text->push(tokenizer_.decode(std::span(&tok, 1))));
  if (slot.text->stopped()) return release(s, FinishReason::stop);
  const int64_t total = static_cast<int64_t>(spec.prompt.size()) + slot.generated;
  if (slot.generated >= spec.max_tokens || total >= max_context_) {
    slot.job->emit(slot.text->flush());
    return release(s, FinishReason::length);
  }
  slot.next = tok;
}

void BatchEngine::release(int s, FinishReason r, std::string error) {
  Slot& slot = slots_[static_cast<size_t>(s)];
  slot.job->finish(r, slot.generated, std::move(error));
  slot = Slot{};
  std::lock_guard lk(mu_);
  --active_;
  ++stats_.finished[static_cast<int>(r)];
}

}  // namespace tandem::serve
