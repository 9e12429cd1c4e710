// Loading a model directory (config.json + model.safetensors [+ tokenizer.json]) for the
// commands that use a trained model.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "models/params.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {

struct LoadedModel {
  std::filesystem::path dir;
  std::unique_ptr<Model> model;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ParamStore> params;
  std::optional<Tokenizer> tokenizer;  // when the directory has tokenizer.json
};

// `path`: a model/checkpoint directory, or a run directory (its newest checkpoint). The checkpoint
// is verified when it has a manifest.
// `weights`: the dtype the weight matrices are used in: "f32", "bf16" (computing in bf16 mixed
// precision, models/precision.h) or "q8_0" (quantized at load, f32 activations, cpu backend);
// "" takes what the file stores (f32 or bf16).
LoadedModel load_model(const std::filesystem::path& path, const std::string& backend, const std::string& weights = "");

// Adds --weights to a command (generate, eval, serve).
void add_weights_option(CLI::App* cmd, std::string& weights);

// Requires a tokenizer and checks that its vocabulary fits the model.
const Tokenizer& require_tokenizer(const LoadedModel& m);

}  // namespace tandem::cli
