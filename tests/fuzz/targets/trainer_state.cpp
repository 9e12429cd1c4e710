// A checkpoint's trainer_state.json as --resume reads it (train/checkpoint.cpp read_trainer_state,
// then the training config it holds: TrainConfig::from_json).
#include "fuzz_target.h"
#include "train/checkpoint.h"
#include "train/config.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(trainer_state) {
  const auto path = fuzz::write_file("ckpt/trainer_state.json", fuzz::as_text(data, size));
  TrainerState s;
  if (!fuzz::expect_clean([&] { s = read_trainer_state(path.parent_path()); }, path.string())) return;
  fuzz::expect_clean([&] { TrainConfig::from_json(s.train_config, path.string()); }, path.string());
}
