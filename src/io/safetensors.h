// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the bytes.
// Tensors are held on the host here; models move them to a backend.
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/shape.h"

namespace tandem {

struct HostTensor {
  std::string dtype;  // safetensors spelling: F32, BF16, F16, I32, I64, ...
  Shape shape;
  std::vector<char> bytes;

  static HostTensor f32(Shape shape, const std::vector<float>& data);
  static HostTensor i32(Shape shape, const std::vector<int32_t>& data);
  static HostTensor bf16(Shape shape, const std::vector<float>& data);  // rounded to nearest even
  // Converting reads (F32/BF16/F16 to float; I32/I64 to int32). Errors name `what`.
  std::vector<float> to_f32(const std::string& what) const;
  std::vector<int32_t> to_i32(const std::string& what) const;
};

struct SafetensorsFile {
  std::map<std::string, HostTensor> tensors;
  std::map<std::string, std::string> metadata;

  // Validates the header and sizes; every error names the file (and tensor).
  static SafetensorsFile load(const std::filesystem::path& path);
  // Atomic: a temporary file, fsync, rename.
  void save(const std::filesystem::path& path) const;
  // The file's bytes, as save() writes them (for callers that do their own I/O, like checkpoints).
  std::string serialize() const;
  const HostTensor& at(const std::string& name, const std::filesystem::path& path_for_errors) const;
};

}  // namespace tandem
