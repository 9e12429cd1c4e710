#include "train/trainer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>

#include "core/error.h"
#include "data/batch_loader.h"
#include "data/shard.h"
#include "io/atomic_file.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/guards.h"
#include "train/step.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

using Clock = std::chrono::steady_clock;

// Rollbacks allowed in a row without getting past the step that caused the last one: a fault that
// survives this many is not transient, and looping forever would hide it.
constexpr int kMaxRollbacksWithoutProgress = 3;

std::string duration_str(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

std::string size_str(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
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

// One trainer per run directory: an exclusive flock on the directory itself (creates no file, and
// the kernel releases it when the process dies, however it dies). It is what makes removing a
// killed writer's leftovers safe.
class RunLock {
 public:
  explicit RunLock(const fs::path& dir) {
    fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(fd_ >= 0, dir.string(), ": cannot open run directory: ", std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw Error(dir.string() + ": another `tandem train` is running in this run directory");
    }
  }
  ~RunLock() { ::close(fd_); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// SIGTERM/SIGINT ask the loop to stop after the current step (preemption); a second one stops
// the process at once, the default way.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;  // a write or fsync in flight finishes instead of failing with EINTR
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, &old_term_);
    ::sigaction(SIGINT, &sa, &old_int_);
  }
  ~StopSignals() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_term_ {}, old_int_ {};
};

// RUN/events.log (human-readable, timestamped) plus, for anomalies, a metrics.jsonl line.
// Writes are best effort: on a full disk the line still reaches stderr.
class EventLog {
 public:
  EventLog(const fs::path& path, std::ofstream& metrics, bool tty) : out_(path, std::ios::app), metrics_(metrics), tty_(tty) {}

  void note(const std::string& text, bool echo) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    out_ << stamp << "  " << text << "\n" << std::flush;
    if (echo) std::fprintf(stderr, "%s%s\n", tty_ ? "\r\033[K" : "", text.c_str());
  }

  // kind: skip, rollback, verify_mismatch, checkpoint_failed, resume_skipped_checkpoint, stop.
  void event(const std::string& kind, int64_t step, const std::string& text, nlohmann::json extra = {}) {
    nlohmann::json j = {{"event", kind}, {"step", step}, {"detail", text}};
    if (extra.is_object()) j.update(extra);
    metrics_ << j.dump() << "\n" << std::flush;
    note("step " + std::to_string(step) + ": " + kind + ": " + text, true);
  }

 private:
  std::ofstream out_;
  std::ofstream& metrics_;
  bool tty_;
};

class Trainer {
 public:
  explicit Trainer(const TrainOptions& opts) : opts_(opts) {}
  void run();

 private:
  void open_run();
  void skip_data_windows();
  double forward_backward();
  double inject_faults(int64_t step, double loss);
  std::optional<std::string> recompute_differs(uint64_t position_before, double loss);
  void restore(const std::optional<fs::path>& dir);
  void rollback(int64_t step, int64_t max_target_step, const std::string& why,
                std::optional<std::pair<uint64_t, uint64_t>> skip_window);
  bool save_checkpoint(bool must_succeed);

  const TrainOptions& opts_;
  std::unique_ptr<RunLock> lock_;
  std::optional<fs::path> resume_from_;
  std::vector<std::string> skipped_on_resume_;
  TrainConfig cfg_;
  fs::path tok_path_;
  TokenShard train_shard_, val_shard_;
  TrainerState state_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> backend_;
  ParamStore params_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<TrainingProgram> prog_;
  std::unique_ptr<EvalProgram> eval_;
  std::unique_ptr<BatchLoader> loader_;
  std::unique_ptr<TrainingGuard> guard_;
  std::ofstream metrics_;
  std::unique_ptr<EventLog> events_;
  bool tty_ = false;

  std::vector<int32_t> x_, y_;
  std::vector<Tensor> accum_;
  std::vector<const Tensor*> grads_;
  Tensor fault_grad_;  // a corrupted copy of grads_[0], for the fault-injection hooks
  std::set<int64_t> pending_nan_, pending_bitflip_;

  int64_t last_verified_step_ = 0;  // the last step whose recomputation matched (or the start)
  int64_t rollback_at_step_ = 0, rollbacks_without_progress_ = 0;
};

void Trainer::open_run() {
  const fs::path metrics_path = opts_.out_dir / "metrics.jsonl";
  if (fs::is_directory(opts_.out_dir)) lock_ = std::make_unique<RunLock>(opts_.out_dir);
  if (opts_.resume) {
    // The newest checkpoint that verifies; newer broken ones (a crash mid-write cannot make one,
    // but a bad disk or a careless hand can) are reported and left for training to overwrite.
    const auto cks = list_checkpoints(opts_.out_dir);
    for (const fs::path& ck : cks) {
      if (auto problem = checkpoint_problem(ck)) {
        skipped_on_resume_.push_back(ck.filename().string() + " is not usable: " + *problem);
        continue;
      }
      resume_from_ = ck;
      break;
    }
    check(cks.empty() || resume_from_, "--resume: no valid checkpoint in ", opts_.out_dir.string(), "; newest: ",
          skipped_on_resume_.empty() ? "" : skipped_on_resume_.front());
  } else {
    check(!fs::exists(metrics_path) && list_checkpoints(opts_.out_dir).empty(), opts_.out_dir.string(),
          ": already holds a run; pass --resume to continue it, or choose another --out");
  }
}

void Trainer::skip_data_windows() {
  for (bool moved = true; moved;) {
    moved = false;
    for (auto [from, to] : state_.skipped_data)
      if (loader_->position() >= from && loader_->position() < to) {
        loader_->seek(to);
        moved = true;
      }
  }
}

double Trainer::forward_backward() {
  double loss = 0;
  for (int64_t micro = 0; micro < cfg_.grad_accum; ++micro) {
    skip_data_windows();
    loader_->next(x_.data(), y_.data());
    loss += prog_->run(x_, y_);
    if (cfg_.grad_accum > 1)
      for (size_t i = 0; i < accum_.size(); ++i) {
        if (micro == 0) accum_[i].copy_from(prog_->grad(i));
        else backend_->axpy(accum_[i], 1.0f, prog_->grad(i));
      }
  }
  for (size_t i = 0; i < grads_.size(); ++i) grads_[i] = cfg_.grad_accum > 1 ? &accum_[i] : &prog_->grad(i);
  return loss / static_cast<double>(cfg_.grad_accum);
}

double Trainer::inject_faults(int64_t step, double loss) {
  const bool nan = pending_nan_.erase(step) > 0, flip = pending_bitflip_.erase(step) > 0;
  if (!nan && !flip) return loss;
  std::vector<float> g = grads_[0]->to_host();
  if (nan) {
    std::fill(g.begin(), g.end(), NAN);
    loss = NAN;
  } else {
    uint32_t bits;
    std::memcpy(&bits, &g[0], 4);
    bits ^= 1u << 22;  // the top mantissa bit: a silent, plausible-looking corruption
    std::memcpy(&g[0], &bits, 4);
  }
  fault_grad_ = Tensor::from_host(*backend_, params_.specs[0].shape, g);
  grads_[0] = &fault_grad_;
  return loss;
}

std::optional<std::string> Trainer::recompute_differs(uint64_t position_before, double loss) {
  std::vector<std::vector<float>> first(grads_.size());
  for (size_t i = 0; i < grads_.size(); ++i) first[i] = grads_[i]->to_host();
  loader_->seek(position_before);
  const double again = forward_backward();
  if (std::memcmp(&again, &loss, sizeof loss) != 0) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "loss %.9g, recomputed %.9g", loss, again);
    return std::string(buf);
  }
  for (size_t i = 0; i < grads_.size(); ++i) {
    const std::vector<float> second = grads_[i]->to_host();
    for (size_t k = 0; k < second.size(); ++k)
      if (std::memcmp(&first[i][k], &second[k], sizeof(float)) != 0) {
        char buf[96];
        std::snprintf(buf, sizeof buf, " element %zu: %.9g, recomputed %.9g", k, first[i][k], second[k]);
        return "gradient of " + params_.specs[i].name + buf;
      }
  }
  return std::nullopt;
}

void Trainer::restore(const std::optional<fs::path>& dir) {
  if (dir) {
    const ParamStore saved = ParamStore::load(*model_, *backend_, *dir / "model.safetensors");
    for (size_t i = 0; i < params_.tensors.size(); ++i) params_.tensors[i].copy_from(saved.tensors[i]);
    read_optimizer_state(*dir, params_, opt_->exp_avg, opt_->exp_avg_sq);
    const TrainerState s = read_trainer_state(*dir);
    state_.step = s.step;
    state_.data_position = s.data_position;
    guard_->load(s.guard, (*dir / "trainer_state.json").string());
  } else {  // the initial state: weights from the seed, zero moments
    const ParamStore init = ParamStore::init(*model_, *backend_, state_.seed);
    const std::vector<Tensor> zeros = params_.zeros_like(*backend_);
    for (size_t i = 0; i < params_.tensors.size(); ++i) {
      params_.tensors[i].copy_from(init.tensors[i]);
      opt_->exp_avg[i].copy_from(zeros[i]);
      opt_->exp_avg_sq[i].copy_from(zeros[i]);
    }
    state_.step = 0;
    state_.data_position = 0;
    guard_->load(nullptr, "initial state");
  }
  loader_->seek(state_.data_position);
  state_.guard = guard_->to_json();
}

void Trainer::rollback(int64_t step, int64_t max_target_step, const std::string& why,
                       std::optional<std::pair<uint64_t, uint64_t>> skip_window) {
  if (step > rollback_at_step_) rollbacks_without_progress_ = 0;
  rollback_at_step_ = std::max(rollback_at_step_, step);
  check(++rollbacks_without_progress_ <= kMaxRollbacksWithoutProgress, "step ", step, ": ",
        kMaxRollbacksWithoutProgress, " rollbacks without getting past step ", rollback_at_step_,
        ": the fault persists (", why, "); see ", (opts_.out_dir / "events.log").string());
  std::optional<fs::path> target;
  for (const fs::path& ck : list_checkpoints(opts_.out_dir)) {
    if (checkpoint_step(ck) > max_target_step) continue;
    if (auto problem = checkpoint_problem(ck)) {
      events_->note("rollback: " + ck.filename().string() + " is not usable: " + *problem, true);
      continue;
    }
    target = ck;
    break;
  }
  const int64_t target_step = target ? checkpoint_step(*target) : 0;
  // Checkpoints after the target belong to the abandoned timeline: resuming from one of them
  // would continue from the state being rolled back.
  for (const fs::path& ck : list_checkpoints(opts_.out_dir))
    if (checkpoint_step(ck) > target_step) {
      remove_checkpoint(ck);
      events_->note("rollback: removed " + ck.filename().string(), false);
    }
  if (target) set_latest_checkpoint(opts_.out_dir, *target);
  else fs::remove(opts_.out_dir / "checkpoints" / "latest");
  restore(target);
  nlohmann::json extra = {{"to_step", target_step}};
  std::string text = why + "; rolled back to " + (target ? target->filename().string() : "the initial weights");
  if (skip_window) {
    state_.skipped_data.push_back(*skip_window);
    extra["skip_data"] = {skip_window->first, skip_window->second};
    text += "; data batches [" + std::to_string(skip_window->first) + ", " + std::to_string(skip_window->second) +
            ") will be skipped";
  }
  events_->event("rollback", step, text, extra);
  last_verified_step_ = target_step;
}

bool Trainer::save_checkpoint(bool must_succeed) {
  fs::path dir;
  try {
    dir = write_checkpoint(opts_.out_dir, *model_, params_, opt_->exp_avg, opt_->exp_avg_sq, tok_path_, state_);
  } catch (const Error& e) {
    std::string newest = "none";
    for (const fs::path& ck : list_checkpoints(opts_.out_dir))
      if (checkpoint_step(ck) <= state_.step) {
        newest = ck.filename().string();
        break;
      }
    const std::string text = std::string(e.what()) + "; earlier checkpoints are untouched (newest: " + newest + ")";
    events_->event("checkpoint_failed", state_.step, text);
    if (must_succeed || !opts_.continue_on_checkpoint_error)
      throw Error(text + (must_succeed ? "" : "; --on-checkpoint-error continue keeps training"));
    return false;
  }
  events_->note("checkpoint " + dir.filename().string() + " written (" + size_str(checkpoint_bytes(dir)) + ")", false);
  // With --verify-every, a mismatch rolls back to the last verified step: keep a checkpoint there.
  const int64_t rollback_step = opts_.verify_every > 0 ? last_verified_step_ : state_.step;
  for (const fs::path& gone :
       prune_checkpoints(opts_.out_dir, state_.step, opts_.keep_last, opts_.keep_every, rollback_step))
    events_->note("retention: removed " + gone.filename().string(), false);
  return true;
}

void Trainer::run() {
  // Installed first: a SIGTERM during setup also means "stop after the next step, checkpointed".
  StopSignals signals;
  open_run();

  cfg_ = TrainConfig::load(opts_.config, opts_.sets);
  tok_path_ = opts_.data_dir / "tokenizer.json";
  check(fs::exists(tok_path_), tok_path_.string(), ": missing (run `tandem prepare` first)");
  const int tokenizer_vocab = Tokenizer::load(tok_path_).vocab_size();
  if (!cfg_.model.contains("vocab_size")) cfg_.model["vocab_size"] = tokenizer_vocab;
  train_shard_ = read_shard(opts_.data_dir / "train.bin");
  val_shard_ = read_shard(opts_.data_dir / "val.bin");

  state_.seed = opts_.seed;
  if (resume_from_) {
    state_ = read_trainer_state(*resume_from_);
    const TrainConfig saved = TrainConfig::from_json(state_.train_config, (*resume_from_ / "trainer_state.json").string());
    const nlohmann::json now = cfg_.to_json(), before = saved.to_json();
    for (const auto& [k, v] : now.items())
      check(before.value(k, nlohmann::json()) == v, "--resume: config key '", k, "' is ", v.dump(), " but the run in ",
            opts_.out_dir.string(), " was trained with ", before.value(k, nlohmann::json()).dump());
  }
  state_.train_config = cfg_.to_json();

  model_ = model_from_hf_config(cfg_.model, "config");
  model_->set_mtp_loss_weight(cfg_.mtp_loss_weight);
  check(cfg_.block_size <= model_->context_length(), "config: block_size ", cfg_.block_size,
        " exceeds the model's context ", model_->context_length());
  check_vocab(train_shard_, model_->vocab_size(), tokenizer_vocab);
  check_vocab(val_shard_, model_->vocab_size(), tokenizer_vocab);
  const int64_t total = opts_.steps.value_or(cfg_.max_steps);
  check(total > 0, "--steps must be positive");

  backend_ = make_backend(opts_.backend);
  params_ = resume_from_ ? ParamStore::load(*model_, *backend_, *resume_from_ / "model.safetensors")
                         : ParamStore::init(*model_, *backend_, state_.seed);
  opt_ = std::make_unique<AdamW>(params_, *backend_);
  if (resume_from_) read_optimizer_state(*resume_from_, params_, opt_->exp_avg, opt_->exp_avg_sq);
  guard_ = std::make_unique<TrainingGuard>(cfg_);
  guard_->load(state_.guard, resume_from_ ? (*resume_from_ / "trainer_state.json").string() : "initial state");

  const int64_t B = cfg_.batch_size, T = cfg_.block_size;
  prog_ = std::make_unique<TrainingProgram>(*model_, *backend_, params_, B, T);
  eval_ = std::make_unique<EvalProgram>(*model_, *backend_, params_, B, T);
  loader_ = std::make_unique<BatchLoader>(train_shard_, static_cast<int>(B), static_cast<int>(T), state_.seed);
  loader_->seek(state_.data_position);

  // Everything is validated: from here on the run directory changes.
  fs::create_directories(opts_.out_dir);
  if (!lock_) lock_ = std::make_unique<RunLock>(opts_.out_dir);
  remove_stale_checkpoint_files(opts_.out_dir);
  const fs::path metrics_path = opts_.out_dir / "metrics.jsonl";
  if (opts_.resume) truncate_metrics(metrics_path, state_.step);  // step 0 when there was nothing to resume
  metrics_.open(metrics_path, std::ios::app);
  check(metrics_.good(), metrics_path.string(), ": cannot open for writing");
  tty_ = ::isatty(2);
  events_ = std::make_unique<EventLog>(opts_.out_dir / "events.log", metrics_, tty_);
  for (const std::string& why : skipped_on_resume_)
    events_->event("resume_skipped_checkpoint", state_.step,
                   why + "; resuming from " + resume_from_->filename().string());
  if (opts_.inject_write_limit) inject_checkpoint_write_limit(*opts_.inject_write_limit);
  pending_nan_.insert(opts_.inject_nan_at.begin(), opts_.inject_nan_at.end());
  pending_bitflip_.insert(opts_.inject_bitflip_at.begin(), opts_.inject_bitflip_at.end());

  std::fprintf(stderr, "tandem train: %s, %lld parameters, batch %lld x %lld x %lld accum, backend %s%s\n",
               model_->type().c_str(), static_cast<long long>(params_.count()), static_cast<long long>(B),
               static_cast<long long>(T), static_cast<long long>(cfg_.grad_accum), backend_->name().c_str(),
               resume_from_ ? (", resuming from " + resume_from_->string()).c_str() : "");
  events_->note(resume_from_ ? "resumed from " + resume_from_->filename().string()
                             : std::string(opts_.resume ? "resume: no checkpoint yet, starting at step 0" : "started"),
                false);

  x_.resize(static_cast<size_t>(B * T));
  y_.resize(x_.size());
  if (cfg_.grad_accum > 1) accum_ = params_.zeros_like(*backend_);
  grads_.resize(params_.tensors.size());
  const auto run_start = Clock::now();
  last_verified_step_ = state_.step;
  int64_t steps_run = 0;
  double last_loss = NAN;

  while (state_.step < total) {
    const int64_t step = state_.step + 1;
    const auto t0 = Clock::now();
    skip_data_windows();
    const uint64_t position_before = loader_->position();
    double loss = inject_faults(step, forward_backward());
    if (opts_.verify_every > 0 && step % opts_.verify_every == 0) {
      if (auto diff = recompute_differs(position_before, loss)) {
        events_->event("verify_mismatch", step, "recomputing the step gave different results: " + *diff,
                       {{"last_verified_step", last_verified_step_}});
        rollback(step, last_verified_step_, "gradient verification failed", std::nullopt);
        continue;
      }
      last_verified_step_ = step;
    }
    const double inv_accum = 1.0 / static_cast<double>(cfg_.grad_accum);
    const double norm = global_norm(*backend_, grads_) * inv_accum;
    const double lr = learning_rate_at(cfg_, step - 1);
    const auto verdict = guard_->check(step, position_before, loss, norm);
    if (!verdict) {
      double scale = inv_accum;
      if (cfg_.grad_clip > 0) scale *= std::min(1.0, cfg_.grad_clip / (norm + 1e-6));
      opt_->step(params_, grads_, cfg_, lr, step, static_cast<float>(scale));
    }
    state_.step = step;
    state_.data_position = loader_->position();
    state_.guard = guard_->to_json();
    last_loss = loss;
    ++steps_run;

    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const double tok_s = static_cast<double>(B * T * cfg_.grad_accum) / dt;
    nlohmann::json m = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tok_s},
                        {"step_ms", dt * 1e3}};
    if (verdict) m["skipped"] = true;
    const bool eval_now = step % cfg_.eval_interval == 0 || step == total;
    for (const auto& [name, value] : prog_->extra_losses()) m[name] = value;
    // DeepSeekMoE: loads of this step's routing; the bias moves only when the update was applied.
    if (!prog_->nodes().router_choices.empty())
      m["moe"] = balance_experts(*prog_, params_, verdict ? 0.0 : cfg_.router_bias_update_rate, eval_now);
    if (eval_now) m["val_loss"] = validation_loss(*eval_, val_shard_, cfg_);
    metrics_ << m.dump() << "\n" << std::flush;
    if (verdict)
      events_->event("skip", step, verdict->kind + ": " + verdict->detail + "; update not applied",
                     {{"reason", verdict->kind}, {"bad_streak", guard_->bad_streak()}});

    const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
    const double eta = elapsed / static_cast<double>(steps_run) * static_cast<double>(total - step);
    if (tty_ || eval_now || steps_run == 1 || step % 50 == 0) {
      std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s", tty_ ? "\r\033[K" : "",
                   static_cast<long long>(step), static_cast<long long>(total), loss, lr, tok_s,
                   duration_str(eta).c_str());
      if (eval_now) std::fprintf(stderr, " | val %.4f", m["val_loss"].get<double>());
      std::fprintf(stderr, "%s", tty_ && !eval_now ? "" : "\n");
    }

    if (verdict && guard_->rollback_due()) {
      rollback(step, guard_->streak_first_step() - 1,
               std::to_string(guard_->bad_streak()) + " bad steps in a row (from step " +
                   std::to_string(guard_->streak_first_step()) + ")",
               std::pair{guard_->streak_first_position(), state_.data_position});
      continue;
    }
    const int stop_signal = g_stop_signal.load();
    const bool periodic = opts_.checkpoint_every > 0 && step % opts_.checkpoint_every == 0;
    if (periodic && guard_->bad_streak() > 0 && step != total && !stop_signal) {
      // Mid-streak the state is not known to be good; writing it could let retention delete the
      // checkpoint a rollback needs.
      events_->note("step " + std::to_string(step) + ": checkpoint deferred (bad-step streak)", false);
    } else if (periodic || step == total || stop_signal) {
      const bool saved = save_checkpoint(step == total || stop_signal);
      if (saved && step == total)
        std::fprintf(stderr, "checkpoint: %s\n", (opts_.out_dir / "checkpoints" / ("step_" + std::to_string(step))).c_str());
    }
    if (stop_signal) {
      events_->event("stop", step,
                     std::string(stop_signal == SIGINT ? "SIGINT" : "SIGTERM") +
                         ": stopped after the current step with checkpoint step_" + std::to_string(step),
                     {{"signal", stop_signal == SIGINT ? "SIGINT" : "SIGTERM"}});
      return;
    }
  }
  if (steps_run == 0)
    std::fprintf(stderr, "tandem train: the run is already at step %lld (>= %lld); nothing to do\n",
                 static_cast<long long>(state_.step), static_cast<long long>(total));
  else
    std::fprintf(stderr, "done: %lld steps in %s, final loss %.4f\n", static_cast<long long>(steps_run),
                 duration_str(std::chrono::duration<double>(Clock::now() - run_start).count()).c_str(), last_loss);
}

}  // namespace

void train(const TrainOptions& opts) { Trainer(opts).run(); }

}  // namespace tandem
