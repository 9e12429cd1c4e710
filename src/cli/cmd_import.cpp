// `tandem import` / `tandem export`: HF model directories (config.json + model.safetensors
// [+ tokenizer.json]) in and out. Import validates every tensor against the config and writes a
// model directory tandem serves, evaluates and fine-tunes from; export writes the HF files alone.
#include <filesystem>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace tandem::cli {

namespace {

// Writes config.json, model.safetensors and (if any) tokenizer.json of `m` into a fresh `out`;
// bf16: every float tensor rounded to BF16 (core/dtype.h) and config.json's torch_dtype bfloat16,
// as HF ships bf16 checkpoints.
void write_model_dir(const LoadedModel& m, const fs::path& out, const std::string& dtype = "f32") {
  check(!fs::exists(out) || fs::is_empty(out), out.string(), ": exists and is not empty; choose a new directory");
  fs::create_directories(out);
  nlohmann::json config = m.model->hf_config();
  SafetensorsFile st = m.params->to_safetensors(*m.model);
  if (dtype == "bf16") {
    config["torch_dtype"] = "bfloat16";
    for (auto& [name, t] : st.tensors)
      if (t.dtype == "F32") t = HostTensor::bf16(t.shape, t.to_f32(name));
  }
  write_file_atomic(out / "config.json", config.dump(2) + "\n");
  st.save(out / "model.safetensors");
  if (m.tokenizer) m.tokenizer->save(out / "tokenizer.json");
}

}  // namespace

void register_import(CLI::App& app) {
  auto* cmd = app.add_subcommand("import", "Import an HF model directory (config.json + model.safetensors [+ tokenizer.json])");
  auto from = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--from", *from, "HF model directory")->required();
  cmd->add_option("--out", *out, "New model directory")->required();
  cmd->callback([from, out] {
    LoadedModel m = load_model(*from, "cpu", "f32");  // F32, BF16 or F16 files into the f32 master
    write_model_dir(m, *out);
    std::printf("imported %s (%s, %lld parameters) -> %s\n", from->c_str(), m.model->type().c_str(),
                static_cast<long long>(m.params->count()), out->c_str());
  });
}

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Export a checkpoint as an HF model directory");
  auto model = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("hf");
  auto out = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--format", *format, "Output format")->capture_default_str()->check(CLI::IsMember({"hf"}));
  cmd->add_option("--out", *out, "New directory")->required();
  auto dtype = std::make_shared<std::string>("f32");
  cmd->add_option("--dtype", *dtype, "Tensor dtype of the written model.safetensors (bf16: rounded to nearest even)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->callback([model, format, out, dtype] {  // the lambda keeps the option storage alive
    LoadedModel m = load_model(*model, "cpu", "f32");
    write_model_dir(m, *out, *dtype);
    std::printf("exported %s -> %s (config.json, model.safetensors%s)\n", m.dir.string().c_str(), out->c_str(),
                m.tokenizer ? ", tokenizer.json" : "");
  });
}

}  // namespace tandem::cli
