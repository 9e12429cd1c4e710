#include "cli/commands.h"
#include "train/config.h"
#include "train/trainer.h"

namespace tandem::cli {

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model on a prepared data directory");
  auto o = std::make_shared<TrainOptions>();
  std::string presets;
  for (const auto& n : TrainConfig::preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  cmd->add_option("--config", o->config, "Preset (" + presets + ") or JSON config file")->required();
  cmd->add_option("--data", o->data_dir, "Data directory from `tandem prepare`")->required();
  cmd->add_option("--out", o->out_dir, "Run directory (metrics.jsonl, checkpoints/)")->required();
  cmd->add_option("--steps", o->steps, "Stop after this many total steps (default: the config's max_steps)");
  cmd->add_option("--set", o->sets, "Override a config key: --set key=value (repeatable)")->allow_extra_args(false);
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "Checkpoint every N steps (always at the end)");
  cmd->add_flag("--resume", o->resume, "Continue from the newest checkpoint in --out");
  cmd->add_option("--seed", o->seed, "Seed for initialisation and batch order")->capture_default_str();
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  cmd->callback([o] { train(*o); });
}

}  // namespace tandem::cli
