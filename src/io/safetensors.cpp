#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/atomic_file.h"

namespace tandem {

namespace {
size_t elem_size(const std::string& dt) {
  if (dt == "F32" || dt == "I32") return 4;
  if (dt == "BF16" || dt == "F16" || dt == "I16" || dt == "U16") return 2;
  if (dt == "F64" || dt == "I64" || dt == "U64") return 8;
  if (dt == "I8" || dt == "U8" || dt == "BOOL") return 1;
  return 0;
}

}  // namespace

HostTensor HostTensor::f32(Shape shape, const std::vector<float>& data) {
  HostTensor t{"F32", std::move(shape), std::vector<char>(data.size() * 4)};
  if (!data.empty()) std::memcpy(t.bytes.data(), data.data(), t.bytes.size());
  return t;
}

HostTensor HostTensor::bf16(Shape shape, const std::vector<float>& data) {
  HostTensor t{"BF16", std::move(shape), std::vector<char>(data.size() * 2)};
  f32_to_bf16(data.data(), reinterpret_cast<uint16_t*>(t.bytes.data()), data.size());
  return t;
}

HostTensor HostTensor::i32(Shape shape, const std::vector<int32_t>& data) {
  HostTensor t{"I32", std::move(shape), std::vector<char>(data.size() * 4)};
  if (!data.empty()) std::memcpy(t.bytes.data(), data.data(), t.bytes.size());
  return t;
}

std::vector<float> HostTensor::to_f32(const std::string& what) const {
  const size_t n = static_cast<size_t>(numel(shape));
  std::vector<float> out(n);
  if (dtype == "F32") {
    if (n) std::memcpy(out.data(), bytes.data(), n * 4);
  } else if (dtype == "BF16" || dtype == "F16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      out[i] = dtype == "BF16" ? bf16_to_f32(h) : f16_to_f32(h);
    }
  } else {
    throw Error(what + ": dtype " + dtype + " is not a float type (F32, BF16, F16)");
  }
  return out;
}

std::vector<int32_t> HostTensor::to_i32(const std::string& what) const {
  const size_t n = static_cast<size_t>(numel(shape));
  std::vector<int32_t> out(n);
  if (dtype == "I32") {
    if (n) std::memcpy(out.data(), bytes.data(), n * 4);
  } else if (dtype == "I64") {
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, bytes.data() + 8 * i, 8);
      check(v >= INT32_MIN && v <= INT32_MAX, what, ": value ", v, " does not fit int32");
      out[i] = static_cast<int32_t>(v);
    }
  } else {
    throw Error(what + ": dtype " + dtype + " is not an integer type (I32, I64)");
  }
  return out;
}

SafetensorsFile SafetensorsFile::load(const std::filesystem::path& path) {
  const std::string p = path.string();
  std::ifstream f(path, std::ios::binary);
  check(f.good(), p, ": cannot open (", std::strerror(errno), ")");
  f.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(f.tellg());
  f.seekg(0);
  uint64_t hlen = 0;
  check(file_size >= 8 && f.read(reinterpret_cast<char*>(&hlen), 8).good(), p,
        ": truncated safetensors file (no header length)");
  check(hlen <= file_size - 8 && hlen < (100u << 20), p, ": corrupt safetensors header length ", hlen,
        " (file has ", file_size, " bytes)");
  std::string header(hlen, '\0');
  check(f.read(header.data(), static_cast<std::streamsize>(hlen)).good(), p, ": truncated header");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    throw Error(p + ": corrupt safetensors header: " + e.what());
  }
  check(j.is_object(), p, ": safetensors header is not a JSON object");
  const uint64_t data_size = file_size - 8 - hlen;
  SafetensorsFile out;
  for (const auto& item : j.items()) {
    const std::string& name = item.key();
    const nlohmann::json& v = item.value();  // not a structured binding: a lambda below captures it
    if (name == "__metadata__") {
      for (auto& [k, mv] : v.items()) out.metadata[k] = mv.is_string() ? mv.get<std::string>() : mv.dump();
      continue;
    }
    try {
      HostTensor t;
      t.dtype = v.at("dtype").get<std::string>();
      // Integers only: nlohmann would convert 1e300 to an integer unchecked (undefined behaviour).
      auto integers = [&](const char* key) -> const nlohmann::json& {
        const nlohmann::json& a = v.at(key);
        check(a.is_array() && std::all_of(a.begin(), a.end(), [](const auto& x) { return x.is_number_integer(); }), key,
              " must be a list of integers");
        return a;
      };
      t.shape = integers("shape").get<Shape>();
      auto offs = integers("data_offsets").get<std::vector<uint64_t>>();
      const size_t es = elem_size(t.dtype);
      check(es != 0, "unsupported dtype ", t.dtype);
      // Every later numel() must be exact: no negative dimension, no product beyond int64 (even
      // behind a zero dimension, as numel() multiplies left to right).
      int64_t nonzero = 1;
      for (int64_t d : t.shape)
        check(d >= 0 && (d == 0 || !__builtin_mul_overflow(nonzero, d, &nonzero)), "shape ", shape_str(t.shape),
              " has a negative dimension or too many elements");
      check(offs.size() == 2 && offs[0] <= offs[1], "bad data_offsets");
      check(offs[1] <= data_size, "data_offsets end ", offs[1], " beyond the ", data_size,
            " data bytes in the file (truncated?)");
      check(offs[1] - offs[0] == static_cast<uint64_t>(numel(t.shape)) * es, "size ", offs[1] - offs[0],
            " bytes does not match shape ", shape_str(t.shape), " ", t.dtype);
      // Read tensor by tensor: the file's bytes are never in memory twice.
      t.bytes.resize(offs[1] - offs[0]);
      f.seekg(static_cast<std::streamoff>(8 + hlen + offs[0]));
      check(f.read(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size())).good() || t.bytes.empty(),
            "cannot read its data");
      out.tensors.emplace(name, std::move(t));
    } catch (const Error& e) {
      throw Error(p + ": tensor '" + name + "': " + e.what());
    } catch (const std::exception& e) {
      throw Error(p + ": tensor '" + name + "': malformed header entry: " + e.what());
    }
  }
  return out;
}

namespace {
std::string header_of(const SafetensorsFile& f) {
  nlohmann::json j = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& [name, t] : f.tensors) {
    j[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  if (!f.metadata.empty()) j["__metadata__"] = f.metadata;
  std::string header = j.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data to 8 bytes
  const uint64_t hlen = header.size();
  return std::string(reinterpret_cast<const char*>(&hlen), 8) + header;
}
}  // namespace

void SafetensorsFile::save(const std::filesystem::path& path) const {
  write_file_atomic(path, [&](const ChunkWriter& write) {  // tensor by tensor: no second copy in memory
    write(header_of(*this));
    for (const auto& [name, t] : tensors) write(std::string_view(t.bytes.data(), t.bytes.size()));
  });
}

std::string SafetensorsFile::serialize() const {
  std::string blob = header_of(*this);
  for (const auto& [name, t] : tensors) blob.append(t.bytes.data(), t.bytes.size());
  return blob;
}

const HostTensor& SafetensorsFile::at(const std::string& name, const std::filesystem::path& path) const {
  auto it = tensors.find(name);
  check(it != tensors.end(), path.string(), ": missing tensor '", name, "'");
  return it->second;
}

}  // namespace tandem
