// `tandem train`: the training loop with evaluation, metrics, progress, checkpoints and resume.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tandem {

struct TrainOptions {
  std::string config = "baby-gpt";
  std::vector<std::string> sets;
  std::filesystem::path data_dir, out_dir;
  std::optional<int64_t> steps;  // stop after this many total steps (default: max_steps)
  int64_t checkpoint_every = 0;  // 0: only at the end
  bool resume = false;
  uint64_t seed = 1337;
  std::string backend = "cpu";
};

void train(const TrainOptions& opts);

}  // namespace tandem
