// Token shards (data/shard.cpp): header, sizes, checksum, token range. The input is read as is,
// then again with its checksum made right, so the fuzzer gets past the checksum to what follows.
#include <xxhash.h>

#include <cstring>

#include "data/shard.h"
#include "fuzz_target.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(token_shard) {
  std::string bytes(fuzz::as_text(data, size));
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      if (bytes.size() < 64) return;
      const uint64_t sum = XXH64(bytes.data() + 64, bytes.size() - 64, 0);
      std::memcpy(bytes.data() + 24, &sum, 8);
    }
    const auto path = fuzz::write_file("train.bin", bytes);
    TokenShard s;
    if (!fuzz::expect_clean([&] { s = read_shard(path); }, path.string())) continue;
    for (int32_t t : s.tokens) fuzz::require(t >= 0 && static_cast<uint32_t>(t) < s.vocab_size, "token out of range");
  }
}
