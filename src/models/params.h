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
  // F32, BF16 and F16 files are read; each parameter is stored in model.param_dtype(spec).
  static ParamStore load(const Model& model, Backend& backend, const std::filesystem::path& file);
  static ParamStore load(const Model& model, Backend& backend, SafetensorsFile st, const std::filesystem::path& file);
  // The dtype a file stores its matrices in: bf16 when every float tensor of rank >= 2 is BF16,
  // else f32 (what serving uses when --weights is not given).
  static DType stored_matrix_dtype(const SafetensorsFile& st);
  // The checkpoint file's tensors (the model's checkpoint layout, HF names).
  SafetensorsFile to_safetensors(const Model& model) const;

  // Binds every parameter node of `nodes` in `program`.
  void bind(Program& program, const ModelNodes& nodes) const;
  // Zero-filled tensors shaped like the parameters (optimizer state, gradient accumulators).
  std::vector<Tensor> zeros_like(Backend& backend) const;
  int64_t count() const;
};

}  // namespace tandem
