// `tandem train`: the training loop with evaluation, metrics, progress, checkpoints, resume and
// fault tolerance (training guards, rollback, gradient re-verification, graceful stop on
// SIGTERM/SIGINT, checkpoint retention). Every anomaly is a line in RUN/metrics.jsonl
// ({"event": ...}) and in the human-readable RUN/events.log.
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
  int64_t keep_last = 0;         // retention: keep the newest K checkpoints (0: keep all)
  int64_t keep_every = 0;        // ... and every checkpoint whose step is a multiple of M
  int64_t verify_every = 0;      // recompute every N-th step and compare gradients bit for bit (0: off)
  bool continue_on_checkpoint_error = false;  // a failed periodic checkpoint is an event, not the end
  bool resume = false;
  uint64_t seed = 1337;
  std::string backend = "cpu";
  // Data parallelism (train/data_parallel.h): the collectives' engine (auto, single, mpi), the
  // reduction mode (fast, deterministic), deterministic mode's shard count (0: the world size),
  // the ZeRO stage (0, 1), and the bound in seconds on any collective call.
  std::string comm = "auto";
  std::string reduce = "fast";
  int64_t dp_shards = 0;
  int zero = 0;
  double collective_timeout = 300;
  int expert_parallel = 1;
  bool overlap = true;  // reduce gradient buckets during the backward pass where the step allows it  // ranks the routed experts are split over (1, or the world size)
  // Fault injection for tests; each injection fires once per process, like a transient fault.
  std::vector<int64_t> inject_nan_at;          // these steps' loss and first gradient become NaN
  std::vector<int64_t> inject_bitflip_at;      // these steps' first gradient gets one bit flipped
  std::optional<uint64_t> inject_write_limit;  // checkpoint writes fail with ENOSPC after this many bytes
  // For tests (one process): the first step this process runs, written to this directory before
  // its update: model.safetensors (the weights) and step.safetensors (input_ids and labels of every
  // micro-batch in order, loss, grad_norm, and grad.<param>: the step's mean gradient, as the
  // optimizer receives it before clipping).
  std::filesystem::path dump_first_step;
};

void train(const TrainOptions& opts);

}  // namespace tandem
