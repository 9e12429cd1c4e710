#include "tokenizer/bpe.h"

#include <queue>

#include "core/error.h"

namespace tandem {

BpeMerges::BpeMerges(const std::vector<TokenPair>& merges, const std::vector<int32_t>& new_ids) {
  table_.reserve(merges.size() * 2);
  for (size_t i = 0; i < merges.size(); ++i)
    table_[key(merges[i].first, merges[i].second)] = {static_cast<uint32_t>(i), new_ids[i]};
}

void BpeMerges::apply(std::vector<int32_t>& ids) const {
  if (ids.size() < 2) return;
  // A doubly linked list over the symbols plus a min-heap of candidate merges (rank, position),
  // mirroring HF's Word::merge_all so that even odd merge tables give HF's exact result.
  struct Symbol { int32_t id; int32_t prev; int32_t next; bool alive; };
  struct Candidate {
    uint32_t rank; int32_t pos; int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int32_t n = static_cast<int32_t>(ids.size());
  std::vector<Symbol> sym(n);
  std::vector<Candidate> storage;
  storage.reserve(n * 2);
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap(std::greater<>{}, std::move(storage));
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
    if (i + 1 < n)
      if (const Merge* m = find(ids[i], ids[i + 1])) heap.push({m->rank, i, m->new_id});
  }
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    // Stale entry: the pair at this position changed since it was queued. (HF compares only the
    // resulting id, and so do we.)
    const Merge* now = find(left.id, right.id);
    if (!now || now->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (const Merge* m = find(sym[left.prev].id, left.id)) heap.push({m->rank, left.prev, m->new_id});
    if (left.next >= 0)
      if (const Merge* m = find(left.id, sym[left.next].id)) heap.push({m->rank, top.pos, m->new_id});
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

BpeTrainResult train_bpe(const std::vector<std::pair<std::string, int64_t>>& words, int vocab_size) {
  check(vocab_size >= 256, "BPE vocab size must be at least 256 (one token per byte), got ", vocab_size);
  BpeTrainResult result;
  std::unordered_map<std::string, int32_t> token_id;
  for (int b = 0; b < 256; ++b) {
    result.tokens.emplace_back(1, static_cast<char>(b));
    token_id.emplace(result.tokens.back(), b);
  }

  // Words as symbol sequences, plus for every adjacent pair its total count and the words that
  // may contain it (a superset: entries go stale as words change, and are re-checked on use).
  std::vector<std::vector<int32_t>> syms(words.size());
  std::vector<int64_t> freq(words.size());
  std::unordered_map<uint64_t, int64_t> count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < words.size(); ++w) {
    freq[w] = words[w].second;
    for (unsigned char c : words[w].first) syms[w].push_back(c);
    for (size_t i = 0; i + 1 < syms[w].size(); ++i) {
      const uint64_t k = pair_key(syms[w][i], syms[w][i + 1]);
      count[k] += freq[w];
      auto& list = where[k];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(static_cast<int32_t>(w));
    }
  }

  // Max-heap on (count, then smallest pair) with lazy updates: an entry whose stored count differs
  // from the live count is re-queued with the live count when it surfaces.
  struct Entry {
    int64_t count; uint64_t pair;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [k, c] : count) heap.push({c, k});

  std::vector<int64_t> last_step(words.size(), -1);
  std::vector<uint64_t> touched;
  std::vector<int32_t> merged;
  for (int64_t step = 0; static_cast<int>(token_id.size()) < vocab_size && !heap.empty(); ++step) {
    const Entry top = heap.top();
    heap.pop();
    auto it = count.find(top.pair);
    const int64_t live = it == count.end() ? 0 : it->second;
    if (live != top.count) {
      if (live > 0) heap.push({live, top.pair});
      continue;
    }
    const int32_t a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    // Two different merges can spell the same bytes ("t"+"he", "th"+"e"); like HF's trainer they
    // share one token id, and both merges are kept.
    std::string spelled = result.tokens[a] + result.tokens[b];
    auto [tok, inserted] = token_id.emplace(spelled, static_cast<int32_t>(result.tokens.size()));
    if (inserted) result.tokens.push_back(std::move(spelled));
    const int32_t x = tok->second;
    result.merges.emplace_back(a, b);

    touched.clear();
    std::vector<int32_t> candidates = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t w : candidates) {
      if (last_step[w] == step) continue;
      last_step[w] = step;
      const std::vector<int32_t>& old = syms[w];
      merged.clear();
      for (size_t i = 0; i < old.size(); ++i) {
        if (i + 1 < old.size() && old[i] == a && old[i + 1] == b) { merged.push_back(x); ++i; }
        else merged.push_back(old[i]);
      }
      if (merged.size() == old.size()) continue;  // stale: the pair is no longer in this word
      // Re-count the word's pairs: unchanged pairs cancel out; words are short, so this is cheap.
      for (size_t i = 0; i + 1 < old.size(); ++i) count[pair_key(old[i], old[i + 1])] -= freq[w];
      for (size_t i = 0; i + 1 < merged.size(); ++i) {
        const uint64_t k = pair_key(merged[i], merged[i + 1]);
        count[k] += freq[w];
        if (merged[i] == x || merged[i + 1] == x) {
          auto& list = where[k];
          if (list.empty() || list.back() != w) list.push_back(w);
          touched.push_back(k);
        }
      }
      syms[w] = merged;
    }
    count.erase(top.pair);
    // Pairs with the new token only gained counts, so they need fresh heap entries.
    for (uint64_t k : touched) {
      const int64_t c = count[k];
      if (c > 0) heap.push({c, k});
    }
  }
  return result;
}

}  // namespace tandem
