// tandem models <-> GGUF files as llama.cpp reads them: GPT-2 as llama.cpp's `gpt2` architecture,
// DeepSeek-V3 as `deepseek2` (MLA in the split k_b/v_b layout, sigmoid-gated grouped routing with
// the selection bias, MTP modules left out as llama.cpp's converter does), with the tokenizer in
// tokenizer.ggml.*. The tensor names, layouts, keys and type choices follow llama.cpp's
// convert_hf_to_gguf.py; README.md's GGUF section lists them.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "io/safetensors.h"
#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace tandem {

// Writes the weights of `model`, as its checkpoint file holds them (HF names, F32/BF16/F16), as a
// GGUF file. `dtype`: f32; bf16 (matrices rounded to
// nearest even); q8_0 (matrices whose rows are whole 32-value blocks, quantized exactly as ggml's
// reference quantizer). As llama.cpp's converter: 1-D tensors, biases, the router (ffn_gate_inp)
// and GPT-2's position embedding stay f32. Tensors are converted and written one at a time.
// Returns the number of tensor bytes written.
uint64_t export_gguf(const Model& model, SafetensorsFile weights, const Tokenizer* tokenizer, const std::string& dtype,
                     const std::filesystem::path& out);

struct GgufModel {
  std::unique_ptr<Model> model;
  SafetensorsFile checkpoint;  // f32, the model's checkpoint layout and HF names
  std::optional<Tokenizer> tokenizer;
  std::string arch, file_types;  // e.g. "gpt2", "F32+Q8_0" (for the import report)
};

// Reads a gpt2 or deepseek2 GGUF file (F32, F16, BF16 or Q8_0 tensors, all converted to f32).
// Unsupported architectures, tensor types, missing keys or tensors and unexpected tensors are
// errors naming the file and the key or tensor.
GgufModel import_gguf(const std::filesystem::path& file);

}  // namespace tandem
