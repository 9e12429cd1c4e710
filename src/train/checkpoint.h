// Checkpoints: RUN_DIR/checkpoints/step_<N>/ holding
//   config.json, model.safetensors, tokenizer.json   an HF-style model directory
//   optimizer.safetensors                            AdamW moments, "exp_avg.<param>" / "exp_avg_sq.<param>"
//   trainer_state.json                               step, seed, data position, the training config
//   manifest.json                                    size and XXH64 of every file above
// Written into a temporary directory, every file fsynced, then renamed into place: a reader sees a
// complete checkpoint or none. Loading verifies the manifest first.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "core/tensor.h"
#include "models/params.h"

namespace tandem {

struct TrainerState {
  int64_t step = 0;
  uint64_t seed = 0;
  uint64_t data_position = 0;  // batches consumed by the training loader
  nlohmann::json train_config;
};

std::filesystem::path write_checkpoint(const std::filesystem::path& run_dir, const Model& model,
                                       const ParamStore& params, const std::vector<Tensor>& exp_avg,
                                       const std::vector<Tensor>& exp_avg_sq,
                                       const std::filesystem::path& tokenizer_json, const TrainerState& state);

// Throws, naming the file and expected vs actual size/checksum, if the checkpoint is incomplete
// or corrupted.
void verify_checkpoint(const std::filesystem::path& dir);

// All step_<N> directories of a run, highest step first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& run_dir);

// A model directory given by the user: a directory with config.json, or a run directory (meaning
// its newest checkpoint).
std::filesystem::path resolve_model_dir(const std::filesystem::path& path);

TrainerState read_trainer_state(const std::filesystem::path& dir);
nlohmann::json read_json_file(const std::filesystem::path& path);
// Restores AdamW moments saved by write_checkpoint into m and v (shaped like params).
void read_optimizer_state(const std::filesystem::path& dir, const ParamStore& params, std::vector<Tensor>& exp_avg,
                          std::vector<Tensor>& exp_avg_sq);

}  // namespace tandem
