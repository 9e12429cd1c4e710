// Random (input, target) blocks from a token shard, nanoGPT style, but seekable: batch k is a pure
// function of (seed, k), so a resumed run sees exactly the batches an uninterrupted one would.
#pragma once
#include <cstdint>
#include <span>

#include "data/shard.h"

namespace tandem {

class BatchLoader {
 public:
  // Keeps a view of shard.tokens: the shard must outlive the loader. Throws, naming the shard's
  // file, if it holds fewer than block + 1 tokens.
  BatchLoader(const TokenShard& shard, int batch, int block, uint64_t seed);

  // Fills inputs and targets (batch * block ids each, row-major) with batch position(), then
  // advances. Row r starts at offset o: inputs = tokens[o, o+block), targets = tokens[o+1, o+block+1).
  void next(int32_t* inputs, int32_t* targets);

  // Rows [row_begin, row_begin + rows) of batch `batch_index` (what one data-parallel rank
  // computes of the global batch); does not move position().
  void fill_rows(uint64_t batch_index, int row_begin, int rows, int32_t* inputs, int32_t* targets) const;

  // Start offset of row `row` of batch `batch_index`, in [0, tokens - block - 1].
  uint64_t offset(uint64_t batch_index, int row) const;

  uint64_t position() const { return position_; }
  void seek(uint64_t batch_index) { position_ = batch_index; }
  int batch() const { return batch_; }
  int block() const { return block_; }

 private:
  std::span<const int32_t> tokens_;
  int batch_, block_;
  uint64_t seed_;
  uint64_t position_ = 0;
};

}  // namespace tandem
