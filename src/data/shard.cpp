#include "data/shard.h"

#include <xxhash.h>

#include <bit>
#include <cstring>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/atomic_file.h"

namespace tandem {
namespace {

// The format is little-endian; headers and payloads are copied as-is, which needs a little-endian host.
static_assert(std::endian::native == std::endian::little, "token shards assume a little-endian host");

constexpr char kMagic[8] = {'T', 'A', 'N', 'D', 'E', 'M', 'T', 'K'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kDtypeU16 = 1, kDtypeU32 = 2;
constexpr size_t kHeaderSize = 64;

// Field offsets, per docs/formats.md.
constexpr size_t kOffVersion = 8, kOffDtype = 12, kOffCount = 16, kOffChecksum = 24, kOffVocab = 32;

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

TokenShard read_shard(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  check(in.good(), "token shard ", name, ": cannot open (missing or unreadable)");
  const auto file_size = static_cast<uint64_t>(in.tellg());
  check(file_size >= kHeaderSize, "token shard ", name, ": truncated: expected at least ", kHeaderSize,
        " bytes (the header) got ", file_size);
  std::string data(file_size, '\0');
  in.seekg(0);
  in.read(data.data(), static_cast<std::streamsize>(file_size));
  check(in.good(), "token shard ", name, ": read error");
  const char* h = data.data();

  check(std::memcmp(h, kMagic, sizeof kMagic) == 0, "token shard ", name, ": bad magic (expected TANDEMTK): not a tandem token shard");
  const auto version = load<uint32_t>(h + kOffVersion);
  check(version == kVersion, "token shard ", name, ": unsupported format version ", version, " (expected ", kVersion, ")");
  const auto dtype = load<uint32_t>(h + kOffDtype);
  check(dtype == kDtypeU16 || dtype == kDtypeU32, "token shard ", name, ": unknown dtype code ", dtype,
        " (expected 1 = uint16 or 2 = uint32)");
  const size_t width = dtype == kDtypeU16 ? 2 : 4;
  const auto count = load<uint64_t>(h + kOffCount);
  // Compare in a way that cannot overflow on a corrupt count.
  check(count <= (file_size - kHeaderSize) / width && kHeaderSize + count * width == file_size, "token shard ", name,
        ": size mismatch (truncated or corrupt): expected ",
        count > (UINT64_MAX - kHeaderSize) / width ? std::string("an impossible size") : std::to_string(kHeaderSize + count * width),
        " bytes for ", count, " tokens got ", file_size);
  const char* payload = h + kHeaderSize;
  const uint64_t expected = load<uint64_t>(h + kOffChecksum);
  const uint64_t actual = XXH64(payload, count * width, 0);
  check(expected == actual, "token shard ", name, ": checksum mismatch: expected ", hex(expected), " got ", hex(actual));

  TokenShard shard;
  shard.path = path;
  shard.vocab_size = load<uint32_t>(h + kOffVocab);
  check(shard.vocab_size > 0, "token shard ", name, ": vocab size is 0");
  shard.tokens.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t t = width == 2 ? load<uint16_t>(payload + 2 * i) : load<uint32_t>(payload + 4 * i);
    check(t < shard.vocab_size, "token shard ", name, ": token ", t, " at index ", i, " is not below the vocab size ",
          shard.vocab_size);
    shard.tokens[i] = static_cast<int32_t>(t);
  }
  return shard;
}

void write_shard(const std::filesystem::path& path, std::span<const int32_t> tokens, uint32_t vocab_size) {
  check(vocab_size > 0, "token shard ", path.string(), ": vocab size must be positive");
  const bool narrow = vocab_size <= 65536;
  const size_t width = narrow ? 2 : 4;
  std::string data(kHeaderSize + tokens.size() * width, '\0');
  char* payload = data.data() + kHeaderSize;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    check(t >= 0 && static_cast<uint32_t>(t) < vocab_size, "token shard ", path.string(), ": token ", t, " at index ", i,
          " is outside the vocabulary [0, ", vocab_size, ")");
    if (narrow) store(payload + 2 * i, static_cast<uint16_t>(t));
    else store(payload + 4 * i, static_cast<uint32_t>(t));
  }
  char* h = data.data();
  std::memcpy(h, kMagic, sizeof kMagic);
  store(h + kOffVersion, kVersion);
  store(h + kOffDtype, narrow ? kDtypeU16 : kDtypeU32);
  store(h + kOffCount, static_cast<uint64_t>(tokens.size()));
  store(h + kOffChecksum, static_cast<uint64_t>(XXH64(payload, tokens.size() * width, 0)));
  store(h + kOffVocab, vocab_size);
  write_file_atomic(path, data);
}

}  // namespace tandem
