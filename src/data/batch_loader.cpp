#include "data/batch_loader.h"

#include <algorithm>

#include "core/error.h"

namespace tandem {
namespace {

// splitmix64's finalizer: a bijective mix, so distinct counters give independent-looking values.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

BatchLoader::BatchLoader(const TokenShard& shard, int batch, int block, uint64_t seed)
    : tokens_(shard.tokens), batch_(batch), block_(block), seed_(seed) {
  check(batch > 0, "batch size must be positive, got ", batch);
  check(block > 0, "block size must be positive, got ", block);
  check(shard.tokens.size() >= static_cast<size_t>(block) + 1, "token shard ", shard.path.string(), " holds ",
        shard.tokens.size(), " tokens, too few for one block of ", block, " (needs at least ", block + 1, ")");
}

uint64_t BatchLoader::offset(uint64_t batch_index, int row) const {
  const uint64_t starts = tokens_.size() - static_cast<uint64_t>(block_);  // offsets 0 .. size-block-1
  // Nested mixing keeps (seed, batch, row) triples from colliding; the modulo bias is below
  // starts / 2^64, negligible for any real shard.
  const uint64_t h = mix(mix(mix(seed_) ^ batch_index) ^ static_cast<uint64_t>(row));
  return h % starts;
}

void BatchLoader::fill_rows(uint64_t batch_index, int row_begin, int rows, int32_t* inputs, int32_t* targets) const {
  check(row_begin >= 0 && rows >= 0 && row_begin + rows <= batch_, "rows [", row_begin, ", ", row_begin + rows,
        ") of a batch of ", batch_);
  for (int r = 0; r < rows; ++r) {
    const int32_t* src = tokens_.data() + offset(batch_index, row_begin + r);
    std::copy_n(src, block_, inputs + static_cast<size_t>(r) * block_);
    std::copy_n(src + 1, block_, targets + static_cast<size_t>(r) * block_);
  }
}

void BatchLoader::next(int32_t* inputs, int32_t* targets) {
  fill_rows(position_, 0, batch_, inputs, targets);
  ++position_;
}

}  // namespace tandem
