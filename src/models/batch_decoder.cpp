#include "models/batch_decoder.h"

#include <bit>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace tandem {

struct BatchDecoder::Pass {
  Graph graph;
  ModelNodes nodes;
  std::unique_ptr<Program> program;
  Tensor ids, positions, lens;
};

BatchDecoder::BatchDecoder(const Model& model, Backend& backend, const ParamStore& params, int slots,
                           int64_t max_context)
    : model_(model), backend_(backend), params_(params), slots_(slots), V_(model.vocab_size()) {
  const int64_t tmax = model_.kv_cache_shape(1)[1];
  max_context_ = max_context > 0 ? max_context : model_.context_length();
  check(max_context_ >= 2 && max_context_ <= tmax, "--max-context ", max_context_, " must be in [2, ", tmax,
        "] (the model's context)");
  check(slots >= 1 && slots <= 1024, "--max-batch ", slots, " must be in [1, 1024]");
  prefill_.resize(64);
  // The decode program over the whole pool, with the pool's caches bound once and for all.
  const int64_t S = slots;
  decode_ = std::make_unique<Pass>();
  decode_->nodes = model_.build(decode_->graph, S, 1, GraphMode::decode);
  decode_->program = std::make_unique<Program>(decode_->graph, backend_, std::set<NodeId>{decode_->nodes.logits});
  params_.bind(*decode_->program, decode_->nodes);
  for (NodeId c : decode_->nodes.kv_caches) {
    caches_.push_back(Tensor::zeros(backend_, model_.kv_cache_shape(S), DType::f32));
    decode_->program->bind(c, caches_.back());
  }
  decode_->ids = Tensor::zeros(backend_, {S, 1}, DType::i32);
  decode_->positions = Tensor::zeros(backend_, {S, 1}, DType::i32);
  decode_->lens = Tensor::zeros(backend_, {S}, DType::i32);
  decode_->program->bind(decode_->nodes.input_ids, decode_->ids);
  decode_->program->bind(decode_->nodes.position_ids, decode_->positions);
  decode_->program->bind(decode_->nodes.cache_len, decode_->lens);
}

BatchDecoder::~BatchDecoder() = default;

BatchDecoder::Pass& BatchDecoder::prefill_pass(int64_t T) {
  auto& p = prefill_[static_cast<size_t>(std::countr_zero(static_cast<uint64_t>(T)))];
  if (!p) {
    p = std::make_unique<Pass>();
    p->nodes = model_.build(p->graph, 1, T, GraphMode::decode);
    p->program = std::make_unique<Program>(p->graph, backend_, std::set<NodeId>{p->nodes.logits});
    params_.bind(*p->program, p->nodes);
    p->ids = Tensor::zeros(backend_, {1, T}, DType::i32);
    p->positions = Tensor::zeros(backend_, {1, T}, DType::i32);
    p->lens = Tensor::zeros(backend_, {1}, DType::i32);
    p->program->bind(p->nodes.input_ids, p->ids);
    p->program->bind(p->nodes.position_ids, p->positions);
    p->program->bind(p->nodes.cache_len, p->lens);
  }
  return *p;
}

// A slot's rows of one layer's pool cache, as the [1, Tmax, W] cache a B=1 program expects.
static Tensor slot_view(const Tensor& pool, int64_t s) {
  Tensor t = pool;
  t.shape = {1, pool.shape[1], pool.shape[2]};
  t.strides = contiguous_strides(t.shape);
  t.offset += static_cast<size_t>(s * pool.shape[1] * pool.shape[2]) * dtype_size(pool.dtype);
  return t;
}

int64_t BatchDecoder::prefill_chunk(int s, std::span<const int32_t> prompt, int64_t done, std::vector<float>& last) {
  const int64_t remaining = static_cast<int64_t>(prompt.size()) - done;
  const auto T = static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(std::min(remaining, kMaxPrefillChunk))));
  Pass& p = prefill_pass(T);
  for (size_t l = 0; l < caches_.size(); ++l) p.program->bind(p.nodes.kv_caches[l], slot_view(caches_[l], s));
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), static_cast<int32_t>(done));
  p.ids.copy_from_host_i32(prompt.subspan(static_cast<size_t>(done), static_cast<size_t>(T)));
  p.positions.copy_from_host_i32(pos);
  const auto len = static_cast<int32_t>(done);
  p.lens.copy_from_host_i32(std::span(&len, 1));
  p.program->run();
  done += T;
  // Only the last position's logits matter: download that row alone.
  if (done == static_cast<int64_t>(prompt.size())) last = last_logits_row(p.program->get(p.nodes.logits), V_).to_host();
  return done;
}

const std::vector<float>& BatchDecoder::prefill_all(const std::vector<std::span<const int32_t>>& rows) {
  const auto S = static_cast<int64_t>(slots_);
  check(static_cast<int64_t>(rows.size()) == S, "prefill_all: one prompt per slot");
  const auto L = static_cast<int64_t>(rows[0].size());
  auto& p = prefill_all_[L];
  if (!p) {
    p = std::make_unique<Pass>();
    p->nodes = model_.build(p->graph, S, L, GraphMode::decode);
    p->program = std::make_unique<Program>(p->graph, backend_, std::set<NodeId>{p->nodes.logits});
    params_.bind(*p->program, p->nodes);
    for (size_t l = 0; l < caches_.size(); ++l) p->program->bind(p->nodes.kv_caches[l], caches_[l]);
    p->ids = Tensor::zeros(backend_, {S, L}, DType::i32);
    std::vector<int32_t> pos(static_cast<size_t>(S * L));
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(static_cast<int64_t>(i) % L);
    p->positions = Tensor::from_host_i32(backend_, {S, L}, pos);
    p->lens = Tensor::zeros(backend_, {S}, DType::i32);  // every slot starts empty
    p->program->bind(p->nodes.input_ids, p->ids);
    p->program->bind(p->nodes.position_ids, p->positions);
    p->program->bind(p->nodes.cache_len, p->lens);
  }
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(S * L));
  for (const auto& r : rows) {
    check(static_cast<int64_t>(r.size()) == L, "prefill_all: prompts of different lengths");
    ids.insert(ids.end(), r.begin(), r.end());
  }
  p->ids.copy_from_host_i32(ids);
  p->program->run();
  // [S, L, V], or [S, 1, V] where the model computes the last position only: each slot's last row.
  const std::vector<float> all = p->program->get(p->nodes.logits).to_host();
  const auto V = static_cast<size_t>(V_), per = all.size() / static_cast<size_t>(S);
  logits_.resize(static_cast<size_t>(S) * V);
  for (size_t s = 0; s < static_cast<size_t>(S); ++s)
    std::copy_n(all.begin() + static_cast<std::ptrdiff_t>(s * per + per - V), V,
                logits_.begin() + static_cast<std::ptrdiff_t>(s * V));
  return logits_;
}

const std::vector<float>& BatchDecoder::decode(std::span<const int32_t> next, std::span<const int64_t> len,
                                               std::span<const uint8_t> active) {
  const auto S = static_cast<size_t>(slots_);
  std::vector<int32_t> ids(S, 0), pos(S, 0), lens(S, 0);
  for (size_t s = 0; s < S; ++s)
    if (active[s]) {
      ids[s] = next[s];
      pos[s] = lens[s] = static_cast<int32_t>(len[s]);
    }
  decode_->ids.copy_from_host_i32(ids);
  decode_->positions.copy_from_host_i32(pos);
  decode_->lens.copy_from_host_i32(lens);
  decode_->program->run();
  logits_ = decode_->program->get(decode_->nodes.logits).to_host();
  return logits_;
}

namespace {
// Entropy (nats) of softmax(logits / T), the distribution sample_token draws from at T > 0 with no
// top-k/top-p (at T = 0, of softmax(logits)).
double entropy(std::span<const float> logits, float temperature) {
  const double inv = temperature > 0 ? 1.0 / temperature : 1.0;
  double mx = -INFINITY, z = 0, ez = 0;
  for (float x : logits) mx = std::max(mx, x * inv);
  for (float x : logits) {
    const double a = x * inv - mx, e = std::exp(a);
    z += e;
    ez += e * a;
  }
  return std::log(z) - ez / z;
}
}  // namespace

std::vector<SampledSequence> sample_batch(BatchDecoder& dec, const std::vector<std::vector<int32_t>>& prompts,
                                          std::span<const uint64_t> seeds, const SamplingOptions& opts,
                                          int max_new_tokens, std::optional<int32_t> stop) {
  check(seeds.size() == prompts.size(), "sample_batch: one seed per prompt");
  const auto S = static_cast<size_t>(dec.slots());
  const auto V = static_cast<size_t>(dec.vocab_size());
  std::vector<SampledSequence> out(prompts.size());
  struct Slot {
    int64_t row = -1, len = 0;
    int32_t next = 0;
    std::mt19937_64 rng;
  };
  std::vector<Slot> slots(S);
  // Takes a sampled token for slot s; returns whether its row goes on.
  auto take = [&](Slot& sl, std::span<const float> logits) {
    SampledSequence& q = out[static_cast<size_t>(sl.row)];
    if (opts.vocab_limit > 0 && static_cast<size_t>(opts.vocab_limit) < logits.size())
      logits = logits.first(static_cast<size_t>(opts.vocab_limit));
    q.entropy += entropy(logits, opts.temperature);
    const int32_t tok = sample_token(logits, opts, sl.rng);
    q.tokens.push_back(tok);
    if (stop && tok == *stop) return false;
    if (static_cast<int>(q.tokens.size()) >= max_new_tokens || sl.len + 1 >= dec.max_context()) {
      q.truncated = true;
      return false;
    }
    sl.next = tok;
    return true;
  };
  std::vector<int32_t> next(S);
  std::vector<int64_t> len(S);
  std::vector<uint8_t> active(S);
  std::vector<float> last;
  for (size_t first = 0; first < prompts.size(); first += S) {
    const size_t n = std::min(S, prompts.size() - first);
    bool same = true;
    for (size_t i = 0; i < n; ++i) {
      const auto& p = prompts[first + i];
      check(!p.empty() && static_cast<int64_t>(p.size()) < dec.max_context(), "sample_batch: prompt ", first + i,
            " has ", p.size(), " tokens (the context holds ", dec.max_context(), ")");
      same = same && p.size() == prompts[first].size();
    }
    // Prefill the wave: one pass when the prompts share a length (spare slots repeat the first
    // prompt and are not sampled), else slot by slot.
    const std::vector<float>* wave_logits = nullptr;
    if (same) {
      std::vector<std::span<const int32_t>> rows(S, prompts[first]);
      for (size_t i = 0; i < n; ++i) rows[i] = prompts[first + i];
      wave_logits = &dec.prefill_all(rows);
    }
    for (size_t s = 0; s < S; ++s) {
      Slot& sl = slots[s];
      sl.row = s < n ? static_cast<int64_t>(first + s) : -1;
      if (sl.row < 0) continue;
      const auto& p = prompts[first + s];
      sl.rng.seed(seeds[first + s]);
      sl.len = static_cast<int64_t>(p.size());
      std::span<const float> lg;
      if (wave_logits) {
        lg = std::span(*wave_logits).subspan(s * V, V);
      } else {
        for (int64_t done = 0; done < sl.len;) done = dec.prefill_chunk(static_cast<int>(s), p, done, last);
        lg = last;
      }
      if (max_new_tokens <= 0) {
        out[static_cast<size_t>(sl.row)].truncated = true;
        sl.row = -1;
      } else if (!take(sl, lg)) {
        sl.row = -1;
      }
    }
    for (;;) {
      bool any = false;
      for (size_t s = 0; s < S; ++s) {
        active[s] = slots[s].row >= 0;
        next[s] = slots[s].next;
        len[s] = slots[s].len;
        any = any || active[s];
      }
      if (!any) break;
      const std::vector<float>& logits = dec.decode(next, len, active);
      for (size_t s = 0; s < S; ++s) {
        if (!active[s]) continue;
        ++slots[s].len;
        if (!take(slots[s], std::span(logits).subspan(s * V, V))) slots[s].row = -1;
      }
    }
  }
  return out;
}

}  // namespace tandem
