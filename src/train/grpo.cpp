#include "train/grpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
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

void run_grpo(const GrpoOptions& o) {
  check(o.group >= 2, "--group must be >= 2 (advantages compare completions of one prompt)");
  check(o.prompts_per_step >= 1 && o.steps >= 0 && o.max_new_tokens >= 1 && o.updates_per_batch >= 1,
        "--prompts-per-step, --max-new-tokens and --updates-per-batch must be >= 1, --steps >= 0");
  check(o.temperature > 0, "--temperature must be > 0 (the policy is sampled)");
  check(o.resample_zero_spread >= 0, "--resample-zero-spread must be >= 0");
  GrpoLossOptions lo;
  lo.type = parse_grpo_loss_type(o.loss, "--loss");
  lo.clip_low = o.clip;
  lo.clip_high = o.clip_high < 0 ? o.clip : o.clip_high;
  lo.kl_beta = o.kl_beta;
  lo.max_new_tokens = o.max_new_tokens;
  const RewardFn reward(o.reward, o.reward_timeout, "--reward");
  // Data parallelism (under mpirun): rank r samples groups [r*P/N, (r+1)*P/N) of the step's P
  // prompts, scores them with its own reward program, and the ranks' gradient sums are added as in
  // `train` (train/data_parallel.h, fast mode); every rank then holds the same weights.
  const std::unique_ptr<Communicator> comm = make_communicator("auto", o.collective_timeout);
  const bool lead = comm->rank() == 0;  // the one process that writes metrics and checkpoints
  check(o.prompts_per_step % comm->size() == 0, "--prompts-per-step ", o.prompts_per_step, " is not a multiple of the ",
        comm->size(), " ranks (each rank samples an equal share of the prompts)");
  const int64_t local_groups = o.prompts_per_step / comm->size(), first_group = comm->rank() * local_groups;

  // The run directory: a resumed run continues from its newest checkpoint; a fresh one starts
  // from --model (the SFT model, also the KL reference).
  std::unique_ptr<RunLock> lock;
  if (lead) {
    fs::create_directories(o.out_dir);
    lock = std::make_unique<RunLock>(o.out_dir, "grpo");
    remove_stale_checkpoint_files(o.out_dir);
  }
  comm->barrier();
  const fs::path ref_dir = resolve_model_dir(o.model);
  fs::path start_dir = ref_dir;
  TrainerState state;
  if (o.resume) {
    const auto cks = list_checkpoints(o.out_dir);
    check(!cks.empty(), o.out_dir.string(), ": --resume: no checkpoint to resume from");
    start_dir = cks.front();
    state = read_trainer_state(start_dir);
  } else {
    check(list_checkpoints(o.out_dir).empty(), o.out_dir.string(),
          ": already holds checkpoints (use --resume, or another --out)");
  }
  if (fs::exists(start_dir / "manifest.json")) verify_checkpoint(start_dir);
  const fs::path tok_path = start_dir / "tokenizer.json";
  check(fs::exists(tok_path), start_dir.string(), ": no tokenizer.json (the prompts must be encoded)");
  const Tokenizer tok = Tokenizer::load(tok_path);
  auto model = model_from_hf_config(read_json_file(start_dir / "config.json"), (start_dir / "config.json").string());
  check(tok.vocab_size() <= model->vocab_size(), tok_path.string(), ": vocabulary of ", tok.vocab_size(),
        " tokens does not fit the model's vocab_size ", model->vocab_size());
  auto backend = make_backend(o.backend);
  ParamStore params = ParamStore::load(*model, *backend, start_dir / "model.safetensors");
  std::unique_ptr<ParamStore> ref_params;
  if (o.kl_beta != 0) ref_params = std::make_unique<ParamStore>(ParamStore::load(*model, *backend, ref_dir / "model.safetensors"));

  const std::vector<Prompt> prompts = read_prompts(o.prompts, tok, 0);
  std::vector<Prompt> eval;
  if (!o.eval.empty()) eval = read_prompts(o.eval, tok, o.eval_limit);
  const std::vector<int32_t> nl = tok.encode(std::string(1, kStop));
  const std::optional<int32_t> stop = nl.size() == 1 ? std::optional(nl[0]) : tok.eos_id();
  size_t max_prompt = 0;
  for (const std::vector<Prompt>* set : {&prompts, static_cast<const std::vector<Prompt>*>(&eval)})
    for (const auto& p : *set) max_prompt = std::max(max_prompt, p.ids.size());
  // One fixed [SL, T] shape for the update programs (SL: this rank's rows of the S in a step):
  // prompt + completion, less the last token.
  const int64_t S = o.group * o.prompts_per_step, SL = o.group * local_groups;
  const int64_t T = static_cast<int64_t>(max_prompt) + o.max_new_tokens - 1;
  check(T + 1 <= model->context_length(), "the longest prompt (", max_prompt, " tokens) plus --max-new-tokens ",
        o.max_new_tokens, " exceeds the model's context of ", model->context_length());
  const int slots = static_cast<int>(o.decode_batch > 0 ? o.decode_batch : std::min<int64_t>(SL, 256));
  BatchDecoder decoder(*model, *backend, params, slots, T + 1);
  WeightedNllProgram update(*model, *backend, params, SL, T);
  DataParallel dp(*comm, ParallelOptions{}, params, *backend, S);
  if (o.resume) {
    std::vector<Tensor> m = params.zeros_like(*backend), v = params.zeros_like(*backend);
    read_optimizer_state(start_dir, params, m, v);
    dp.load_moments(m, v);
  }
  std::unique_ptr<TokenNllProgram> current, reference;
  // Old log-probabilities are needed once the ratio can differ from 1 (more than one update per
  // batch); current ones also for the KL. With one update and no KL the weights are A / N alone.
  const bool need_logp = o.updates_per_batch > 1 || o.kl_beta != 0;
  if (need_logp) current = std::make_unique<TokenNllProgram>(*model, *backend, params, SL, T);
  if (ref_params) reference = std::make_unique<TokenNllProgram>(*model, *backend, *ref_params, SL, T);

  nlohmann::json run_cfg{{"grpo",
                          {{"model", ref_dir.string()}, {"prompts", o.prompts.string()}, {"group", o.group},
                           {"prompts_per_step", o.prompts_per_step}, {"max_new_tokens", o.max_new_tokens},
                           {"temperature", o.temperature}, {"loss", o.loss}, {"clip", lo.clip_low},
                           {"clip_high", lo.clip_high}, {"kl_beta", o.kl_beta}, {"reward", o.reward},
                           {"learning_rate", o.learning_rate}, {"warmup_steps", o.warmup_steps},
                           {"weight_decay", o.weight_decay}, {"grad_clip", o.grad_clip},
                           {"updates_per_batch", o.updates_per_batch}, {"resample_zero_spread", o.resample_zero_spread},
                           {"seed", o.seed}}}};
  if (o.resume) {
    check(state.seed == o.seed, "--resume: the run used --seed ", state.seed, ", not ", o.seed);
    check(state.train_config.contains("grpo"), start_dir.string(), ": not a grpo checkpoint (no grpo settings)");
  }
  const fs::path metrics_path = o.out_dir / "metrics.jsonl";
  std::ofstream metrics;
  if (lead) {
    if (o.resume) truncate_metrics(metrics_path, state.step);
    else fs::remove(metrics_path);
    metrics.open(metrics_path, std::ios::app);
  }
  TrainConfig adam = TrainConfig::from_json({{"model_type", model->type()}}, "grpo");
  adam.weight_decay = o.weight_decay;
  adam.grad_clip = o.grad_clip;
  auto save = [&](int64_t step) {
    TrainerState st;
    st.step = step;
    st.seed = o.seed;
    st.data_position = static_cast<uint64_t>(step);
    st.train_config = run_cfg;
    std::vector<Tensor> exp_avg, exp_avg_sq;
    dp.full_moments(exp_avg, exp_avg_sq);  // collective (with ZeRO): every rank calls save
    if (!lead) return;
    const fs::path dir = write_checkpoint(o.out_dir, *model, params, exp_avg, exp_avg_sq, tok_path, st);
    set_latest_checkpoint(o.out_dir, dir);
    std::printf("checkpoint %s\n", dir.string().c_str());
  };
  auto run_eval = [&](int64_t step) {
    if (eval.empty() || !lead) return;
    const auto t0 = Clock::now();
    nlohmann::json j = evaluate(decoder, tok, eval, o, stop);
    j["eval_s"] = seconds_since(t0);
    metrics << nlohmann::json{{"step", step}, {"eval", j}}.dump() << "\n" << std::flush;
    std::printf("eval step %lld: greedy accuracy %.3f, pass@1 %.3f, pass@%lld %.3f, greedy length %.1f, scratchpad %.2f\n",
                static_cast<long long>(step), j["greedy_accuracy"].get<double>(), j.value("pass@1", 0.0),
                static_cast<long long>(o.eval_samples), j.value("pass@" + std::to_string(o.eval_samples), 0.0),
                j["greedy_len_mean"].get<double>(), j["greedy_scratchpad_frac"].get<double>());
    std::fflush(stdout);
  };

  int64_t step = state.step;
  if (step == 0) run_eval(0);
  std::vector<int32_t> x(static_cast<size_t>(SL * T)), y(static_cast<size_t>(SL * T));
  std::vector<const Tensor*> grads(params.tensors.size());
  while (step < o.steps) {
    ++step;
    const auto t_step = Clock::now();
    // 1-2. prompts and rollouts; 3. rewards (and resampling rounds)
    std::mt19937_64 prng(mix(o.seed, static_cast<uint64_t>(step)));
    std::vector<const Prompt*> chosen;
    for (int64_t p = 0; p < o.prompts_per_step; ++p) chosen.push_back(&prompts[prng() % prompts.size()]);
    std::vector<const Prompt*> rows;
    std::vector<uint64_t> seeds;
    for (int64_t p = first_group; p < first_group + local_groups; ++p)
      for (int64_t g = 0; g < o.group; ++g) {
        rows.push_back(chosen[static_cast<size_t>(p)]);
        seeds.push_back(mix(o.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(p * o.group + g + 1)));
      }
    Rollout ro = sample(decoder, tok, rows, seeds, o.temperature, o.max_new_tokens, stop);
    double rollout_s = seconds_since(t_step), reward_s = 0;
    auto score = [&](const Rollout& r) {
      const auto t0 = Clock::now();
      std::vector<RewardItem> items;
      for (size_t i = 0; i < r.prompts.size(); ++i) items.push_back({r.prompts[i]->text, r.texts[i], r.prompts[i]->answer});
      std::vector<double> out = reward(items);
      reward_s += seconds_since(t0);
      return out;
    };
    std::vector<double> rewards = score(ro);
    int64_t sampled_all = 0;  // completion tokens sampled this step, every round
    for (const auto& sq : ro.seqs) sampled_all += static_cast<int64_t>(sq.tokens.size());
    const int64_t flat_sampled = static_cast<int64_t>(zero_spread_groups(rewards, o.group).size());
    int64_t resampled = 0, rounds = 0;
    for (int64_t round = 1; round <= o.resample_zero_spread; ++round) {
      // DAPO's dynamic sampling: each group without reward spread is replaced by a fresh prompt's
      // group when that one has spread. Prompts and seeds derive from (seed, step, round, group):
      // nothing to save for --resume, and the next step draws the same whatever happened here.
      const std::vector<int64_t> flat = zero_spread_groups(rewards, o.group);
      if (flat.empty()) break;
      ++rounds;
      resampled += static_cast<int64_t>(flat.size());
      const uint64_t base = mix(o.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(round));
      std::vector<const Prompt*> rrows;
      std::vector<uint64_t> rseeds;
      for (int64_t g : flat) {
        const auto global = static_cast<uint64_t>(first_group + g);
        const Prompt* pr = &prompts[mix(base, global) % prompts.size()];
        for (int64_t k = 0; k < o.group; ++k) {
          rrows.push_back(pr);
          rseeds.push_back(mix(base, global, static_cast<uint64_t>(k + 1)));
        }
      }
      const auto t0 = Clock::now();
      Rollout extra = sample(decoder, tok, rrows, rseeds, o.temperature, o.max_new_tokens, stop);
      rollout_s += seconds_since(t0);
      for (const auto& sq : extra.seqs) sampled_all += static_cast<int64_t>(sq.tokens.size());
      const std::vector<double> extra_rewards = score(extra);
      const std::vector<int64_t> still_flat = zero_spread_groups(extra_rewards, o.group);
      for (size_t j = 0; j < flat.size(); ++j) {
        if (std::binary_search(still_flat.begin(), still_flat.end(), static_cast<int64_t>(j))) continue;
        for (int64_t k = 0; k < o.group; ++k) {
          const auto to = static_cast<size_t>(flat[j] * o.group + k), from = j * static_cast<size_t>(o.group) + static_cast<size_t>(k);
          rows[to] = extra.prompts[from];
          ro.prompts[to] = extra.prompts[from];
          ro.seqs[to] = std::move(extra.seqs[from]);
          ro.texts[to] = std::move(extra.texts[from]);
          rewards[to] = extra_rewards[from];
        }
      }
    }
    GrpoBatch b;
    b.S = SL;
    b.T = T;
    b.advantages = grpo_advantages(rewards, o.group, lo.type);
    b.mask.assign(static_cast<size_t>(SL * T), 0);
    std::fill(x.begin(), x.end(), 0);
    std::fill(y.begin(), y.end(), -1);
    int64_t tokens = 0;
    for (int64_t s = 0; s < SL; ++s) {
      const auto& p = rows[static_cast<size_t>(s)]->ids;
      const auto& c = ro.seqs[static_cast<size_t>(s)].tokens;
      const auto Lp = static_cast<int64_t>(p.size());
      for (int64_t t = 0; t < Lp; ++t) x[static_cast<size_t>(s * T + t)] = p[static_cast<size_t>(t)];
      for (size_t k = 0; k < c.size(); ++k) {
        const int64_t pos = Lp - 1 + static_cast<int64_t>(k);  // predicts c[k]
        if (k + 1 < c.size()) x[static_cast<size_t>(s * T + pos + 1)] = c[k];
        y[static_cast<size_t>(s * T + pos)] = c[k];
        b.mask[static_cast<size_t>(s * T + pos)] = 1;
        ++tokens;
      }
    }
    // 4. updates
    const auto t_update = Clock::now();
    b.logp.assign(static_cast<size_t>(SL * T), 0.0);
    // The objective's normalisers count the whole step's tokens and sequences, so the ranks'
    // gradient sums add up to the single-process gradient.
    const auto tokens_all = static_cast<int64_t>(comm->all_reduce_sum(static_cast<double>(tokens)));
    b.old_logp = b.logp;
    if (reference) {
      const std::vector<float> nll = reference->run(x, y);
      b.ref_logp.resize(nll.size());
      for (size_t i = 0; i < nll.size(); ++i) b.ref_logp[i] = -static_cast<double>(nll[i]);
    }
    GrpoLossResult res;
    double norm = 0, loss = 0;
    bool skipped = false;
    for (int64_t k = 0; k < o.updates_per_batch; ++k) {
      if (current) {
        const std::vector<float> nll = current->run(x, y);
        for (size_t i = 0; i < nll.size(); ++i) b.logp[i] = -static_cast<double>(nll[i]);
        if (k == 0) b.old_logp = b.logp;
      }
      res = grpo_token_weights(b, lo, tokens_all, S);
      update.run(x, y, res.weights);
      for (size_t i = 0; i < grads.size(); ++i) grads[i] = &update.grad(i);
      norm = dp.reduce(grads, 1.0);  // the same bits on every rank: they decide alike
      loss = comm->all_reduce_sum(res.loss);
      if (!std::isfinite(norm) || !std::isfinite(loss)) {
        if (lead)
          metrics << nlohmann::json{{"event", "skip"}, {"step", step}, {"detail", "non-finite loss or gradient norm"}}.dump()
                << "\n";
        skipped = true;
        break;
      }
      const double lr = o.learning_rate * std::min(1.0, static_cast<double>(step) / static_cast<double>(std::max<int64_t>(o.warmup_steps, 1)));
      const double scale = o.grad_clip > 0 ? std::min(1.0, o.grad_clip / (norm + 1e-6)) : 1.0;
      dp.step(params, grads, adam, lr, (step - 1) * o.updates_per_batch + k + 1, static_cast<float>(scale));
    }
    const double update_s = seconds_since(t_update);
    // 5. metrics, over every rank's rows (gathered in rank order: the global row order)
    constexpr size_t kRow = 6;  // per row: reward, correct, scratchpad, truncated, entropy, length
    std::vector<double> mine;
    for (size_t i = 0; i < rewards.size(); ++i)
      mine.insert(mine.end(), {rewards[i], static_cast<double>(correct(ro.texts[i], rows[i]->answer)),
                               static_cast<double>(uses_scratchpad(ro.texts[i])), static_cast<double>(ro.seqs[i].truncated),
                               ro.seqs[i].entropy, static_cast<double>(ro.seqs[i].tokens.size())});
    const auto rt = static_cast<double>(res.tokens);
    mine.insert(mine.end(), {static_cast<double>(flat_sampled), static_cast<double>(resampled), static_cast<double>(rounds),
                             static_cast<double>(sampled_all), res.kl * rt, res.clip_frac * rt, res.clip_low_frac * rt,
                             res.clip_high_frac * rt});
    std::vector<double> all(mine.size() * static_cast<size_t>(comm->size()));
    comm->all_gather(mine.data(), all.data(), mine.size() * sizeof(double));
    if (lead) {
      std::vector<double> all_rewards;
      double mean = 0, var = 0, acc = 0, think = 0, trunc = 0, entropy = 0, len_max = 0, sampled_d = 0;
      int64_t flat_sampled_all = 0, resampled_all = 0, rounds_all = 0, sampled_every = 0;
      double kl = 0, clip = 0, clip_low = 0, clip_high = 0;
      for (int r = 0; r < comm->size(); ++r) {
        const double* at = all.data() + static_cast<size_t>(r) * mine.size();
        for (int64_t i = 0; i < SL; ++i, at += kRow) {
          all_rewards.push_back(at[0]);
          acc += at[1];
          think += at[2];
          trunc += at[3];
          entropy += at[4];
          sampled_d += at[5];
          len_max = std::max(len_max, at[5]);
        }
        flat_sampled_all += static_cast<int64_t>(at[0]);
        resampled_all += static_cast<int64_t>(at[1]);
        rounds_all = std::max(rounds_all, static_cast<int64_t>(at[2]));
        sampled_every += static_cast<int64_t>(at[3]);
        kl += at[4];
        clip += at[5];
        clip_low += at[6];
        clip_high += at[7];
      }
      const auto n = static_cast<double>(S);
      for (double r : all_rewards) mean += r;
      mean /= n;
      for (double r : all_rewards) var += (r - mean) * (r - mean);
      const auto flat = static_cast<int64_t>(zero_spread_groups(all_rewards, o.group).size());
      const double tok = tokens_all > 0 ? static_cast<double>(tokens_all) : 1.0;
      const double step_s = seconds_since(t_step);
      nlohmann::json m{{"step", step},
                       {"lr", o.learning_rate * std::min(1.0, static_cast<double>(step) / static_cast<double>(std::max<int64_t>(o.warmup_steps, 1)))},
                       {"loss", loss},
                       {"reward_mean", mean},
                       {"reward_std", std::sqrt(var / n)},
                       {"accuracy", acc / n},
                       {"frac_reward_zero_std", static_cast<double>(flat) / static_cast<double>(o.prompts_per_step)},
                       {"frac_reward_zero_std_sampled", static_cast<double>(flat_sampled_all) / static_cast<double>(o.prompts_per_step)},
                       {"resampled_groups", resampled_all},
                       {"resample_rounds", rounds_all},
                       {"completion_len_mean", sampled_d / n},
                       {"completion_len_max", len_max},
                       {"truncated_frac", trunc / n},
                       {"scratchpad_frac", think / n},
                       {"entropy", sampled_d > 0 ? entropy / sampled_d : 0.0},
                       {"kl", o.kl_beta != 0 ? nlohmann::json(kl / tok) : nlohmann::json(nullptr)},
                       {"clip_frac", clip / tok},
                       {"clip_low_frac", clip_low / tok},
                       {"clip_high_frac", clip_high / tok},
                       {"grad_norm", norm},
                       {"skipped", skipped},
                       {"rollout_s", rollout_s},
                       {"reward_s", reward_s},
                       {"update_s", update_s},
                       {"step_s", step_s},
                       {"sampled_tokens_per_s", static_cast<double>(sampled_every) / rollout_s}};
      if (comm->size() > 1) m["ranks"] = comm->size();
      metrics << m.dump() << "\n" << std::flush;
      std::printf("step %lld/%lld  reward %.3f  acc %.3f  scratchpad %.2f  len %.1f  zero-std %.2f (sampled %.2f)  | rollout %.2fs update %.2fs\n",
                  static_cast<long long>(step), static_cast<long long>(o.steps), mean, acc / n, think / n,
                  sampled_d / n, static_cast<double>(flat) / static_cast<double>(o.prompts_per_step),
                  static_cast<double>(flat_sampled_all) / static_cast<double>(o.prompts_per_step), rollout_s, update_s);
      std::fflush(stdout);
    }
    if (o.eval_every > 0 && step % o.eval_every == 0 && step != o.steps) run_eval(step);
    if (o.checkpoint_every > 0 && step % o.checkpoint_every == 0 && step != o.steps) save(step);
  }
  if (step > state.step) {  // the last step's evaluation and checkpoint (none for --steps 0: evaluation only)
    if (o.eval_every > 0) run_eval(step);
    save(step);
  }
}

}  // namespace

void grpo(const GrpoOptions& o) {
  run_as_rank([&] { run_grpo(o); });
}

}  // namespace tandem
