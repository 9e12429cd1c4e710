// GGUF files (ggml's model format, read by llama.cpp, ollama, LM Studio), version 3, little-endian:
//   "GGUF", u32 version, u64 tensor count, u64 key/value count;
//   key/values: u64-length string key, u32 value type, value (arrays: u32 element type, u64 count,
//   elements; strings: u64 length + bytes; bool: one byte);
//   tensor infos: name, u32 n_dims, u64 ne[n_dims] (ne[0] the innermost, contiguous dimension, so
//   the reverse of a row-major shape), u32 ggml type, u64 offset from the start of the data;
//   padding to general.alignment (32 unless the key says otherwise), then the tensor data, each
//   tensor starting at a multiple of the alignment.
// Shapes here are row-major (numpy/PyTorch order, as gguf-py takes them); the files store them
// reversed. Both sides stream: the writer takes tensor bytes one tensor at a time after the
// header, the reader parses the header and reads one tensor on request, checking every length and
// offset against the file size. Errors name the file and the key or tensor.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/shape.h"

namespace tandem::gguf {

enum class ValueType : uint32_t { u8 = 0, i8, u16, i16, u32, i32, f32, boolean, string, array, u64, i64, f64 };
std::string value_type_name(ValueType t);

// The ggml tensor types tandem reads and writes (ggml.h numbers).
enum class TensorType : uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };
std::string tensor_type_name(TensorType t);
// Bytes of a tensor of `numel` values whose innermost dimension is `ne0` (q8_0: ne0 % 32 == 0).
uint64_t tensor_bytes(TensorType t, int64_t numel);

// One value: scalars in `i` (every integer type and bool; u64 kept bit for bit) or `f` or `s`;
// arrays (type == array) in the vector that matches `elem`.
struct Value {
  ValueType type = ValueType::u32;
  ValueType elem = ValueType::u32;  // arrays only
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static Value u32(uint32_t v) { return {ValueType::u32, {}, v}; }
  static Value i32(int32_t v) { return {ValueType::i32, {}, v}; }
  static Value u64(uint64_t v) { return {ValueType::u64, {}, static_cast<int64_t>(v)}; }
  static Value f32(float v) { return {ValueType::f32, {}, 0, v}; }
  static Value boolean(bool v) { return {ValueType::boolean, {}, v ? 1 : 0}; }
  static Value str(std::string v) { return {ValueType::string, {}, 0, 0, std::move(v)}; }
  static Value str_array(std::vector<std::string> v);
  static Value i32_array(std::vector<int64_t> v);
  static Value f32_array(std::vector<double> v);
  bool is_integer() const;
  bool is_float() const { return type == ValueType::f32 || type == ValueType::f64; }
};

struct TensorInfo {
  std::string name;
  Shape shape;  // row-major
  TensorType type = TensorType::f32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;
};

// Writes a GGUF file: add() every key and declare() every tensor, then write() each declared
// tensor's bytes in declaration order, then finish(). The file appears atomically at finish().
class Writer {
 public:
  explicit Writer(std::filesystem::path path);
  ~Writer();
  void add(const std::string& key, Value v);
  void declare(const std::string& name, const Shape& shape, TensorType type);
  // The next declared tensor's bytes (the header is written before the first one).
  void write(const std::string& name, const void* data, uint64_t bytes);
  void finish();

 private:
  void write_header();
  std::filesystem::path path_, tmp_;
  std::ofstream out_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  uint64_t data_bytes_ = 0;
  size_t next_ = 0;
  bool header_written_ = false, finished_ = false;
};

class Reader {
 public:
  // Parses and validates the header; tensor data stays on disk until read().
  explicit Reader(std::filesystem::path path);
  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::vector<std::pair<std::string, Value>>& kv() const { return kv_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  const Value* find(const std::string& key) const;
  // The value of a required key: errors name the file and the key when it is missing or has
  // another type.
  const Value& at(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // f32/f64 (an integer is accepted too)
  std::string get_string(const std::string& key) const;
  const TensorInfo* find_tensor(const std::string& name) const;
  const TensorInfo& tensor(const std::string& name) const;  // error naming a missing tensor
  // The raw bytes of a tensor, and its values converted to f32 (f32, f16, bf16 exactly; q8_0
  // dequantized as ggml does: d * q).
  std::vector<char> read(const TensorInfo& t) const;
  std::vector<float> read_f32(const TensorInfo& t) const;

 private:
  std::filesystem::path path_;
  mutable std::ifstream in_;
  uint32_t version_ = 0;
  uint64_t data_start_ = 0, file_size_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> kv_index_, tensor_index_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace tandem::gguf
