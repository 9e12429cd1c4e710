// `tandem import` / `tandem export`: HF model directories (config.json + model.safetensors
// [+ tokenizer.json]) and GGUF files (llama.cpp's gpt2 and deepseek2, models/gguf_convert.h) in
// and out. Import validates every tensor against the config and writes a model directory tandem
// serves, evaluates and fine-tunes from; export writes the HF files or the GGUF file alone.
#include <chrono>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "models/gguf_convert.h"
#include "train/checkpoint.h"
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

bool is_gguf_file(const fs::path& p) {
  if (!fs::is_regular_file(p)) return false;
  std::ifstream f(p, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4).good() && std::string_view(magic, 4) == "GGUF";
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void register_import(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "import", "Import an HF model directory (config.json + model.safetensors [+ tokenizer.json]) or a GGUF file");
  auto from = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--from", *from,
                  "HF model directory, or a .gguf file (llama.cpp's gpt2 or deepseek2; F32, F16, BF16 or Q8_0 tensors, "
                  "read into the f32 master)")
      ->required();
  cmd->add_option("--out", *out, "New model directory")->required();
  cmd->callback([from, out] {
    if (is_gguf_file(*from)) {
      const auto t0 = std::chrono::steady_clock::now();
      const fs::path dir = *out;
      check(!fs::exists(dir) || fs::is_empty(dir), dir.string(), ": exists and is not empty; choose a new directory");
      GgufModel g = import_gguf(*from);
      fs::create_directories(dir);
      write_file_atomic(dir / "config.json", g.model->hf_config().dump(2) + "\n");
      g.checkpoint.save(dir / "model.safetensors");
      if (g.tokenizer) g.tokenizer->save(dir / "tokenizer.json");
      std::printf("imported %s (GGUF %s, %s tensors -> %s, %s) -> %s in %.2f s\n", from->c_str(), g.arch.c_str(),
                  g.file_types.c_str(), g.model->type().c_str(), g.tokenizer ? "with tokenizer" : "no tokenizer",
                  out->c_str(), seconds_since(t0));
      return;
    }
    LoadedModel m = load_model(*from, "cpu", "f32");  // F32, BF16 or F16 files into the f32 master
    write_model_dir(m, *out);
    std::printf("imported %s (%s, %lld parameters) -> %s\n", from->c_str(), m.model->type().c_str(),
                static_cast<long long>(m.params->count()), out->c_str());
  });
}

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Export a checkpoint as an HF model directory or a GGUF file");
  auto model = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("hf");
  auto out = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--format", *format, "Output format")->capture_default_str()->check(CLI::IsMember({"hf", "gguf"}));
  cmd->add_option("--out", *out, "New directory (hf), or the .gguf file (gguf)")->required();
  auto dtype = std::make_shared<std::string>("f32");
  cmd->add_option("--dtype", *dtype,
                  "Tensor dtype of the written weights (bf16: rounded to nearest even; q8_0: GGUF only, ggml's "
                  "reference quantizer; GGUF keeps 1-D tensors, biases and the router in f32 as llama.cpp does)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "q8_0"}));
  cmd->callback([model, format, out, dtype] {  // the lambda keeps the option storage alive
    const auto t0 = std::chrono::steady_clock::now();
    if (*format == "gguf") {
      // Straight from the checkpoint file, tensor by tensor (no backend copy of the weights).
      check(!fs::exists(*out), *out, ": exists; choose a new file");
      const fs::path dir = resolve_model_dir(*model);
      if (fs::exists(dir / "manifest.json")) verify_checkpoint(dir);
      const auto net = model_from_hf_config(read_json_file(dir / "config.json"), (dir / "config.json").string());
      std::optional<Tokenizer> tok;
      if (fs::exists(dir / "tokenizer.json")) tok = Tokenizer::load(dir / "tokenizer.json");
      const uint64_t bytes =
          export_gguf(*net, SafetensorsFile::load(dir / "model.safetensors"), tok ? &*tok : nullptr, *dtype, *out);
      std::printf("exported %s -> %s (GGUF, %s, %.1f MB of tensors) in %.2f s\n", dir.string().c_str(), out->c_str(),
                  dtype->c_str(), static_cast<double>(bytes) / 1e6, seconds_since(t0));
      return;
    }
    LoadedModel m = load_model(*model, "cpu", "f32");
    check(*dtype != "q8_0", "--dtype q8_0: only with --format gguf (safetensors has no q8_0)");
    write_model_dir(m, *out, *dtype);
    std::printf("exported %s -> %s (config.json, model.safetensors%s)\n", m.dir.string().c_str(), out->c_str(),
                m.tokenizer ? ", tokenizer.json" : "");
  });
}

}  // namespace tandem::cli
