// Checkpoints: RUN_DIR/checkpoints/step_<N>/ holding
//   config.json, model.safetensors, tokenizer.json   an HF-style model directory
//   optimizer.safetensors                            AdamW moments, "exp_avg.<param>" / "exp_avg_sq.<param>"
//   trainer_state.json                               step, seed, data position, guard state, the training config
//   manifest.json                                    size and XXH64 of every file above
// Written into a temporary directory (.tmp.step_<N>.<pid>), every file and the directory fsynced,
// then renamed into place: a reader sees a complete checkpoint or none. manifest.json is written
// last, so a directory without one is never a checkpoint. RUN_DIR/checkpoints/latest is a symlink
// to the newest checkpoint written, swapped atomically (rename over it). Loading verifies the
// manifest first.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "models/params.h"

namespace tandem {

struct TrainerState {
  int64_t step = 0;
  uint64_t seed = 0;
  uint64_t data_position = 0;  // batches consumed by the training loader
  nlohmann::json train_config;
  // How the run is parallelised where that shapes the numbers ({"reduce", "dp_shards"}): a resume
  // on another number of ranks keeps deterministic mode's shard count.
  nlohmann::json parallel;
  nlohmann::json guard;  // TrainingGuard::to_json(): the guards' window, so a resumed run decides alike
  // Batch-index windows [from, to) the loader jumps over: data that made training diverge.
  std::vector<std::pair<uint64_t, uint64_t>> skipped_data;
};

// Throws Error naming the file and the OS error (e.g. "No space left on device") on any write
// failure; the temporary directory is removed, so earlier checkpoints are untouched and nothing
// half-written is left that could pass for a checkpoint.
std::filesystem::path write_checkpoint(const std::filesystem::path& run_dir, const Model& model,
                                       const ParamStore& params, const std::vector<Tensor>& exp_avg,
                                       const std::vector<Tensor>& exp_avg_sq,
                                       const std::filesystem::path& tokenizer_json, const TrainerState& state);

// Test hook (fault injection): after `bytes` more bytes of checkpoint files, writes fail with
// ENOSPC, as on a full disk. Counted across write_checkpoint calls in this process.
void inject_checkpoint_write_limit(uint64_t bytes);

// What is wrong with a checkpoint (file, expected vs actual size or checksum), or nullopt if its
// manifest verifies. Reads every file.
std::optional<std::string> checkpoint_problem(const std::filesystem::path& dir);
// Throws Error with checkpoint_problem's message.
void verify_checkpoint(const std::filesystem::path& dir);

// All step_<N> directories of a run, highest step first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& run_dir);
// N of a step_<N> directory.
int64_t checkpoint_step(const std::filesystem::path& dir);
// Total bytes of the files in a checkpoint directory.
uint64_t checkpoint_bytes(const std::filesystem::path& dir);

// Points RUN_DIR/checkpoints/latest at `dir` (atomically: a new symlink renamed over the old).
void set_latest_checkpoint(const std::filesystem::path& run_dir, const std::filesystem::path& dir);
// Deletes a checkpoint: renamed out of the step_<N> namespace first, so a crash mid-delete leaves
// nothing that looks like a checkpoint.
void remove_checkpoint(const std::filesystem::path& dir);
// Retention: among checkpoints at or below `current_step`, keeps the newest `keep_last` (0: all),
// every step that is a multiple of `keep_every` (0: none) and the newest at or below
// `rollback_step` (what a rollback would return to); deletes the rest. Returns what it deleted.
// Checkpoints above current_step (an abandoned timeline, e.g. a corrupt one skipped by --resume)
// are left alone: training overwrites them when it gets there.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& run_dir, int64_t current_step,
                                                     int64_t keep_last, int64_t keep_every, int64_t rollback_step);
// Removes leftovers of a killed writer (temporary and half-deleted directories). Call only while
// holding the run's lock.
void remove_stale_checkpoint_files(const std::filesystem::path& run_dir);

// A model directory given by the user: a directory with config.json, or a run directory (meaning
// its newest checkpoint).
std::filesystem::path resolve_model_dir(const std::filesystem::path& path);

TrainerState read_trainer_state(const std::filesystem::path& dir);
nlohmann::json read_json_file(const std::filesystem::path& path);
// Restores AdamW moments saved by write_checkpoint into m and v (shaped like params).
void read_optimizer_state(const std::filesystem::path& dir, const ParamStore& params, std::vector<Tensor>& exp_avg,
                          std::vector<Tensor>& exp_avg_sq);

}  // namespace tandem
