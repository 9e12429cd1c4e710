#include "train/grpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/backend.h"
#include "data/task.h"
#include "models/batch_decoder.h"
#include "tokenizer/tokenizer.h"
#include "dist/communicator.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/grpo_loss.h"
#include "train/grpo_step.h"
#include "train/rewards.h"
#include "train/run_dir.h"
#include "train/step.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// splitmix64: independent streams from (seed, step, row) without shared state.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
uint64_t mix(uint64_t a, uint64_t b, uint64_t c = 0) { return mix(mix(mix(a) ^ b) ^ c); }

struct Prompt {
  std::string text, answer;
  std::vector<int32_t> ids;
};

std::vector<Prompt> read_prompts(const fs::path& path, const Tokenizer& tok, int64_t limit) {
  std::ifstream in(path);
  check(in.good(), path.string(), ": cannot open");
  std::vector<Prompt> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw Error(path.string() + ":" + std::to_string(n) + ": not JSON: " + e.what());
    }
    check(j.is_object() && j.contains("prompt") && j["prompt"].is_string() && j.contains("answer") && j["answer"].is_string(),
          path.string(), ":", n, ": expected {\"prompt\": string, \"answer\": string}");
    Prompt p{j["prompt"].get<std::string>(), j["answer"].get<std::string>(), {}};
    p.ids = tok.encode(p.text);
    check(!p.ids.empty(), path.string(), ":", n, ": empty prompt");
    out.push_back(std::move(p));
    if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) break;
  }
  check(!out.empty(), path.string(), ": no prompts");
  return out;
}

struct Rollout {
  std::vector<const Prompt*> prompts;  // per row
  std::vector<SampledSequence> seqs;
  std::vector<std::string> texts;
};

Rollout sample(BatchDecoder& dec, const Tokenizer& tok, std::vector<const Prompt*> rows, std::span<const uint64_t> seeds,
               double temperature, int64_t max_new, std::optional<int32_t> stop) {
  Rollout r;
  r.prompts = std::move(rows);
  std::vector<std::vector<int32_t>> ids;
  for (const Prompt* p : r.prompts) ids.push_back(p->ids);
  SamplingOptions so;
  so.temperature = static_cast<float>(temperature);
  so.vocab_limit = tok.vocab_size();
  r.seqs = sample_batch(dec, ids, seeds, so, static_cast<int>(max_new), stop);
  for (const auto& s : r.seqs) r.texts.push_back(tok.decode(s.tokens));
  return r;
}

// The groups (of `group` consecutive rewards) whose rewards are all equal, in order: their
// advantages are 0, so they add nothing to the gradient.
std::vector<int64_t> zero_spread_groups(const std::vector<double>& rewards, int64_t group) {
  std::vector<int64_t> out;
  for (size_t g = 0; g * static_cast<size_t>(group) < rewards.size(); ++g) {
    const auto first = rewards.begin() + static_cast<std::ptrdiff_t>(g * static_cast<size_t>(group));
    if (std::all_of(first, first + group, [&](double r) { return r == *first; })) out.push_back(static_cast<int64_t>(g));
  }
  return out;
}

bool correct(const std::string& completion, const std::string& answer) {
  const std::string a = extract_answer(completion);
  return !a.empty() && a == answer;
}

nlohmann::json evaluate(BatchDecoder& dec, const Tokenizer& tok, const std::vector<Prompt>& eval, const GrpoOptions& o,
                        std::optional<int32_t> stop) {
  std::vector<const Prompt*> rows;
  for (const auto& p : eval) rows.push_back(&p);
  std::vector<uint64_t> seeds(rows.size(), 0);
  const Rollout greedy = sample(dec, tok, rows, seeds, 0.0, o.max_new_tokens, stop);
  double acc = 0, len = 0, think = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    acc += correct(greedy.texts[i], rows[i]->answer);
    len += static_cast<double>(greedy.seqs[i].tokens.size());
    think += uses_scratchpad(greedy.texts[i]);
  }
  const auto n = static_cast<double>(rows.size());
  nlohmann::json j{{"greedy_accuracy", acc / n}, {"greedy_len_mean", len / n}, {"greedy_scratchpad_frac", think / n}};
  if (o.eval_samples > 0) {
    // The same seeds at every evaluation (and in every run with this --seed): only the weights differ.
    std::vector<const Prompt*> srows;
    std::vector<uint64_t> sseeds;
    for (size_t i = 0; i < rows.size(); ++i)
      for (int64_t k = 0; k < o.eval_samples; ++k) {
        srows.push_back(rows[i]);
        sseeds.push_back(mix(o.seed ^ 0x6576616cULL, i, static_cast<uint64_t>(k)));
      }
    const Rollout s = sample(dec, tok, srows, sseeds, 1.0, o.max_new_tokens, stop);
    double pass1 = 0, passk = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      int64_t ok = 0;
      for (int64_t k = 0; k < o.eval_samples; ++k) ok += correct(s.texts[i * o.eval_samples + k], rows[i]->answer);
      pass1 += static_cast<double>(ok) / static_cast<double>(o.eval_samples);
      passk += ok > 0;
    }
    j["pass@1"] = pass1 / n;
    j["pass@" + std::to_string(o.eval_samples)] = passk / n;
  }
  j["prompts"] = rows.size();
  return j;
}

// One rollout batch: this rank's rows (prompt, completion) after any resampling rounds, with
// their rewards and what the step's metrics need about the sampling.
struct StepRollout {
  Rollout ro;
  std::vector<double> rewards;
  double rollout_s = 0, reward_s = 0;
  int64_t sampled_tokens = 0;  // completion tokens sampled, every round
  int64_t flat_sampled = 0;    // groups without reward spread in the first round
  int64_t resampled = 0, rounds = 0;
};

struct StepUpdate {
  GrpoLossResult res;  // this rank's share (the last update of the batch)
  double loss = 0, norm = 0, update_s = 0;
  int64_t tokens = 0;  // completion tokens of the whole step
  bool skipped = false;
};

class GrpoRun {
 public:
  explicit GrpoRun(const GrpoOptions& o) : o_(o), reward_(o.reward, o.reward_timeout, "--reward") {}
  void run();

 private:
  // Setup phases, in order.
  void open_run();
  void build_model();
  void load_prompts();
  void build_programs();
  void open_outputs();
  // A step's phases, in order.
  StepRollout rollout(int64_t step);
  GrpoBatch batch(const StepRollout& r);
  StepUpdate update(int64_t step, GrpoBatch& b);
  void record(int64_t step, const StepRollout& r, const StepUpdate& u, Clock::time_point t_step);
  void evaluate(int64_t step);
  void save(int64_t step);
  double learning_rate(int64_t step) const {  // linear warm-up, then constant
    return o_.learning_rate * std::min(1.0, static_cast<double>(step) / static_cast<double>(std::max<int64_t>(o_.warmup_steps, 1)));
  }

  const GrpoOptions& o_;
  const RewardFn reward_;
  GrpoLossOptions lo_;
  std::unique_ptr<Communicator> comm_;
  bool lead_ = true;  // rank 0: the one process that writes metrics and checkpoints
  int64_t local_groups_ = 0, first_group_ = 0;  // this rank's groups of the step's prompts
  std::unique_ptr<RunLock> lock_;
  fs::path ref_dir_, start_dir_, tok_path_;
  TrainerState state_;
  std::optional<Tokenizer> tok_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> backend_;
  ParamStore params_;
  std::unique_ptr<ParamStore> ref_params_;
  std::vector<Prompt> prompts_, eval_;
  std::optional<int32_t> stop_;
  int64_t S_ = 0, SL_ = 0, T_ = 0;  // rows of the step, rows of this rank, positions
  std::unique_ptr<BatchDecoder> decoder_;
  std::unique_ptr<WeightedNllProgram> update_;
  std::unique_ptr<DataParallel> dp_;
  std::unique_ptr<TokenNllProgram> current_, reference_;
  nlohmann::json run_cfg_;
  std::ofstream metrics_;
  TrainConfig adam_;
  std::vector<int32_t> x_, y_;
  std::vector<const Tensor*> grads_;
};

// One page: setup, then per step rollout (sampling, rewards, resampling), batch, update
// (log-probs, weights, forward-backward, reduce, optimizer), metrics, evaluation, checkpoint.
void GrpoRun::run() {
  open_run();
  build_model();
  load_prompts();
  build_programs();
  open_outputs();
  int64_t step = state_.step;
  if (step == 0) evaluate(0);
  while (step < o_.steps) {
    ++step;
    const auto t_step = Clock::now();
    const StepRollout r = rollout(step);
    GrpoBatch b = batch(r);
    const StepUpdate u = update(step, b);
    record(step, r, u, t_step);
    if (o_.eval_every > 0 && step % o_.eval_every == 0 && step != o_.steps) evaluate(step);
    if (o_.checkpoint_every > 0 && step % o_.checkpoint_every == 0 && step != o_.steps) save(step);
  }
  if (step > state_.step) {  // the last step's evaluation and checkpoint (none for --steps 0: evaluation only)
    if (o_.eval_every > 0) evaluate(step);
    save(step);
  }
}

// Options, the communicator, the run directory and where the run starts from.
void GrpoRun::open_run() {
  const GrpoOptions& o = o_;
  check(o.group >= 2, "--group must be >= 2 (advantages compare completions of one prompt)");
  check(o.prompts_per_step >= 1 && o.steps >= 0 && o.max_new_tokens >= 1 && o.updates_per_batch >= 1,
        "--prompts-per-step, --max-new-tokens and --updates-per-batch must be >= 1, --steps >= 0");
  check(o.temperature > 0, "--temperature must be > 0 (the policy is sampled)");
  check(o.resample_zero_spread >= 0, "--resample-zero-spread must be >= 0");
  lo_.type = parse_grpo_loss_type(o.loss, "--loss");
  lo_.clip_low = o.clip;
  lo_.clip_high = o.clip_high < 0 ? o.clip : o.clip_high;
  lo_.kl_beta = o.kl_beta;
  lo_.max_new_tokens = o.max_new_tokens;
  // Data parallelism (under mpirun): rank r samples groups [r*P/N, (r+1)*P/N) of the step's P
  // prompts, scores them with its own reward program, and the ranks' gradient sums are added as in
  // `train` (train/data_parallel.h, fast mode); every rank then holds the same weights.
  comm_ = make_communicator("auto", o.collective_timeout);
  lead_ = comm_->rank() == 0;
  check(o.prompts_per_step % comm_->size() == 0, "--prompts-per-step ", o.prompts_per_step, " is not a multiple of the ",
        comm_->size(), " ranks (each rank samples an equal share of the prompts)");
  local_groups_ = o.prompts_per_step / comm_->size();
  first_group_ = comm_->rank() * local_groups_;

  // The run directory: a resumed run continues from its newest checkpoint; a fresh one starts
  // from --model (the SFT model, also the KL reference).
  if (lead_) {
    fs::create_directories(o.out_dir);
    lock_ = std::make_unique<RunLock>(o.out_dir, "grpo");
    remove_stale_checkpoint_files(o.out_dir);
  }
  comm_->barrier();
  ref_dir_ = resolve_model_dir(o.model);
  start_dir_ = ref_dir_;
  if (o.resume) {
    const auto cks = list_checkpoints(o.out_dir);
    check(!cks.empty(), o.out_dir.string(), ": --resume: no checkpoint to resume from");
    start_dir_ = cks.front();
    state_ = read_trainer_state(start_dir_);
  } else {
    check(list_checkpoints(o.out_dir).empty(), o.out_dir.string(),
          ": already holds checkpoints (use --resume, or another --out)");
  }
  if (fs::exists(start_dir_ / "manifest.json")) verify_checkpoint(start_dir_);
}

// The tokenizer, model, backend, weights (and the frozen reference's, for the KL).
void GrpoRun::build_model() {
  tok_path_ = start_dir_ / "tokenizer.json";
  check(fs::exists(tok_path_), start_dir_.string(), ": no tokenizer.json (the prompts must be encoded)");
  tok_ = Tokenizer::load(tok_path_);
  model_ = model_from_hf_config(read_json_file(start_dir_ / "config.json"), (start_dir_ / "config.json").string());
  check(tok_->vocab_size() <= model_->vocab_size(), tok_path_.string(), ": vocabulary of ", tok_->vocab_size(),
        " tokens does not fit the model's vocab_size ", model_->vocab_size());
  backend_ = make_backend(o_.backend);
  params_ = ParamStore::load(*model_, *backend_, start_dir_ / "model.safetensors");
  if (o_.kl_beta != 0)
    ref_params_ = std::make_unique<ParamStore>(ParamStore::load(*model_, *backend_, ref_dir_ / "model.safetensors"));
}

// The prompts, the held-out ones, and the step's [S, T] shape.
void GrpoRun::load_prompts() {
  prompts_ = read_prompts(o_.prompts, *tok_, 0);
  if (!o_.eval.empty()) eval_ = read_prompts(o_.eval, *tok_, o_.eval_limit);
  const std::vector<int32_t> nl = tok_->encode(std::string(1, kStop));
  stop_ = nl.size() == 1 ? std::optional(nl[0]) : tok_->eos_id();
  size_t max_prompt = 0;
  for (const std::vector<Prompt>* set : {&prompts_, &eval_})
    for (const auto& p : *set) max_prompt = std::max(max_prompt, p.ids.size());
  // One fixed [SL, T] shape for the update programs (SL: this rank's rows of the S in a step):
  // prompt + completion, less the last token.
  S_ = o_.group * o_.prompts_per_step;
  SL_ = o_.group * local_groups_;
  T_ = static_cast<int64_t>(max_prompt) + o_.max_new_tokens - 1;
  check(T_ + 1 <= model_->context_length(), "the longest prompt (", max_prompt, " tokens) plus --max-new-tokens ",
        o_.max_new_tokens, " exceeds the model's context of ", model_->context_length());
}

// The rollout decoder, the update programs, data parallelism with the AdamW moments.
void GrpoRun::build_programs() {
  const int slots = static_cast<int>(o_.decode_batch > 0 ? o_.decode_batch : std::min<int64_t>(SL_, 256));
  decoder_ = std::make_unique<BatchDecoder>(*model_, *backend_, params_, slots, T_ + 1);
  update_ = std::make_unique<WeightedNllProgram>(*model_, *backend_, params_, SL_, T_);
  dp_ = std::make_unique<DataParallel>(*comm_, ParallelOptions{}, params_, *backend_, S_);
  if (o_.resume) {
    std::vector<Tensor> m = params_.zeros_like(*backend_), v = params_.zeros_like(*backend_);
    read_optimizer_state(start_dir_, params_, m, v);
    dp_->load_moments(m, v);
  }
  // Old log-probabilities are needed once the ratio can differ from 1 (more than one update per
  // batch); current ones also for the KL. With one update and no KL the weights are A / N alone.
  const bool need_logp = o_.updates_per_batch > 1 || o_.kl_beta != 0;
  if (need_logp) current_ = std::make_unique<TokenNllProgram>(*model_, *backend_, params_, SL_, T_);
  if (ref_params_) reference_ = std::make_unique<TokenNllProgram>(*model_, *backend_, *ref_params_, SL_, T_);
  x_.resize(static_cast<size_t>(SL_ * T_));
  y_.resize(x_.size());
  grads_.resize(params_.tensors.size());
}

// The settings a checkpoint records (and a resume checks), metrics.jsonl, the AdamW settings.
void GrpoRun::open_outputs() {
  const GrpoOptions& o = o_;
  run_cfg_ = {{"grpo",
               {{"model", ref_dir_.string()}, {"prompts", o.prompts.string()}, {"group", o.group},
                {"prompts_per_step", o.prompts_per_step}, {"max_new_tokens", o.max_new_tokens},
                {"temperature", o.temperature}, {"loss", o.loss}, {"clip", lo_.clip_low},
                {"clip_high", lo_.clip_high}, {"kl_beta", o.kl_beta}, {"reward", o.reward},
                {"learning_rate", o.learning_rate}, {"warmup_steps", o.warmup_steps},
                {"weight_decay", o.weight_decay}, {"grad_clip", o.grad_clip},
                {"updates_per_batch", o.updates_per_batch}, {"resample_zero_spread", o.resample_zero_spread},
                {"seed", o.seed}}}};
  if (o.resume) {
    check(state_.seed == o.seed, "--resume: the run used --seed ", state_.seed, ", not ", o.seed);
    check(state_.train_config.contains("grpo"), start_dir_.string(), ": not a grpo checkpoint (no grpo settings)");
  }
  if (lead_) {
    const fs::path metrics_path = o.out_dir / "metrics.jsonl";
    if (o.resume) truncate_metrics(metrics_path, state_.step);
    else fs::remove(metrics_path);
    metrics_.open(metrics_path, std::ios::app);
  }
  adam_ = TrainConfig::from_json({{"model_type", model_->type()}}, "grpo");
  adam_.weight_decay = o.weight_decay;
  adam_.grad_clip = o.grad_clip;
}

// Prompts, completions and rewards of this rank's groups, with the resampling rounds.
StepRollout GrpoRun::rollout(int64_t step) {
  const GrpoOptions& o = o_;
  const auto t0 = Clock::now();
  StepRollout r;
  std::mt19937_64 prng(mix(o.seed, static_cast<uint64_t>(step)));
  std::vector<const Prompt*> chosen;
  for (int64_t p = 0; p < o.prompts_per_step; ++p) chosen.push_back(&prompts_[prng() % prompts_.size()]);
  std::vector<const Prompt*> rows;
  std::vector<uint64_t> seeds;
  for (int64_t p = first_group_; p < first_group_ + local_groups_; ++p)
    for (int64_t g = 0; g < o.group; ++g) {
      rows.push_back(chosen[static_cast<size_t>(p)]);
      seeds.push_back(mix(o.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(p * o.group + g + 1)));
    }
  r.ro = sample(*decoder_, *tok_, rows, seeds, o.temperature, o.max_new_tokens, stop_);
  r.rollout_s = seconds_since(t0);
  auto score = [&](const Rollout& ro) {
    const auto t = Clock::now();
    std::vector<RewardItem> items;
    for (size_t i = 0; i < ro.prompts.size(); ++i) items.push_back({ro.prompts[i]->text, ro.texts[i], ro.prompts[i]->answer});
    std::vector<double> out = reward_(items);
    r.reward_s += seconds_since(t);
    return out;
  };
  r.rewards = score(r.ro);
  for (const auto& sq : r.ro.seqs) r.sampled_tokens += static_cast<int64_t>(sq.tokens.size());
  r.flat_sampled = static_cast<int64_t>(zero_spread_groups(r.rewards, o.group).size());
  for (int64_t round = 1; round <= o.resample_zero_spread; ++round) {
    // DAPO's dynamic sampling: each group without reward spread is replaced by a fresh prompt's
    // group when that one has spread. Prompts and seeds derive from (seed, step, round, group):
    // nothing to save for --resume, and the next step draws the same whatever happened here.
    const std::vector<int64_t> flat = zero_spread_groups(r.rewards, o.group);
    if (flat.empty()) break;
    ++r.rounds;
    r.resampled += static_cast<int64_t>(flat.size());
    const uint64_t base = mix(o.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(round));
    std::vector<const Prompt*> rrows;
    std::vector<uint64_t> rseeds;
    for (int64_t g : flat) {
      const auto global = static_cast<uint64_t>(first_group_ + g);
      const Prompt* pr = &prompts_[mix(base, global) % prompts_.size()];
      for (int64_t k = 0; k < o.group; ++k) {
        rrows.push_back(pr);
        rseeds.push_back(mix(base, global, static_cast<uint64_t>(k + 1)));
      }
    }
    const auto t = Clock::now();
    Rollout extra = sample(*decoder_, *tok_, rrows, rseeds, o.temperature, o.max_new_tokens, stop_);
    r.rollout_s += seconds_since(t);
    for (const auto& sq : extra.seqs) r.sampled_tokens += static_cast<int64_t>(sq.tokens.size());
    const std::vector<double> extra_rewards = score(extra);
    const std::vector<int64_t> still_flat = zero_spread_groups(extra_rewards, o.group);
    for (size_t j = 0; j < flat.size(); ++j) {
      if (std::binary_search(still_flat.begin(), still_flat.end(), static_cast<int64_t>(j))) continue;
      for (int64_t k = 0; k < o.group; ++k) {
        const auto to = static_cast<size_t>(flat[j] * o.group + k), from = j * static_cast<size_t>(o.group) + static_cast<size_t>(k);
        r.ro.prompts[to] = extra.prompts[from];
        r.ro.seqs[to] = std::move(extra.seqs[from]);
        r.ro.texts[to] = std::move(extra.texts[from]);
        r.rewards[to] = extra_rewards[from];
      }
    }
  }
  return r;
}

// The [SL, T] inputs and labels (in x_, y_), the completion mask and the advantages.
GrpoBatch GrpoRun::batch(const StepRollout& r) {
  GrpoBatch b;
  b.S = SL_;
  b.T = T_;
  b.advantages = grpo_advantages(r.rewards, o_.group, lo_.type);
  b.mask.assign(static_cast<size_t>(SL_ * T_), 0);
  std::fill(x_.begin(), x_.end(), 0);
  std::fill(y_.begin(), y_.end(), -1);
  for (int64_t s = 0; s < SL_; ++s) {
    const auto& p = r.ro.prompts[static_cast<size_t>(s)]->ids;
    const auto& c = r.ro.seqs[static_cast<size_t>(s)].tokens;
    const auto Lp = static_cast<int64_t>(p.size());
    for (int64_t t = 0; t < Lp; ++t) x_[static_cast<size_t>(s * T_ + t)] = p[static_cast<size_t>(t)];
    for (size_t k = 0; k < c.size(); ++k) {
      const int64_t pos = Lp - 1 + static_cast<int64_t>(k);  // predicts c[k]
      if (k + 1 < c.size()) x_[static_cast<size_t>(s * T_ + pos + 1)] = c[k];
      y_[static_cast<size_t>(s * T_ + pos)] = c[k];
      b.mask[static_cast<size_t>(s * T_ + pos)] = 1;
    }
  }
  return b;
}

// updates_per_batch times: log-probabilities, the objective's token weights, forward-backward,
// the ranks' gradients reduced, AdamW.
StepUpdate GrpoRun::update(int64_t step, GrpoBatch& b) {
  const auto t0 = Clock::now();
  StepUpdate u;
  int64_t tokens = 0;
  for (uint8_t m : b.mask) tokens += m;
  // The objective's normalisers count the whole step's tokens and sequences, so the ranks'
  // gradient sums add up to the single-process gradient.
  u.tokens = static_cast<int64_t>(comm_->all_reduce_sum(static_cast<double>(tokens)));
  b.logp.assign(static_cast<size_t>(SL_ * T_), 0.0);
  b.old_logp = b.logp;
  if (reference_) {
    const std::vector<float> nll = reference_->run(x_, y_);
    b.ref_logp.resize(nll.size());
    for (size_t i = 0; i < nll.size(); ++i) b.ref_logp[i] = -static_cast<double>(nll[i]);
  }
  for (int64_t k = 0; k < o_.updates_per_batch; ++k) {
    if (current_) {
      const std::vector<float> nll = current_->run(x_, y_);
      for (size_t i = 0; i < nll.size(); ++i) b.logp[i] = -static_cast<double>(nll[i]);
      if (k == 0) b.old_logp = b.logp;
    }
    u.res = grpo_token_weights(b, lo_, u.tokens, S_);
    update_->run(x_, y_, u.res.weights);
    for (size_t i = 0; i < grads_.size(); ++i) grads_[i] = &update_->grad(i);
    u.norm = dp_->reduce(grads_, 1.0);  // the same bits on every rank: they decide alike
    u.loss = comm_->all_reduce_sum(u.res.loss);
    if (!std::isfinite(u.norm) || !std::isfinite(u.loss)) {
      if (lead_)
        metrics_ << nlohmann::json{{"event", "skip"}, {"step", step}, {"detail", "non-finite loss or gradient norm"}}.dump()
                 << "\n";
      u.skipped = true;
      break;
    }
    const double scale = o_.grad_clip > 0 ? std::min(1.0, o_.grad_clip / (u.norm + 1e-6)) : 1.0;
    dp_->step(params_, grads_, adam_, learning_rate(step), (step - 1) * o_.updates_per_batch + k + 1,
              static_cast<float>(scale));
  }
  u.update_s = seconds_since(t0);
  return u;
}
// The step's metrics.jsonl line, over every rank's rows (gathered in rank order: the global row
// order), written by the lead.
void GrpoRun::record(int64_t step, const StepRollout& r, const StepUpdate& u, Clock::time_point t_step) {
  constexpr size_t kRow = 6;  // per row: reward, correct, scratchpad, truncated, entropy, length
  std::vector<double> mine;
  for (size_t i = 0; i < r.rewards.size(); ++i)
    mine.insert(mine.end(), {r.rewards[i], static_cast<double>(correct(r.ro.texts[i], r.ro.prompts[i]->answer)),
                             static_cast<double>(uses_scratchpad(r.ro.texts[i])), static_cast<double>(r.ro.seqs[i].truncated),
                             r.ro.seqs[i].entropy, static_cast<double>(r.ro.seqs[i].tokens.size())});
  const auto rt = static_cast<double>(u.res.tokens);
  mine.insert(mine.end(), {static_cast<double>(r.flat_sampled), static_cast<double>(r.resampled),
                           static_cast<double>(r.rounds), static_cast<double>(r.sampled_tokens), u.res.kl * rt,
                           u.res.clip_frac * rt, u.res.clip_low_frac * rt, u.res.clip_high_frac * rt});
  std::vector<double> all(mine.size() * static_cast<size_t>(comm_->size()));
  comm_->all_gather(mine.data(), all.data(), mine.size() * sizeof(double));
  if (!lead_) return;
  std::vector<double> rewards;
  double mean = 0, var = 0, acc = 0, think = 0, trunc = 0, entropy = 0, len_max = 0, len_sum = 0;
  double flat_sampled = 0, resampled = 0, rounds = 0, sampled_tokens = 0, kl = 0, clip = 0, clip_low = 0, clip_high = 0;
  for (int rank = 0; rank < comm_->size(); ++rank) {
    const double* at = all.data() + static_cast<size_t>(rank) * mine.size();
    for (int64_t i = 0; i < SL_; ++i, at += kRow) {
      rewards.push_back(at[0]);
      acc += at[1];
      think += at[2];
      trunc += at[3];
      entropy += at[4];
      len_sum += at[5];
      len_max = std::max(len_max, at[5]);
    }
    flat_sampled += at[0];
    resampled += at[1];
    rounds = std::max(rounds, at[2]);
    sampled_tokens += at[3];
    kl += at[4];
    clip += at[5];
    clip_low += at[6];
    clip_high += at[7];
  }
  const auto n = static_cast<double>(S_), groups = static_cast<double>(o_.prompts_per_step);
  for (double x : rewards) mean += x;
  mean /= n;
  for (double x : rewards) var += (x - mean) * (x - mean);
  const auto flat = static_cast<double>(zero_spread_groups(rewards, o_.group).size());
  const double tok = u.tokens > 0 ? static_cast<double>(u.tokens) : 1.0;
  nlohmann::json m{{"step", step},
                   {"lr", learning_rate(step)},
                   {"loss", u.loss},
                   {"reward_mean", mean},
                   {"reward_std", std::sqrt(var / n)},
                   {"accuracy", acc / n},
                   {"frac_reward_zero_std", flat / groups},
                   {"frac_reward_zero_std_sampled", flat_sampled / groups},
                   {"resampled_groups", static_cast<int64_t>(resampled)},
                   {"resample_rounds", static_cast<int64_t>(rounds)},
                   {"completion_len_mean", len_sum / n},
                   {"completion_len_max", len_max},
                   {"truncated_frac", trunc / n},
                   {"scratchpad_frac", think / n},
                   {"entropy", len_sum > 0 ? entropy / len_sum : 0.0},
                   {"kl", o_.kl_beta != 0 ? nlohmann::json(kl / tok) : nlohmann::json(nullptr)},
                   {"clip_frac", clip / tok},
                   {"clip_low_frac", clip_low / tok},
                   {"clip_high_frac", clip_high / tok},
                   {"grad_norm", u.norm},
                   {"skipped", u.skipped},
                   {"rollout_s", r.rollout_s},
                   {"reward_s", r.reward_s},
                   {"update_s", u.update_s},
                   {"step_s", seconds_since(t_step)},
                   {"sampled_tokens_per_s", sampled_tokens / r.rollout_s}};
  if (comm_->size() > 1) m["ranks"] = comm_->size();
  metrics_ << m.dump() << "\n" << std::flush;
  std::printf("step %lld/%lld  reward %.3f  acc %.3f  scratchpad %.2f  len %.1f  zero-std %.2f (sampled %.2f)  | "
              "rollout %.2fs update %.2fs\n",
              static_cast<long long>(step), static_cast<long long>(o_.steps), mean, acc / n, think / n, len_sum / n,
              flat / groups, flat_sampled / groups, r.rollout_s, u.update_s);
  std::fflush(stdout);
}

// Greedy accuracy, pass@1 and pass@K on the held-out prompts (the lead only).
void GrpoRun::evaluate(int64_t step) {
  if (eval_.empty() || !lead_) return;
  const auto t0 = Clock::now();
  nlohmann::json j = ::tandem::evaluate(*decoder_, *tok_, eval_, o_, stop_);
  j["eval_s"] = seconds_since(t0);
  metrics_ << nlohmann::json{{"step", step}, {"eval", j}}.dump() << "\n" << std::flush;
  std::printf("eval step %lld: greedy accuracy %.3f, pass@1 %.3f, pass@%lld %.3f, greedy length %.1f, scratchpad %.2f\n",
              static_cast<long long>(step), j["greedy_accuracy"].get<double>(), j.value("pass@1", 0.0),
              static_cast<long long>(o_.eval_samples), j.value("pass@" + std::to_string(o_.eval_samples), 0.0),
              j["greedy_len_mean"].get<double>(), j["greedy_scratchpad_frac"].get<double>());
  std::fflush(stdout);
}

// A checkpoint in `train`'s format (generate, eval, serve read it), written by the lead.
void GrpoRun::save(int64_t step) {
  TrainerState st;
  st.step = step;
  st.seed = o_.seed;
  st.data_position = static_cast<uint64_t>(step);
  st.train_config = run_cfg_;
  std::vector<Tensor> exp_avg, exp_avg_sq;
  dp_->full_moments(exp_avg, exp_avg_sq);  // collective (with ZeRO): every rank saves
  if (!lead_) return;
  const fs::path dir = write_checkpoint(o_.out_dir, *model_, params_, exp_avg, exp_avg_sq, tok_path_, st);
  set_latest_checkpoint(o_.out_dir, dir);
  std::printf("checkpoint %s\n", dir.string().c_str());
}

}  // namespace

void grpo(const GrpoOptions& o) {
  run_as_rank([&] { GrpoRun(o).run(); });
}

}  // namespace tandem
