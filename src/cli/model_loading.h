// Loading a model directory (config.json + model.safetensors [+ tokenizer.json]) for the
// commands that use a trained model.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>

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
LoadedModel load_model(const std::filesystem::path& path, const std::string& backend);

// Requires a tokenizer and checks that its vocabulary fits the model.
const Tokenizer& require_tokenizer(const LoadedModel& m);

}  // namespace tandem::cli
