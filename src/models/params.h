// A model's parameters on a backend, in the model's declared order, with HF names.
#pragma once
#include <filesystem>
#include <vector>

#include "core/backend.h"
#include "core/program.h"
#include "io/safetensors.h"
#include "models/model.h"

namespace tandem {

struct ParamStore {
  std::vector<ParamSpec> specs;
  std::vector<Tensor> tensors;

  // Fresh weights from the specs' init rules, reproducible from `seed`.
  static ParamStore init(const Model& model, Backend& backend, uint64_t seed);
  // Weights from a safetensors file: every parameter must be present with its shape; tensors the
  // model maps to "" are ignored; anything else unknown is an error naming the file and tensor.
  static ParamStore load(const Model& model, Backend& backend, const std::filesystem::path& file);
  // The checkpoint file's tensors (the model's checkpoint layout, HF names).
  SafetensorsFile to_safetensors(const Model& model) const;

  // Binds every parameter node of `nodes` in `program`.
  void bind(Program& program, const ModelNodes& nodes) const;
  // Zero-filled tensors shaped like the parameters (optimizer state, gradient accumulators).
  std::vector<Tensor> zeros_like(Backend& backend) const;
  int64_t count() const;
};

}  // namespace tandem
