#include "cli/commands.h"
#include "train/config.h"
#include "train/trainer.h"

namespace tandem::cli {

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model on a prepared data directory");
  auto o = std::make_shared<TrainOptions>();
  auto on_error = std::make_shared<std::string>("stop");
  std::string presets;
  for (const auto& n : TrainConfig::preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  cmd->add_option("--config", o->config, "Preset (" + presets + ") or JSON config file")->required();
  cmd->add_option("--data", o->data_dir, "Data directory from `tandem prepare`")->required();
  cmd->add_option("--out", o->out_dir, "Run directory (metrics.jsonl, events.log, checkpoints/)")->required();
  cmd->add_option("--steps", o->steps, "Stop after this many total steps (default: the config's max_steps)");
  cmd->add_option("--set", o->sets, "Override a config key: --set key=value (repeatable)")->allow_extra_args(false);
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "Checkpoint every N steps (always at the end)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--keep-last", o->keep_last, "Keep only the newest K checkpoints (0: keep all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--keep-every", o->keep_every, "With --keep-last, also keep every checkpoint whose step is a multiple of M")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--verify-every", o->verify_every,
                  "Recompute every N-th step and compare gradients bit for bit; a mismatch rolls back (0: off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--on-checkpoint-error", *on_error,
                  "A periodic checkpoint that cannot be written (disk full, I/O error): stop, or continue training")
      ->check(CLI::IsMember({"stop", "continue"}))
      ->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue from the newest valid checkpoint in --out");
  cmd->add_option("--seed", o->seed, "Seed for initialisation and batch order")->capture_default_str();
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  add_fallback_option(cmd);
  // Data parallelism: start with `mpirun -np N tandem train ...` (README, "Training on several processes").
  cmd->add_option("--reduce", o->reduce,
                  "How the ranks' gradients are added: fast (the MPI engine's all-reduce) or deterministic (a fixed "
                  "order: bit-identical weights for any number of ranks dividing --dp-shards)")
      ->check(CLI::IsMember({"fast", "deterministic"}))
      ->capture_default_str();
  cmd->add_option("--dp-shards", o->dp_shards,
                  "Deterministic mode: split each global batch into this many equal shards (default: the world size "
                  "of the run's first start)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--zero", o->zero, "ZeRO stage: 1 shards the AdamW state across ranks")
      ->check(CLI::IsMember({0, 1}))
      ->capture_default_str();
  cmd->add_option("--expert-parallel", o->expert_parallel,
                  "DeepSeek MoE: split the routed experts over this many ranks (1, or the number of ranks); tokens "
                  "travel to their experts' owners and back by all-to-all")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("!--no-overlap", o->overlap,
                "Reduce the gradients after the backward pass instead of bucket by bucket during it (fast mode)");
  cmd->add_option("--comm", o->comm,
                  "Collectives: auto (MPI when started by mpirun with -np > 1; NCCL for --backend cuda), single, mpi, "
                  "nccl")
      ->check(CLI::IsMember({"auto", "single", "mpi", "nccl"}))
      ->capture_default_str();
  cmd->add_option("--collective-timeout", o->collective_timeout,
                  "Seconds any collective may wait for the other ranks before ending the job")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  // Fault injection for tests (README, "Fault tolerance"); hidden from --help.
  cmd->add_option("--inject-nan-at", o->inject_nan_at, "")->delimiter(',')->group("");
  cmd->add_option("--inject-bitflip-at", o->inject_bitflip_at, "")->delimiter(',')->group("");
  cmd->add_option("--inject-write-limit", o->inject_write_limit, "")->group("");
  cmd->add_option("--dump-first-step", o->dump_first_step, "")->group("");  // tests: train/trainer.h
  auto precision = std::make_shared<std::string>();
  cmd->add_option("--precision", *precision,
                  "f32, or bf16 mixed precision (bf16 matmuls and activations, f32 master weights, optimizer, norms, "
                  "residual stream and loss); same as --set precision=...")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->callback([o, on_error, precision] {
    if (!precision->empty()) o->sets.push_back("precision=" + *precision);
    o->continue_on_checkpoint_error = *on_error == "continue";
    train(*o);
  });
}

}  // namespace tandem::cli
