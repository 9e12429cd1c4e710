// Byte-level BPE: applying merges to one pre-tokenized word, and learning merges from a corpus.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tandem {

using TokenPair = std::pair<int32_t, int32_t>;

// The merge table of a BPE model, applied exactly as HF tokenizers' BPE does (Word::merge_all):
// repeatedly merge the adjacent pair of lowest rank, leftmost first, until no pair has a merge.
class BpeMerges {
 public:
  BpeMerges() = default;
  // merges[i] has rank i and produces new_ids[i]. A pair listed twice keeps its last rank (as in
  // HF, whose merge map is built by inserting in order).
  BpeMerges(const std::vector<TokenPair>& merges, const std::vector<int32_t>& new_ids);

  // Merges `ids` (the word's byte tokens, in order) in place.
  void apply(std::vector<int32_t>& ids) const;

 private:
  struct Merge { uint32_t rank; int32_t new_id; };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* find(int32_t a, int32_t b) const {
    auto it = table_.find(key(a, b));
    return it == table_.end() ? nullptr : &it->second;
  }
  std::unordered_map<uint64_t, Merge> table_;
};

struct BpeTrainResult {
  std::vector<std::string> tokens;  // raw bytes of each token, by id; ids 0..255 are the bytes
  std::vector<TokenPair> merges;    // in the order learned, i.e. by rank
};

// Learns merges over `words` (distinct pre-tokenized words with their frequencies) until there
// are vocab_size tokens or no pair occurs any more. Each step merges the most frequent adjacent
// pair; ties go to the smallest (left id, right id), where a byte's id is its value and a merged
// token's id is its creation order, so the result depends only on the word counts.
BpeTrainResult train_bpe(const std::vector<std::pair<std::string, int64_t>>& words, int vocab_size);

}  // namespace tandem
