// The trainer's config file (train/config.cpp: --config FILE), every key and its type.
#include "fuzz_target.h"
#include "train/config.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(train_config) {
  const auto path = fuzz::write_file("train.json", fuzz::as_text(data, size));
  TrainConfig c;
  if (!fuzz::expect_clean([&] { c = TrainConfig::load(path.string(), {}); }, path.string())) return;
  // An accepted config survives to_json -> from_json (what checkpoints store and --resume reads).
  fuzz::require(fuzz::expect_clean([&] { TrainConfig::from_json(c.to_json(), "to_json"); }, "to_json"),
                "to_json() wrote a config from_json refuses");
}
