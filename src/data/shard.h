// Token shards (train.bin / val.bin): a 64-byte header and the token ids, as laid out in
// docs/formats.md.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace tandem {

struct TokenShard {
  std::vector<int32_t> tokens;
  uint32_t vocab_size = 0;
  std::filesystem::path path;
};

// Reads and fully validates a shard (magic, version, dtype, size, checksum, token range); every
// error names the file and what is wrong.
TokenShard read_shard(const std::filesystem::path& path);

// Writes a shard atomically (temporary file, fsync, rename). Tokens are stored as uint16 when
// vocab_size <= 65536, else uint32; each must be in [0, vocab_size).
void write_shard(const std::filesystem::path& path, std::span<const int32_t> tokens, uint32_t vocab_size);

}  // namespace tandem
