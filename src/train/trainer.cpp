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
#include "dist/communicator.h"
#ifdef TANDEM_HAVE_NCCL
#include "dist/nccl_communicator.h"
#endif
#include "data/batch_loader.h"
#include "data/shard.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/guards.h"
#include "train/run_dir.h"
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
  // Only the lead rank (rank 0) writes; the others' logs are silent.
  EventLog(const fs::path& path, std::ofstream& metrics, bool tty, bool lead)
      : metrics_(metrics), tty_(tty), lead_(lead) {
    if (lead) out_.open(path, std::ios::app);
  }

  void note(const std::string& text, bool echo) {
    if (!lead_) return;
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
    if (!lead_) return;
    nlohmann::json j = {{"event", kind}, {"step", step}, {"detail", text}};
    if (extra.is_object()) j.update(extra);
    metrics_ << j.dump() << "\n" << std::flush;
    note("step " + std::to_string(step) + ": " + kind + ": " + text, true);
  }

 private:
  std::ofstream out_;
  std::ofstream& metrics_;
  bool tty_, lead_;
};

class Trainer {
 public:
  explicit Trainer(const TrainOptions& opts) : opts_(opts) {}
  void run();

 private:
  struct StepUpdate {
    double loss = 0, norm = 0, lr = 0, inv_count = 1;
    std::optional<GuardVerdict> verdict;  // set: the update was not applied
  };
  // Setup phases, in order.
  void open_run();
  void load_config();
  void build_model();
  void build_parallel();
  void build_programs();
  void open_outputs();
  // A step's phases, in order (forward_backward with its helpers, then verify ...).
  void skip_data_windows();
  ParamStore load_params(const fs::path& file) const;
  void forward_backward();
  void dump_step(double loss, double norm, double inv_count);  // --dump-first-step
  void inject_faults(int64_t step);
  bool verify(int64_t step, uint64_t position_before);
  StepUpdate update(int64_t step, uint64_t position_before);
  void record(int64_t step, const StepUpdate& u, Clock::time_point t0, uint64_t bytes_before);
  bool rollback_if_due(int64_t step);
  bool checkpoint_or_stop(int64_t step);
  void report_done();
  std::optional<std::string> recompute_differs(uint64_t position_before);
  ExpertLoads all_ranks_loads() const;
  std::vector<std::pair<std::string, double>> all_ranks_extra_losses() const;
  void restore(const std::optional<fs::path>& dir);
  void rollback(int64_t step, int64_t max_target_step, const std::string& why,
                std::optional<std::pair<uint64_t, uint64_t>> skip_window);
  bool save_checkpoint(bool must_succeed);

  const TrainOptions& opts_;
  std::unique_ptr<Communicator> comm_;
  bool lead_ = true;  // rank 0: the one process that writes logs, metrics and checkpoints
  std::unique_ptr<RunLock> lock_;
  std::optional<fs::path> resume_from_;
  std::vector<std::string> skipped_on_resume_;
  TrainConfig cfg_;
  fs::path tok_path_;
  int tokenizer_vocab_ = 0;
  TokenShard train_shard_, val_shard_;
  TrainerState state_;
  std::unique_ptr<Model> model_;     // what this process computes (its experts only, with expert parallelism)
  std::unique_ptr<Model> model_io_;  // expert parallelism: the whole model, as checkpoints hold it
  const Model& io_model() const { return model_io_ ? *model_io_ : *model_; }
  int expert_ranks() const { return model_io_ ? comm_->size() : 1; }
  // Checkpoint tensors (full shapes) <-> this rank's parameters.
  std::vector<Tensor> own_share(std::vector<Tensor> full) const;
  std::vector<Tensor> whole(const std::vector<Tensor>& own) const;
  std::unique_ptr<Backend> backend_;
  ParamStore params_;
  std::unique_ptr<DataParallel> dp_;
  std::unique_ptr<TrainingProgram> prog_;
  std::unique_ptr<EvalProgram> eval_;
  std::unique_ptr<BatchLoader> loader_;
  std::unique_ptr<TrainingGuard> guard_;
  std::ofstream metrics_;
  std::unique_ptr<EventLog> events_;
  bool tty_ = false;

  std::vector<int32_t> x_, y_;
  std::vector<double> local_losses_;  // this rank's piece x micro-batch losses of the step
  ExpertLoads loads_;                 // this rank's expert loads of the step
  std::vector<std::pair<std::string, double>> extra_sums_;  // this rank's extra losses, summed
  std::vector<Tensor> accum_;
  std::vector<const Tensor*> grads_;
  Tensor fault_grad_;  // a corrupted copy of grads_[0], for the fault-injection hooks
  std::vector<int32_t> dump_x_, dump_y_;  // --dump-first-step: the step's micro-batches
  bool dumped_ = false;
  std::set<int64_t> pending_nan_, pending_bitflip_;

  int64_t total_ = 0;  // the step the run stops after
  Clock::time_point run_start_;
  int64_t steps_run_ = 0;
  double last_loss_ = NAN;
  int64_t last_verified_step_ = 0;  // the last step whose recomputation matched (or the start)
  int64_t rollback_at_step_ = 0, rollbacks_without_progress_ = 0;
};

void Trainer::open_run() {
  const fs::path metrics_path = opts_.out_dir / "metrics.jsonl";
  if (lead_ && fs::is_directory(opts_.out_dir)) lock_ = std::make_unique<RunLock>(opts_.out_dir, "train");
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

std::vector<Tensor> Trainer::own_share(std::vector<Tensor> full) const {
  if (!model_io_) return full;
  ParamStore f;
  f.specs = model_io_->param_specs();
  f.tensors = std::move(full);
  return shard_params(f, *model_, *backend_, comm_->rank()).tensors;
}

std::vector<Tensor> Trainer::whole(const std::vector<Tensor>& own) const {
  if (!model_io_) return own;
  return gather_params(own, model_io_->param_specs(), *comm_, *backend_);
}

ParamStore Trainer::load_params(const fs::path& file) const {
  ParamStore p = ParamStore::load(io_model(), *backend_, file);
  if (model_io_) p = shard_params(p, *model_, *backend_, comm_->rank());
  return p;
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

// This rank's share of the step: its pieces of the global batch (train/data_parallel.h), every
// micro-batch, each piece's gradient summed over the micro-batches in order. Leaves the local
// gradient sum in grads_ (deterministic mode with several pieces: the pieces staged in dp_) and
// the losses in local_losses_.
void Trainer::forward_backward() {
  std::vector<uint64_t> batches;
  for (int64_t micro = 0; micro < cfg_.grad_accum; ++micro) {
    skip_data_windows();
    batches.push_back(loader_->position());
    loader_->seek(loader_->position() + 1);
  }
  local_losses_.clear();
  loads_.clear();
  extra_sums_.clear();
  dp_->discard_pieces();
  const int64_t pieces = dp_->local_pieces(), rows = dp_->rows_per_piece();
  for (int64_t p = 0; p < pieces; ++p) {
    const int64_t piece = dp_->first_piece() + p;
    for (int64_t micro = 0; micro < cfg_.grad_accum; ++micro) {
      loader_->fill_rows(batches[static_cast<size_t>(micro)], static_cast<int>(piece * rows), static_cast<int>(rows),
                         x_.data(), y_.data());
      if (!opts_.dump_first_step.empty() && !dumped_) {
        dump_x_.insert(dump_x_.end(), x_.begin(), x_.end());
        dump_y_.insert(dump_y_.end(), y_.begin(), y_.end());
      }
      local_losses_.push_back(dp_->overlapping() ? prog_->run(x_, y_, [this](size_t s) { dp_->after_step(s); })
                                                 : prog_->run(x_, y_));
      const auto extra = prog_->extra_losses();
      if (extra_sums_.empty()) extra_sums_.assign(extra.size(), {"", 0.0});
      for (size_t k = 0; k < extra.size(); ++k) extra_sums_[k] = {extra[k].first, extra_sums_[k].second + extra[k].second};
      if (!prog_->nodes().router_choices.empty()) add_expert_loads(*prog_, params_, loads_);
      if (cfg_.grad_accum > 1)
        for (size_t i = 0; i < accum_.size(); ++i) {
          if (micro == 0) accum_[i].copy_from(prog_->grad(i));
          else backend_->axpy(accum_[i], 1.0f, prog_->grad(i));
        }
    }
    for (size_t i = 0; i < grads_.size(); ++i) grads_[i] = cfg_.grad_accum > 1 ? &accum_[i] : &prog_->grad(i);
    if (pieces > 1) dp_->add_piece(grads_);
  }
}

void Trainer::dump_step(double loss, double norm, double inv_count) {
  check(comm_->size() == 1, "--dump-first-step: one process only");
  fs::create_directories(opts_.dump_first_step);
  params_.to_safetensors(*model_).save(opts_.dump_first_step / "model.safetensors");
  const int64_t T = cfg_.block_size, rows = static_cast<int64_t>(dump_x_.size()) / T;
  SafetensorsFile out;
  out.tensors["input_ids"] = HostTensor::i32({rows, T}, dump_x_);
  out.tensors["labels"] = HostTensor::i32({rows, T}, dump_y_);
  out.tensors["loss"] = HostTensor::f32({1}, {static_cast<float>(loss)});
  out.tensors["grad_norm"] = HostTensor::f32({1}, {static_cast<float>(norm)});
  for (size_t i = 0; i < params_.specs.size(); ++i) {
    if (!params_.specs[i].trainable) continue;
    std::vector<float> g = grads_[i]->to_host();
    for (float& v : g) v = static_cast<float>(v * inv_count);
    out.tensors["grad." + params_.specs[i].name] = HostTensor::f32(params_.specs[i].shape, g);
  }
  out.save(opts_.dump_first_step / "step.safetensors");
  dumped_ = true;
}

ExpertLoads Trainer::all_ranks_loads() const {
  if (comm_->size() == 1) return loads_;
  std::vector<double> mine;
  for (const auto& [layer, load] : loads_)
    for (int64_t l : load) mine.push_back(static_cast<double>(l));
  std::vector<double> all(mine.size() * static_cast<size_t>(comm_->size()));
  comm_->all_gather(mine.data(), all.data(), mine.size() * sizeof(double));
  ExpertLoads out = loads_;
  for (auto& [layer, load] : out) std::fill(load.begin(), load.end(), 0);
  for (size_t r = 0; r < static_cast<size_t>(comm_->size()); ++r) {
    size_t k = r * mine.size();
    for (auto& [layer, load] : out)
      for (int64_t& l : load) l += static_cast<int64_t>(all[k++]);
  }
  return out;
}

std::vector<std::pair<std::string, double>> Trainer::all_ranks_extra_losses() const {
  std::vector<std::pair<std::string, double>> out;
  const double runs = static_cast<double>(local_losses_.size() * static_cast<size_t>(comm_->size()));
  for (const auto& [name, sum] : extra_sums_) out.emplace_back(name, comm_->all_reduce_sum(sum) / runs);
  return out;
}

void Trainer::inject_faults(int64_t step) {
  const bool nan = pending_nan_.erase(step) > 0, flip = pending_bitflip_.erase(step) > 0;
  if (!nan && !flip) return;
  std::vector<float> g = grads_[0]->to_host();
  if (nan) {
    std::fill(g.begin(), g.end(), NAN);
    local_losses_.at(0) = NAN;
  } else {
    uint32_t bits;
    std::memcpy(&bits, &g[0], 4);
    bits ^= 1u << 22;  // the top mantissa bit: a silent, plausible-looking corruption
    std::memcpy(&g[0], &bits, 4);
  }
  fault_grad_ = Tensor::from_host(*backend_, params_.specs[0].shape, g);
  grads_[0] = &fault_grad_;
}

// Recomputes this rank's share of the step and compares it bit for bit (losses, then the local
// gradient sums). Deterministic mode with several pieces per rank compares the last piece.
std::optional<std::string> Trainer::recompute_differs(uint64_t position_before) {
  std::vector<std::vector<float>> first(grads_.size());
  for (size_t i = 0; i < grads_.size(); ++i) first[i] = grads_[i]->to_host();
  const std::vector<double> losses = local_losses_;
  loader_->seek(position_before);
  forward_backward();
  for (size_t k = 0; k < losses.size(); ++k)
    if (std::memcmp(&losses[k], &local_losses_[k], sizeof(double)) != 0) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "loss %.9g, recomputed %.9g", losses[k], local_losses_[k]);
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
    const ParamStore saved = load_params(*dir / "model.safetensors");
    for (size_t i = 0; i < params_.tensors.size(); ++i) params_.tensors[i].copy_from(saved.tensors[i]);
    ParamStore shapes;
    shapes.specs = io_model().param_specs();
    std::vector<Tensor> m = shapes.zeros_like(*backend_), v = shapes.zeros_like(*backend_);
    read_optimizer_state(*dir, shapes, m, v);
    dp_->load_moments(own_share(m), own_share(v));
    const TrainerState s = read_trainer_state(*dir);
    state_.step = s.step;
    state_.data_position = s.data_position;
    guard_->load(s.guard, (*dir / "trainer_state.json").string());
  } else {  // the initial state: weights from the seed, zero moments
    const std::vector<Tensor> init = own_share(ParamStore::init(io_model(), *backend_, state_.seed).tensors);
    for (size_t i = 0; i < params_.tensors.size(); ++i) params_.tensors[i].copy_from(init[i]);
    dp_->zero_moments();
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
  comm_->barrier();  // every rank reads the checkpoints before the lead changes them
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
  comm_->barrier();
  // Checkpoints after the target belong to the abandoned timeline: resuming from one of them
  // would continue from the state being rolled back.
  if (lead_) {
    for (const fs::path& ck : list_checkpoints(opts_.out_dir))
      if (checkpoint_step(ck) > target_step) {
        remove_checkpoint(ck);
        events_->note("rollback: removed " + ck.filename().string(), false);
      }
    if (target) set_latest_checkpoint(opts_.out_dir, *target);
    else fs::remove(opts_.out_dir / "checkpoints" / "latest");
  }
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
  // Collective: every rank takes part in gathering what the lead writes.
  std::vector<Tensor> exp_avg, exp_avg_sq;
  dp_->full_moments(exp_avg, exp_avg_sq);
  ParamStore full;
  full.specs = io_model().param_specs();
  full.tensors = whole(params_.tensors);
  exp_avg = whole(exp_avg);
  exp_avg_sq = whole(exp_avg_sq);
  if (!lead_) return true;
  fs::path dir;
  try {
    dir = write_checkpoint(opts_.out_dir, io_model(), full, exp_avg, exp_avg_sq, tok_path_, state_);
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

// One page: setup, then per step forward-backward (and verification), update (reduce, guard,
// optimizer), metrics, rollback, checkpoint; each phase is a member below.
void Trainer::run() {
  // Installed first: a SIGTERM during setup also means "stop after the next step, checkpointed".
  StopSignals signals;
  comm_ = make_communicator(opts_.comm, opts_.collective_timeout);
  lead_ = comm_->rank() == 0;
  open_run();
  load_config();
  build_model();
  build_parallel();
  build_programs();
  open_outputs();
  run_start_ = Clock::now();
  last_verified_step_ = state_.step;
  while (state_.step < total_) {
    const int64_t step = state_.step + 1;
    const auto t0 = Clock::now();
    skip_data_windows();
    const uint64_t position_before = loader_->position(), bytes_before = comm_->bytes_sent();
    forward_backward();
    inject_faults(step);
    if (!verify(step, position_before)) continue;  // rolled back
    const StepUpdate u = update(step, position_before);
    record(step, u, t0, bytes_before);
    if (u.verdict && rollback_if_due(step)) continue;
    if (checkpoint_or_stop(step)) return;
  }
  report_done();
}

// The run's configuration (and, resuming, the state it continues from).
void Trainer::load_config() {
  cfg_ = TrainConfig::load(opts_.config, opts_.sets);
  tok_path_ = opts_.data_dir / "tokenizer.json";
  check(fs::exists(tok_path_), tok_path_.string(), ": missing (run `tandem prepare` first)");
  tokenizer_vocab_ = Tokenizer::load(tok_path_).vocab_size();
  if (!cfg_.model.contains("vocab_size")) cfg_.model["vocab_size"] = tokenizer_vocab_;
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
}

// The model (this rank's share of the experts with expert parallelism), backend and weights.
void Trainer::build_model() {
  model_ = model_from_hf_config(cfg_.model, "config");
  model_->set_mtp_loss_weight(cfg_.mtp_loss_weight);
  model_->set_compute_dtype(compute_dtype(cfg_));
  check(cfg_.block_size <= model_->context_length(), "config: block_size ", cfg_.block_size,
        " exceeds the model's context ", model_->context_length());
  check_vocab(train_shard_, model_->vocab_size(), tokenizer_vocab_);
  check_vocab(val_shard_, model_->vocab_size(), tokenizer_vocab_);
  check(opts_.expert_parallel == 1 || opts_.expert_parallel == comm_->size(), "--expert-parallel ",
        opts_.expert_parallel, " must equal the number of ranks (", comm_->size(), ")");
  if (opts_.expert_parallel > 1) {
    // This rank computes with its share of the experts; checkpoints hold the whole model.
    model_io_ = std::move(model_);
    model_ = model_from_hf_config(cfg_.model, "config");
    model_->set_mtp_loss_weight(cfg_.mtp_loss_weight);
    model_->set_compute_dtype(compute_dtype(cfg_));
    model_->set_expert_parallel(opts_.expert_parallel, comm_->rank());
  }
  total_ = opts_.steps.value_or(cfg_.max_steps);
  check(total_ > 0, "--steps must be positive");

  backend_ = make_backend(opts_.backend);
  // GPU ranks add up gradients with NCCL on the device the backend chose (MPI still carries the
  // small host values and shares NCCL's id).
  if (opts_.comm == "nccl" || (opts_.comm == "auto" && opts_.backend == "cuda" && comm_->size() > 1)) {
#ifdef TANDEM_HAVE_NCCL
    comm_ = make_nccl_communicator(std::move(comm_), opts_.collective_timeout);
#else
    check(opts_.comm != "nccl", "--comm nccl: this build has no NCCL (CMake found no CUDA toolkit, or no NCCL)");
#endif
  }
  if (opts_.expert_parallel > 1) set_expert_parallel_communicator(comm_.get());
  if (resume_from_) {
    params_ = load_params(*resume_from_ / "model.safetensors");
  } else {
    params_.specs = model_->param_specs();
    params_.tensors = own_share(ParamStore::init(io_model(), *backend_, state_.seed).tensors);
  }
}

// Data parallelism (train/data_parallel.h), AdamW moments, the training guard.
void Trainer::build_parallel() {
  ParallelOptions popts;
  popts.reduce = parse_reduce_mode(opts_.reduce);
  popts.zero = opts_.zero;
  popts.dp_shards = opts_.dp_shards;
  // Deterministic mode keeps the shard count a run started with, so resuming on another number
  // of ranks continues bit for bit.
  if (popts.reduce == ReduceMode::deterministic && popts.dp_shards == 0)
    popts.dp_shards = state_.parallel.is_object() ? state_.parallel.value("dp_shards", int64_t{comm_->size()})
                                                  : int64_t{comm_->size()};
  std::vector<bool> rank_local;  // expert parallelism: this rank's own experts
  const std::vector<ParamSpec> io_specs = io_model().param_specs();
  for (size_t i = 0; i < params_.specs.size(); ++i) rank_local.push_back(params_.specs[i].shape != io_specs[i].shape);
  dp_ = std::make_unique<DataParallel>(*comm_, popts, params_, *backend_, cfg_.batch_size, rank_local);
  state_.parallel = {{"reduce", reduce_mode_name(popts.reduce)}, {"dp_shards", dp_->pieces()}};
  if (resume_from_) {
    ParamStore shapes;
    shapes.specs = io_specs;
    std::vector<Tensor> m = shapes.zeros_like(*backend_), v = shapes.zeros_like(*backend_);
    read_optimizer_state(*resume_from_, shapes, m, v);
    dp_->load_moments(own_share(m), own_share(v));
  }
  guard_ = std::make_unique<TrainingGuard>(cfg_);
  guard_->load(state_.guard, resume_from_ ? (*resume_from_ / "trainer_state.json").string() : "initial state");
}

// The training and validation programs, the gradient-reduction overlap, the data loader.
void Trainer::build_programs() {
  const int64_t B = cfg_.batch_size, T = cfg_.block_size;
  const int64_t R = dp_->rows_per_piece();  // rows this process computes at once
  prog_ = std::make_unique<TrainingProgram>(*model_, *backend_, params_, R, T);
  // Overlap the gradient reduction with the backward pass where a step is one program run per rank
  // (and no hook re-runs or rewrites the gradients before they are reduced).
  if (opts_.overlap && comm_->size() > 1 && dp_->options().reduce == ReduceMode::fast && !opts_.zero && dp_->local_pieces() == 1 &&
      cfg_.grad_accum == 1 && opts_.verify_every == 0 && opts_.inject_nan_at.empty() && opts_.inject_bitflip_at.empty() &&
      !comm_->works_on_device()) {
    std::vector<const Tensor*> g;
    std::vector<size_t> at;
    for (size_t i = 0; i < params_.tensors.size(); ++i) {
      g.push_back(&prog_->grad(i));
      at.push_back(prog_->grad_written_at(i));
    }
    dp_->plan_overlap(g, at);
  }
  // Validation runs on the lead; with expert parallelism every rank takes part (the same batches).
  if (lead_ || expert_ranks() > 1) eval_ = std::make_unique<EvalProgram>(*model_, *backend_, params_, B, T);
  loader_ = std::make_unique<BatchLoader>(train_shard_, static_cast<int>(B), static_cast<int>(T), state_.seed);
  loader_->seek(state_.data_position);

  x_.resize(static_cast<size_t>(R * T));
  y_.resize(x_.size());
  if (cfg_.grad_accum > 1) accum_ = params_.zeros_like(*backend_);
  grads_.resize(params_.tensors.size());
}

// The run directory (the lead: lock, metrics, event log), fault injections, the banner.
void Trainer::open_outputs() {
  const int64_t B = cfg_.batch_size, T = cfg_.block_size, R = dp_->rows_per_piece();
  // Every rank has validated everything: from here on the lead changes the run directory.
  comm_->barrier();
  tty_ = ::isatty(2) && lead_;
  if (lead_) {
    fs::create_directories(opts_.out_dir);
    if (!lock_) lock_ = std::make_unique<RunLock>(opts_.out_dir, "train");
    remove_stale_checkpoint_files(opts_.out_dir);
    const fs::path metrics_path = opts_.out_dir / "metrics.jsonl";
    if (opts_.resume) truncate_metrics(metrics_path, state_.step);  // step 0 when there was nothing to resume
    metrics_.open(metrics_path, std::ios::app);
    check(metrics_.good(), metrics_path.string(), ": cannot open for writing");
  }
  events_ = std::make_unique<EventLog>(opts_.out_dir / "events.log", metrics_, tty_, lead_);
  for (const std::string& why : skipped_on_resume_)
    events_->event("resume_skipped_checkpoint", state_.step,
                   why + "; resuming from " + resume_from_->filename().string());
  if (opts_.inject_write_limit) inject_checkpoint_write_limit(*opts_.inject_write_limit);
  pending_nan_.insert(opts_.inject_nan_at.begin(), opts_.inject_nan_at.end());
  pending_bitflip_.insert(opts_.inject_bitflip_at.begin(), opts_.inject_bitflip_at.end());

  if (lead_)
    std::fprintf(stderr, "tandem train: %s, %lld parameters, batch %lld x %lld x %lld accum, backend %s%s\n",
                 model_->type().c_str(), static_cast<long long>(params_.count()), static_cast<long long>(B),
                 static_cast<long long>(T), static_cast<long long>(cfg_.grad_accum), backend_->name().c_str(),
                 resume_from_ ? (", resuming from " + resume_from_->string()).c_str() : "");
  // A plugin's nodes placed on its CPU fallback (decided once, when the program was built).
  if (lead_ && !prog_->program().placement().empty())
    std::fprintf(stderr, "placement: %s\n", prog_->program().placement().c_str());
  if (comm_->size() > 1 || opts_.zero) {
    // Every rank reports what it holds: the proof that ZeRO-1 shards the optimizer state.
    const uint64_t mine = dp_->state_bytes();
    std::vector<uint64_t> state(static_cast<size_t>(comm_->size()));
    comm_->all_gather(&mine, state.data(), sizeof mine);
    std::fprintf(stderr, "rank %d/%d (%s): %lld of %lld rows per micro-batch in %lld piece(s), reduce %s, ZeRO-%d, "
                 "AdamW state %s on this rank\n",
                 comm_->rank(), comm_->size(), comm_->name().c_str(), static_cast<long long>(R * dp_->local_pieces()),
                 static_cast<long long>(B), static_cast<long long>(dp_->local_pieces()), reduce_mode_name(dp_->options().reduce),
                 opts_.zero, size_str(mine).c_str());
    if (lead_)
      metrics_ << nlohmann::json{{"event", "parallel"}, {"step", state_.step}, {"world_size", comm_->size()},
                                 {"communicator", comm_->name()}, {"reduce", reduce_mode_name(dp_->options().reduce)},
                                 {"dp_shards", dp_->pieces()}, {"zero", opts_.zero}, {"optimizer_state_bytes", state}}
                      .dump()
               << "\n" << std::flush;
  }
  events_->note(resume_from_ ? "resumed from " + resume_from_->filename().string()
                             : std::string(opts_.resume ? "resume: no checkpoint yet, starting at step 0" : "started"),
                false);
}

// --verify-every: recomputes the step and compares; false when it differed (and was rolled back).
bool Trainer::verify(int64_t step, uint64_t position_before) {
  if (opts_.verify_every > 0 && step % opts_.verify_every == 0) {
    std::optional<std::string> diff = recompute_differs(position_before);
    // Every rank decides alike: a mismatch on any rank rolls all of them back.
    const double worst = comm_->all_reduce_max(diff ? comm_->rank() + 1.0 : 0.0);
    if (worst > 0) {
      if (!diff) diff = "on rank " + std::to_string(static_cast<int>(worst) - 1);
      events_->event("verify_mismatch", step, "recomputing the step gave different results: " + *diff,
                     {{"last_verified_step", last_verified_step_}});
      rollback(step, last_verified_step_, "gradient verification failed", std::nullopt);
      return false;
    }
    last_verified_step_ = step;
  }
  return true;
}

// Reduce the ranks' gradients, ask the guard, apply AdamW (unless the guard says skip).
Trainer::StepUpdate Trainer::update(int64_t step, uint64_t position_before) {
  // The mean over the step's P pieces x grad_accum micro-batches (train/data_parallel.h).
  StepUpdate u;
  u.inv_count = 1.0 / static_cast<double>(dp_->pieces() * cfg_.grad_accum);
  u.loss = dp_->mean_loss(local_losses_);
  u.norm = dp_->reduce(grads_, u.inv_count);
  if (!opts_.dump_first_step.empty() && !dumped_) dump_step(u.loss, u.norm, u.inv_count);
  u.lr = learning_rate_at(cfg_, step - 1);
  u.verdict = guard_->check(step, position_before, u.loss, u.norm);
  if (!u.verdict) {
    double scale = u.inv_count;
    if (cfg_.grad_clip > 0) scale *= std::min(1.0, cfg_.grad_clip / (u.norm + 1e-6));
    dp_->step(params_, grads_, cfg_, u.lr, step, static_cast<float>(scale));
  }
  state_.step = step;
  state_.data_position = loader_->position();
  state_.guard = guard_->to_json();
  last_loss_ = u.loss;
  ++steps_run_;
  return u;
}

// The step's metrics.jsonl line (with the MoE balance update and validation), events, progress.
void Trainer::record(int64_t step, const StepUpdate& u, Clock::time_point t0, uint64_t bytes_before) {
  const int64_t B = cfg_.batch_size, T = cfg_.block_size;
  const double loss = u.loss, lr = u.lr;
  const std::optional<GuardVerdict>& verdict = u.verdict;
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  const double tok_s = static_cast<double>(B * T * cfg_.grad_accum) / dt;
  nlohmann::json m = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", u.norm}, {"tokens_per_s", tok_s},
                      {"step_ms", dt * 1e3}};
  if (comm_->size() > 1) {
    m["tokens_per_s_per_rank"] = tok_s / comm_->size();
    m["comm_bytes"] = comm_->bytes_sent() - bytes_before;  // sent by rank 0 this step
  }
  if (verdict) m["skipped"] = true;
  const bool eval_now = step % cfg_.eval_interval == 0 || step == total_;
  for (const auto& [name, value] : all_ranks_extra_losses()) m[name] = value;
  // DeepSeekMoE: loads of this step's routing (every rank's pieces); the bias moves only when
  // the update was applied, the same way on every rank.
  if (!loads_.empty())
    m["moe"] = balance_experts(all_ranks_loads(), params_, verdict ? 0.0 : cfg_.router_bias_update_rate, eval_now);
  if (eval_now && eval_) m["val_loss"] = validation_loss(*eval_, val_shard_, cfg_);
  if (lead_) metrics_ << m.dump() << "\n" << std::flush;
  if (verdict)
    events_->event("skip", step, verdict->kind + ": " + verdict->detail + "; update not applied",
                   {{"reason", verdict->kind}, {"bad_streak", guard_->bad_streak()}});

  const double elapsed = std::chrono::duration<double>(Clock::now() - run_start_).count();
  const double eta = elapsed / static_cast<double>(steps_run_) * static_cast<double>(total_ - step);
  if (lead_ && (tty_ || eval_now || steps_run_ == 1 || step % 50 == 0)) {
    std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s", tty_ ? "\r\033[K" : "",
                 static_cast<long long>(step), static_cast<long long>(total_), loss, lr, tok_s,
                 duration_str(eta).c_str());
    if (eval_now) std::fprintf(stderr, " | val %.4f", m["val_loss"].get<double>());
    std::fprintf(stderr, "%s", tty_ && !eval_now ? "" : "\n");
  }
}

// A streak of skipped steps long enough: back to the last good checkpoint; true when rolled back.
bool Trainer::rollback_if_due(int64_t step) {
  if (guard_->rollback_due()) {
    rollback(step, guard_->streak_first_step() - 1,
             std::to_string(guard_->bad_streak()) + " bad steps in a row (from step " +
                 std::to_string(guard_->streak_first_step()) + ")",
             std::pair{guard_->streak_first_position(), state_.data_position});
    return true;
  }
  return false;
}

// Periodic and final checkpoints, and the graceful stop on SIGTERM/SIGINT; true when the run stops.
bool Trainer::checkpoint_or_stop(int64_t step) {
  // A signal reaches the ranks at different moments: they stop together, after the same step.
  const int stop_signal = comm_->size() > 1 ? static_cast<int>(comm_->all_reduce_max(g_stop_signal.load()))
                                            : g_stop_signal.load();
  const bool periodic = opts_.checkpoint_every > 0 && step % opts_.checkpoint_every == 0;
  if (periodic && guard_->bad_streak() > 0 && step != total_ && !stop_signal) {
    // Mid-streak the state is not known to be good; writing it could let retention delete the
    // checkpoint a rollback needs.
    events_->note("step " + std::to_string(step) + ": checkpoint deferred (bad-step streak)", false);
  } else if (periodic || step == total_ || stop_signal) {
    const bool saved = save_checkpoint(step == total_ || stop_signal);
    if (saved && step == total_ && lead_)
      std::fprintf(stderr, "checkpoint: %s\n", (opts_.out_dir / "checkpoints" / ("step_" + std::to_string(step))).c_str());
  }
  if (stop_signal) {
    events_->event("stop", step,
                   std::string(stop_signal == SIGINT ? "SIGINT" : "SIGTERM") +
                       ": stopped after the current step with checkpoint step_" + std::to_string(step),
                   {{"signal", stop_signal == SIGINT ? "SIGINT" : "SIGTERM"}});
    return true;
  }
  return false;
}

void Trainer::report_done() {
  if (!lead_) return;
  if (steps_run_ == 0)
    std::fprintf(stderr, "tandem train: the run is already at step %lld (>= %lld); nothing to do\n",
                 static_cast<long long>(state_.step), static_cast<long long>(total_));
  else {
    const double secs = std::chrono::duration<double>(Clock::now() - run_start_).count();
    std::fprintf(stderr, "done: %lld steps in %s, final loss %.4f\n", static_cast<long long>(steps_run_),
                 duration_str(secs).c_str(), last_loss_);
    if (const Program& p = prog_->program(); p.nodes_on_fallback() > 0 && secs > 0)
      std::fprintf(stderr, "fallback copies: %zu per step, %.3f s in all (%.1f%% of the run)\n", p.copies_per_run(),
                   p.copy_seconds(), 100 * p.copy_seconds() / secs);
  }
}

}  // namespace

void train(const TrainOptions& opts) {
  run_as_rank([&] { Trainer(opts).run(); });
}

}  // namespace tandem
