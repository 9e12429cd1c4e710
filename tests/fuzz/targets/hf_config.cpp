// HF config.json of an imported model (models/gpt2.cpp, deepseek_v3.cpp: model_from_hf_config),
// read as `tandem import` / load_model do; a config that is accepted must describe a model whose
// parameter shapes and cache sizes can be computed.
#include "fuzz_target.h"
#include "models/model.h"
#include "train/checkpoint.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(hf_config) {
  const auto path = fuzz::write_file("config.json", fuzz::as_text(data, size));
  std::unique_ptr<Model> m;
  if (!fuzz::expect_clean([&] { m = model_from_hf_config(read_json_file(path), path.string()); }, path.string())) return;
  int64_t total = 0;
  for (const auto& p : m->param_specs()) total += numel(p.shape) > 0;
  fuzz::require(total > 0, "a model without parameters");
  m->kv_cache_bytes_per_token();
  m->hf_config().dump();
}
