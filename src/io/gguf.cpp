#include "io/gguf.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace tandem::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: return 8;
    case ValueType::string: case ValueType::array: return 0;
  }
  return 0;
}

bool integer_type(ValueType t) {
  return t != ValueType::f32 && t != ValueType::f64 && t != ValueType::string && t != ValueType::array;
}

// Little-endian encoding into a byte string (the header is built in memory: it is small).
struct Enc {
  std::string b;
  template <typename T>
  void pod(T v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(const std::string& s) { pod<uint64_t>(s.size()); b += s; }
  void scalar(ValueType t, int64_t i, double f) {
    switch (t) {
      case ValueType::u8: case ValueType::i8: case ValueType::boolean: pod<uint8_t>(static_cast<uint8_t>(i)); break;
      case ValueType::u16: case ValueType::i16: pod<uint16_t>(static_cast<uint16_t>(i)); break;
      case ValueType::u32: case ValueType::i32: pod<uint32_t>(static_cast<uint32_t>(i)); break;
      case ValueType::u64: case ValueType::i64: pod<int64_t>(i); break;
      case ValueType::f32: pod<float>(static_cast<float>(f)); break;
      case ValueType::f64: pod<double>(f); break;
      default: throw Error("gguf: not a scalar type");
    }
  }
};

}  // namespace

std::string value_type_name(ValueType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "type " + std::to_string(i);
}

std::string tensor_type_name(TensorType t) {
  switch (t) {
    case TensorType::f32: return "F32";
    case TensorType::f16: return "F16";
    case TensorType::q8_0: return "Q8_0";
    case TensorType::bf16: return "BF16";
  }
  return "ggml type " + std::to_string(static_cast<uint32_t>(t));
}

uint64_t tensor_bytes(TensorType t, int64_t numel) {
  const auto n = static_cast<uint64_t>(numel);
  switch (t) {
    case TensorType::f32: return 4 * n;
    case TensorType::f16: case TensorType::bf16: return 2 * n;
    case TensorType::q8_0: return n / kQ8Block * kQ8BlockBytes;
  }
  return 0;
}

Value Value::str_array(std::vector<std::string> v) {
  Value r{ValueType::array, ValueType::string};
  r.strings = std::move(v);
  return r;
}
Value Value::i32_array(std::vector<int64_t> v) {
  Value r{ValueType::array, ValueType::i32};
  r.ints = std::move(v);
  return r;
}
Value Value::f32_array(std::vector<double> v) {
  Value r{ValueType::array, ValueType::f32};
  r.floats = std::move(v);
  return r;
}
bool Value::is_integer() const { return integer_type(type); }

// ---- Writer ---------------------------------------------------------------------------------

Writer::Writer(fs::path path) : path_(std::move(path)), tmp_(path_.string() + ".tmp." + std::to_string(::getpid())) {}

Writer::~Writer() {
  if (!finished_) {
    out_.close();
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void Writer::add(const std::string& key, Value v) {
  check(!header_written_, path_.string(), ": key '", key, "' added after the tensor data began");
  for (const auto& [k, _] : kv_) check(k != key, path_.string(), ": key '", key, "' added twice");
  kv_.emplace_back(key, std::move(v));
}

void Writer::declare(const std::string& name, const Shape& shape, TensorType type) {
  check(!header_written_, path_.string(), ": tensor '", name, "' declared after the tensor data began");
  check(!shape.empty() && shape.size() <= kMaxDims, path_.string(), ": tensor '", name, "' has ", shape.size(),
        " dimensions (GGUF holds 1 to 4)");
  check(type != TensorType::q8_0 || shape.back() % kQ8Block == 0, path_.string(), ": tensor '", name,
        "': Q8_0 needs rows of whole 32-value blocks, shape ", shape_str(shape));
  for (const auto& t : tensors_) check(t.name != name, path_.string(), ": tensor '", name, "' declared twice");
  TensorInfo t{name, shape, type, data_bytes_, tensor_bytes(type, numel(shape))};
  data_bytes_ = align_up(data_bytes_ + t.bytes, kAlignment);
  tensors_.push_back(std::move(t));
}

void Writer::write_header() {
  Enc e;
  e.pod<uint32_t>(kMagic);
  e.pod<uint32_t>(kVersion);
  e.pod<uint64_t>(tensors_.size());
  e.pod<uint64_t>(kv_.size());
  for (const auto& [key, v] : kv_) {
    e.str(key);
    e.pod<uint32_t>(static_cast<uint32_t>(v.type));
    if (v.type == ValueType::string) {
      e.str(v.s);
    } else if (v.type == ValueType::array) {
      e.pod<uint32_t>(static_cast<uint32_t>(v.elem));
      if (v.elem == ValueType::string) {
        e.pod<uint64_t>(v.strings.size());
        for (const auto& s : v.strings) e.str(s);
      } else if (integer_type(v.elem)) {
        e.pod<uint64_t>(v.ints.size());
        for (int64_t x : v.ints) e.scalar(v.elem, x, 0);
      } else {
        e.pod<uint64_t>(v.floats.size());
        for (double x : v.floats) e.scalar(v.elem, 0, x);
      }
    } else {
      e.scalar(v.type, v.i, v.f);
    }
  }
  for (const auto& t : tensors_) {
    e.str(t.name);
    e.pod<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) e.pod<uint64_t>(static_cast<uint64_t>(*it));
    e.pod<uint32_t>(static_cast<uint32_t>(t.type));
    e.pod<uint64_t>(t.offset);
  }
  e.b.append(align_up(e.b.size(), kAlignment) - e.b.size(), '\0');
  out_.open(tmp_, std::ios::binary | std::ios::trunc);
  check(out_.good(), tmp_.string(), ": cannot create (", std::strerror(errno), ")");
  out_.write(e.b.data(), static_cast<std::streamsize>(e.b.size()));
  header_written_ = true;
}

void Writer::write(const std::string& name, const void* data, uint64_t bytes) {
  if (!header_written_) write_header();
  check(next_ < tensors_.size() && tensors_[next_].name == name, path_.string(), ": tensor '", name,
        "' written out of declaration order");
  const TensorInfo& t = tensors_[next_++];
  check(bytes == t.bytes, path_.string(), ": tensor '", name, "' has ", bytes, " bytes, its declared ",
        tensor_type_name(t.type), " ", shape_str(t.shape), " needs ", t.bytes);
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  static const char zeros[kAlignment] = {};
  out_.write(zeros, static_cast<std::streamsize>(align_up(bytes, kAlignment) - bytes));
  check(out_.good(), tmp_.string(), ": write failed (", std::strerror(errno), ")");
}

void Writer::finish() {
  if (!header_written_) write_header();
  check(next_ == tensors_.size(), path_.string(), ": tensor '", next_ < tensors_.size() ? tensors_[next_].name : "",
        "' was declared but never written");
  out_.flush();
  check(out_.good(), tmp_.string(), ": write failed (", std::strerror(errno), ")");
  out_.close();
  fs::rename(tmp_, path_);
  finished_ = true;
}

// ---- Reader ---------------------------------------------------------------------------------

namespace {

// Bounds-checked little-endian reads from the header.
struct Dec {
  std::ifstream& in;
  uint64_t pos, size;
  const std::string& file;
  std::string what;  // the key or tensor being read, for errors

  void need(uint64_t n) {
    check(n <= size - pos, file, ": truncated header while reading ", what, " (", n, " bytes at offset ", pos,
          ", file has ", size, ")");
  }
  void raw(void* dst, uint64_t n) {
    need(n);
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    check(in.good(), file, ": read failed at offset ", pos);
    pos += n;
  }
  template <typename T>
  T pod() {
    T v;
    raw(&v, sizeof v);
    return v;
  }
  std::string str() {
    const auto n = pod<uint64_t>();
    need(n);
    std::string s(n, '\0');
    raw(s.data(), n);
    return s;
  }
  ValueType type() {
    const auto t = pod<uint32_t>();
    check(t <= static_cast<uint32_t>(ValueType::f64), file, ": ", what, ": unknown value type ", t);
    return static_cast<ValueType>(t);
  }
  void scalar(ValueType t, int64_t& i, double& f) {
    switch (t) {
      case ValueType::u8: i = pod<uint8_t>(); break;
      case ValueType::i8: i = pod<int8_t>(); break;
      case ValueType::boolean: {
        const auto b = pod<uint8_t>();
        check(b <= 1, file, ": ", what, ": bool value ", b, " is neither 0 nor 1");
        i = b;
        break;
      }
      case ValueType::u16: i = pod<uint16_t>(); break;
      case ValueType::i16: i = pod<int16_t>(); break;
      case ValueType::u32: i = pod<uint32_t>(); break;
      case ValueType::i32: i = pod<int32_t>(); break;
      case ValueType::u64: case ValueType::i64: i = pod<int64_t>(); break;
      case ValueType::f32: f = pod<float>(); break;
      case ValueType::f64: f = pod<double>(); break;
      default: throw Error(file + ": " + what + ": not a scalar type");
    }
  }
};

}  // namespace

Reader::Reader(fs::path path) : path_(std::move(path)) {
  const std::string p = path_.string();
  in_.open(path_, std::ios::binary);
  check(in_.good(), p, ": cannot open (", std::strerror(errno), ")");
  std::error_code ec;
  file_size_ = fs::file_size(path_, ec);
  check(!ec, p, ": cannot stat (", ec.message(), ")");
  Dec d{in_, 0, file_size_, p, "the magic"};
  check(d.pod<uint32_t>() == kMagic, p, ": not a GGUF file (no 'GGUF' magic)");
  d.what = "the version";
  version_ = d.pod<uint32_t>();
  check(version_ == 2 || version_ == 3, p, ": GGUF version ", version_, " is not supported (2 and 3 are)");
  d.what = "the counts";
  const auto n_tensors = d.pod<uint64_t>(), n_kv = d.pod<uint64_t>();
  // Each key/value takes at least 12 bytes and each tensor info at least 24: counts beyond what the
  // file can hold are corrupt (and would otherwise reserve absurd memory).
  check(n_kv <= file_size_ / 12 && n_tensors <= file_size_ / 24, p, ": corrupt header: ", n_tensors, " tensors and ",
        n_kv, " keys in a ", file_size_, "-byte file");
  for (uint64_t k = 0; k < n_kv; ++k) {
    d.what = "key #" + std::to_string(k);
    std::string key = d.str();
    d.what = "key '" + key + "'";
    check(!kv_index_.contains(key), p, ": key '", key, "' appears twice");
    Value v;
    v.type = d.type();
    if (v.type == ValueType::string) {
      v.s = d.str();
    } else if (v.type == ValueType::array) {
      v.elem = d.type();
      check(v.elem != ValueType::array, p, ": key '", key, "': nested arrays are not supported");
      const auto n = d.pod<uint64_t>();
      const uint64_t min_size = v.elem == ValueType::string ? 8 : scalar_size(v.elem);
      // n came from the file: n * min_size must not wrap around to a size that passes need().
      d.need(n > UINT64_MAX / std::max<uint64_t>(min_size, 1) ? UINT64_MAX : n * min_size);
      if (v.elem == ValueType::string) {
        v.strings.reserve(n);
        for (uint64_t j = 0; j < n; ++j) v.strings.push_back(d.str());
      } else if (integer_type(v.elem)) {
        v.ints.resize(n);
        double unused;
        for (uint64_t j = 0; j < n; ++j) d.scalar(v.elem, v.ints[j], unused);
      } else {
        v.floats.resize(n);
        int64_t unused;
        for (uint64_t j = 0; j < n; ++j) d.scalar(v.elem, unused, v.floats[j]);
      }
    } else {
      d.scalar(v.type, v.i, v.f);
    }
    kv_index_[key] = kv_.size();
    kv_.emplace_back(std::move(key), std::move(v));
  }
  uint64_t alignment = kAlignment;
  if (const Value* a = find("general.alignment")) {
    check(a->is_integer() && a->i > 0 && (a->i & (a->i - 1)) == 0, p, ": key 'general.alignment' must be a power of two");
    alignment = static_cast<uint64_t>(a->i);
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    d.what = "tensor info #" + std::to_string(k);
    TensorInfo t;
    t.name = d.str();
    d.what = "tensor '" + t.name + "'";
    check(!tensor_index_.contains(t.name), p, ": tensor '", t.name, "' appears twice");
    const auto n_dims = d.pod<uint32_t>();
    check(n_dims >= 1 && n_dims <= kMaxDims, p, ": tensor '", t.name, "': ", n_dims, " dimensions (1 to 4 allowed)");
    t.shape.resize(n_dims);
    uint64_t n = 1;
    for (uint32_t i = 0; i < n_dims; ++i) {
      const auto ne = d.pod<uint64_t>();
      check(ne >= 1 && ne <= file_size_ && n <= file_size_ / ne, p, ": tensor '", t.name, "': dimension ", i, " = ", ne,
            " is impossible in a ", file_size_, "-byte file");
      n *= ne;
      t.shape[n_dims - 1 - i] = static_cast<int64_t>(ne);
    }
    const auto type = d.pod<uint32_t>();
    check(type == 0 || type == 1 || type == 8 || type == 30, p, ": tensor '", t.name, "': ggml type ", type,
          " is not supported (F32, F16, BF16 and Q8_0 are)");
    t.type = static_cast<TensorType>(type);
    check(t.type != TensorType::q8_0 || t.shape.back() % kQ8Block == 0, p, ": tensor '", t.name,
          "': Q8_0 row length ", t.shape.back(), " is not a multiple of 32");
    t.offset = d.pod<uint64_t>();
    check(t.offset % alignment == 0, p, ": tensor '", t.name, "': offset ", t.offset, " is not aligned to ", alignment);
    t.bytes = tensor_bytes(t.type, static_cast<int64_t>(n));
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }
  data_start_ = align_up(d.pos, alignment);
  for (const auto& t : tensors_)
    check(data_start_ <= file_size_ && t.offset <= file_size_ - data_start_ &&
              t.bytes <= file_size_ - data_start_ - t.offset,
          p, ": tensor '", t.name, "' (", t.bytes, " bytes at data offset ", t.offset, ") extends past the end of the ",
          file_size_, "-byte file (truncated?)");
}

const Value* Reader::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const Value& Reader::at(const std::string& key) const {
  const Value* v = find(key);
  check(v != nullptr, path_.string(), ": missing key '", key, "'");
  return *v;
}

int64_t Reader::get_int(const std::string& key) const {
  const Value& v = at(key);
  check(v.is_integer() && v.type != ValueType::boolean, path_.string(), ": key '", key, "' is ", value_type_name(v.type),
        ", expected an integer");
  return v.i;
}

double Reader::get_float(const std::string& key) const {
  const Value& v = at(key);
  if (v.is_float()) return v.f;
  check(v.is_integer() && v.type != ValueType::boolean, path_.string(), ": key '", key, "' is ", value_type_name(v.type),
        ", expected a number");
  return static_cast<double>(v.i);
}

std::string Reader::get_string(const std::string& key) const {
  const Value& v = at(key);
  check(v.type == ValueType::string, path_.string(), ": key '", key, "' is ", value_type_name(v.type), ", expected a string");
  return v.s;
}

const TensorInfo* Reader::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& Reader::tensor(const std::string& name) const {
  const TensorInfo* t = find_tensor(name);
  check(t != nullptr, path_.string(), ": missing tensor '", name, "'");
  return *t;
}

std::vector<char> Reader::read(const TensorInfo& t) const {
  std::vector<char> out(t.bytes);
  in_.clear();
  in_.seekg(static_cast<std::streamoff>(data_start_ + t.offset));
  in_.read(out.data(), static_cast<std::streamsize>(t.bytes));
  check(in_.good() || t.bytes == 0, path_.string(), ": tensor '", t.name, "': read failed");
  return out;
}

std::vector<float> Reader::read_f32(const TensorInfo& t) const {
  const std::vector<char> raw = read(t);
  const int64_t n = numel(t.shape);
  std::vector<float> out(static_cast<size_t>(n));
  switch (t.type) {
    case TensorType::f32: std::memcpy(out.data(), raw.data(), raw.size()); break;
    case TensorType::bf16: bf16_to_f32(reinterpret_cast<const uint16_t*>(raw.data()), out.data(), out.size()); break;
    case TensorType::f16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case TensorType::q8_0: dequantize_q8_0(reinterpret_cast<const uint8_t*>(raw.data()), out.data(), n); break;
  }
  return out;
}

}  // namespace tandem::gguf
