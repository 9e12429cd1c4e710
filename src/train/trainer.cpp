#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "data/batch_loader.h"
#include "data/shard.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/step.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

using Clock = std::chrono::steady_clock;

std::string duration_str(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

// Keeps metrics.jsonl lines up to `step` (a resumed run rewrites what comes after).
void truncate_metrics(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      break;  // a torn last line from a killed process
    }
  }
  write_file_atomic(path, kept);
}

// Mean loss over `steps` validation batches; the same batches every time (a fixed loader seed).
double validation_loss(EvalProgram& eval, const TokenShard& val, const TrainConfig& c) {
  BatchLoader loader(val, static_cast<int>(c.batch_size), static_cast<int>(c.block_size), 0x5eedULL);
  std::vector<int32_t> x(static_cast<size_t>(c.batch_size * c.block_size)), y(x.size());
  double total = 0;
  for (int64_t i = 0; i < c.eval_steps; ++i) {
    loader.next(x.data(), y.data());
    total += eval.run(x, y);
  }
  return total / static_cast<double>(c.eval_steps);
}

void check_vocab(const TokenShard& shard, int64_t model_vocab, int tokenizer_vocab) {
  check(static_cast<int64_t>(shard.vocab_size) == tokenizer_vocab, shard.path.string(), ": written for a vocabulary of ",
        shard.vocab_size, " tokens, but the data directory's tokenizer.json has ", tokenizer_vocab);
  check(static_cast<int64_t>(shard.vocab_size) <= model_vocab, shard.path.string(), ": token vocabulary ",
        shard.vocab_size, " exceeds the model's vocab_size ", model_vocab);
}

}  // namespace

void train(const TrainOptions& opts) {
  // --- Where we start: a fresh run, or the newest checkpoint of this one.
  const fs::path metrics_path = opts.out_dir / "metrics.jsonl";
  std::optional<fs::path> resume_from;
  if (opts.resume) {
    auto cks = list_checkpoints(opts.out_dir);
    if (!cks.empty()) {
      verify_checkpoint(cks.front());
      resume_from = cks.front();
    }
  } else {
    check(!fs::exists(metrics_path) && list_checkpoints(opts.out_dir).empty(), opts.out_dir.string(),
          ": already holds a run; pass --resume to continue it, or choose another --out");
  }

  TrainConfig cfg = TrainConfig::load(opts.config, opts.sets);
  const fs::path tok_path = opts.data_dir / "tokenizer.json";
  check(fs::exists(tok_path), tok_path.string(), ": missing (run `tandem prepare` first)");
  const Tokenizer tokenizer = Tokenizer::load(tok_path);
  if (!cfg.model.contains("vocab_size")) cfg.model["vocab_size"] = tokenizer.vocab_size();
  const TokenShard train_shard = read_shard(opts.data_dir / "train.bin");
  const TokenShard val_shard = read_shard(opts.data_dir / "val.bin");

  TrainerState state;
  state.seed = opts.seed;
  if (resume_from) {
    state = read_trainer_state(*resume_from);
    const TrainConfig saved = TrainConfig::from_json(state.train_config, (*resume_from / "trainer_state.json").string());
    const nlohmann::json now = cfg.to_json(), before = saved.to_json();
    for (const auto& [k, v] : now.items())
      check(before.value(k, nlohmann::json()) == v, "--resume: config key '", k, "' is ", v.dump(), " but the run in ",
            opts.out_dir.string(), " was trained with ", before.value(k, nlohmann::json()).dump());
  }
  state.train_config = cfg.to_json();

  const auto model = model_from_hf_config(cfg.model, "config");
  check(cfg.block_size <= model->context_length(), "config: block_size ", cfg.block_size, " exceeds the model's context ",
        model->context_length());
  check_vocab(train_shard, model->vocab_size(), tokenizer.vocab_size());
  check_vocab(val_shard, model->vocab_size(), tokenizer.vocab_size());

  auto backend = make_backend(opts.backend);
  ParamStore params = resume_from ? ParamStore::load(*model, *backend, *resume_from / "model.safetensors")
                                  : ParamStore::init(*model, *backend, state.seed);
  AdamW opt(params, *backend);
  if (resume_from) read_optimizer_state(*resume_from, params, opt.exp_avg, opt.exp_avg_sq);

  const int64_t B = cfg.batch_size, T = cfg.block_size;
  TrainingProgram prog(*model, *backend, params, B, T);
  EvalProgram eval(*model, *backend, params, B, T);
  BatchLoader loader(train_shard, static_cast<int>(B), static_cast<int>(T), state.seed);
  loader.seek(state.data_position);

  fs::create_directories(opts.out_dir);
  if (resume_from) truncate_metrics(metrics_path, state.step);
  std::ofstream metrics(metrics_path, std::ios::app);
  check(metrics.good(), metrics_path.string(), ": cannot open for writing");

  const int64_t total = opts.steps.value_or(cfg.max_steps);
  check(total > 0, "--steps must be positive");
  const bool tty = ::isatty(2);
  std::fprintf(stderr, "tandem train: %s, %lld parameters, batch %lld x %lld x %lld accum, backend %s%s\n",
               model->type().c_str(), static_cast<long long>(params.count()), static_cast<long long>(B),
               static_cast<long long>(T), static_cast<long long>(cfg.grad_accum), backend->name().c_str(),
               resume_from ? (", resuming from " + resume_from->string()).c_str() : "");

  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(x.size());
  std::vector<Tensor> accum;
  if (cfg.grad_accum > 1) accum = params.zeros_like(*backend);
  std::vector<const Tensor*> grads(params.tensors.size());
  const auto run_start = Clock::now();
  const int64_t first_step = state.step + 1;
  double last_loss = NAN;

  for (int64_t step = first_step; step <= total; ++step) {
    const auto t0 = Clock::now();
    double loss = 0;
    for (int64_t micro = 0; micro < cfg.grad_accum; ++micro) {
      loader.next(x.data(), y.data());
      loss += prog.run(x, y);
      if (cfg.grad_accum > 1)
        for (size_t i = 0; i < accum.size(); ++i) {
          if (micro == 0) accum[i].copy_from(prog.grad(i));
          else backend->axpy(accum[i], 1.0f, prog.grad(i));
        }
    }
    loss /= static_cast<double>(cfg.grad_accum);
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = cfg.grad_accum > 1 ? &accum[i] : &prog.grad(i);
    const double inv_accum = 1.0 / static_cast<double>(cfg.grad_accum);
    const double norm = global_norm(*backend, grads) * inv_accum;
    double scale = inv_accum;
    if (cfg.grad_clip > 0) scale *= std::min(1.0, cfg.grad_clip / (norm + 1e-6));
    const double lr = learning_rate_at(cfg, step - 1);
    opt.step(params, grads, cfg, lr, step, static_cast<float>(scale));
    state.step = step;
    state.data_position = loader.position();
    last_loss = loss;

    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const double tok_s = static_cast<double>(B * T * cfg.grad_accum) / dt;
    nlohmann::json m = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tok_s},
                        {"step_ms", dt * 1e3}};
    const bool eval_now = step % cfg.eval_interval == 0 || step == total;
    if (eval_now) m["val_loss"] = validation_loss(eval, val_shard, cfg);
    metrics << m.dump() << "\n" << std::flush;

    const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
    const double eta = elapsed / static_cast<double>(step - first_step + 1) * static_cast<double>(total - step);
    if (tty || eval_now || step == first_step || step % 50 == 0) {
      std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s", tty ? "\r\033[K" : "",
                   static_cast<long long>(step), static_cast<long long>(total), loss, lr, tok_s, duration_str(eta).c_str());
      if (eval_now) std::fprintf(stderr, " | val %.4f", m["val_loss"].get<double>());
      std::fprintf(stderr, "%s", tty && !eval_now ? "" : "\n");
    }
    if ((opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0) || step == total) {
      fs::path dir = write_checkpoint(opts.out_dir, *model, params, opt.exp_avg, opt.exp_avg_sq, tok_path, state);
      if (step == total) std::fprintf(stderr, "checkpoint: %s\n", dir.string().c_str());
    }
  }
  if (first_step > total)
    std::fprintf(stderr, "tandem train: the run is already at step %lld (>= %lld); nothing to do\n",
                 static_cast<long long>(state.step), static_cast<long long>(total));
  else
    std::fprintf(stderr, "done: %lld steps in %s, final loss %.4f\n", static_cast<long long>(total - first_step + 1),
                 duration_str(std::chrono::duration<double>(Clock::now() - run_start).count()).c_str(), last_loss);
}

}  // namespace tandem
