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

// Writes config.json, model.safetensors and (if any) tokenizer.json of `m` into a fresh `out`.
void write_model_dir(const LoadedModel& m, const fs::path& out) {
  check(!fs::exists(out) || fs::is_empty(out), out.string(), ": exists and is not empty; choose a new directory");
  fs::create_directories(out);
  write_file_atomic(out / "config.json", m.model->hf_config().dump(2) + "\n");
  m.params->to_safetensors(*m.model).save(out / "model.safetensors");
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
    LoadedModel m = load_model(*from, "cpu");
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
  cmd->callback([model, format, out] {  // the lambda keeps the option storage alive
    LoadedModel m = load_model(*model, "cpu");
    write_model_dir(m, *out);
    std::printf("exported %s -> %s (config.json, model.safetensors%s)\n", m.dir.string().c_str(), out->c_str(),
                m.tokenizer ? ", tokenizer.json" : "");
  });
}

}  // namespace tandem::cli
