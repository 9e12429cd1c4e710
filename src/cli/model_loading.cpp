#include "cli/model_loading.h"

#include "core/error.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace tandem::cli {

LoadedModel load_model(const fs::path& path, const std::string& backend, const std::string& weights) {
  LoadedModel m;
  m.dir = resolve_model_dir(path);
  if (fs::exists(m.dir / "manifest.json")) verify_checkpoint(m.dir);
  const fs::path cfg = m.dir / "config.json";
  m.model = model_from_hf_config(read_json_file(cfg), cfg.string());
  m.backend = make_backend(backend);
  const fs::path file = m.dir / "model.safetensors";
  SafetensorsFile st = SafetensorsFile::load(file);
  check(weights.empty() || weights == "f32" || weights == "bf16" || weights == "q8_0", "--weights '", weights,
        "': expected f32, bf16 or q8_0");
  const DType wdt = weights.empty()       ? ParamStore::stored_matrix_dtype(st)
                    : weights == "bf16" ? DType::bf16
                    : weights == "q8_0" ? DType::q8_0
                                        : DType::f32;
  m.model->set_weight_dtype(wdt);
  m.model->set_compute_dtype(wdt == DType::bf16 ? DType::bf16 : DType::f32);  // q8_0 weights, f32 activations
  m.params = std::make_unique<ParamStore>(ParamStore::load(*m.model, *m.backend, std::move(st), file));
  if (fs::exists(m.dir / "tokenizer.json")) m.tokenizer = Tokenizer::load(m.dir / "tokenizer.json");
  return m;
}

void add_weights_option(CLI::App* cmd, std::string& weights) {
  cmd->add_option("--weights", weights,
                  "Weight dtype: f32; bf16 (matrices converted at load, bf16 mixed-precision compute); q8_0 (2-D "
                  "matrices quantized at load to GGUF's q8_0, f32 activations; fast q8_0 kernels on cpu, dequantized "
                  "copies on opencl and cuda). The KV cache stays f32. Default: as the model file stores them")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0"}));
}

const Tokenizer& require_tokenizer(const LoadedModel& m) {
  check(m.tokenizer.has_value(), m.dir.string(), ": no tokenizer.json in the model directory");
  check(m.tokenizer->vocab_size() <= m.model->vocab_size(), (m.dir / "tokenizer.json").string(), ": vocabulary of ",
        m.tokenizer->vocab_size(), " tokens does not fit the model's vocab_size ", m.model->vocab_size());
  return *m.tokenizer;
}

}  // namespace tandem::cli
