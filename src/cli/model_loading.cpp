#include "cli/model_loading.h"

#include "core/error.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace tandem::cli {

LoadedModel load_model(const fs::path& path, const std::string& backend) {
  LoadedModel m;
  m.dir = resolve_model_dir(path);
  if (fs::exists(m.dir / "manifest.json")) verify_checkpoint(m.dir);
  const fs::path cfg = m.dir / "config.json";
  m.model = model_from_hf_config(read_json_file(cfg), cfg.string());
  m.backend = make_backend(backend);
  m.params = std::make_unique<ParamStore>(ParamStore::load(*m.model, *m.backend, m.dir / "model.safetensors"));
  if (fs::exists(m.dir / "tokenizer.json")) m.tokenizer = Tokenizer::load(m.dir / "tokenizer.json");
  return m;
}

const Tokenizer& require_tokenizer(const LoadedModel& m) {
  check(m.tokenizer.has_value(), m.dir.string(), ": no tokenizer.json in the model directory");
  check(m.tokenizer->vocab_size() <= m.model->vocab_size(), (m.dir / "tokenizer.json").string(), ": vocabulary of ",
        m.tokenizer->vocab_size(), " tokens does not fit the model's vocab_size ", m.model->vocab_size());
  return *m.tokenizer;
}

}  // namespace tandem::cli
