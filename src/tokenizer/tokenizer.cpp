#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace tandem {
namespace {

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

void check_utf8(std::string_view text) {
  const size_t bad = find_invalid_utf8(text);
  // Not check(): its arguments are all evaluated, and text[npos] reads before the text.
  if (bad != std::string_view::npos)
    throw Error("cannot encode text: invalid UTF-8 at byte offset " + std::to_string(bad) + " (byte " +
                hex_byte(static_cast<unsigned char>(text[bad])) + ")");
}

}  // namespace

void Tokenizer::Impl::finalize(const std::string& where) {
  vocab_size = static_cast<int32_t>(model_tokens.size());
  for (const auto& t : added) vocab_size = std::max(vocab_size, t.id + 1);
  id_spelling.assign(vocab_size, nullptr);
  for (size_t id = 0; id < model_tokens.size(); ++id) id_spelling[id] = &model_tokens[id];
  for (const auto& t : added) id_spelling[t.id] = &t.content;  // an added token wins for display
  for (int32_t id = 0; id < vocab_size; ++id)
    check(id_spelling[id] != nullptr, where, ": token id ", id,
          " is missing (ids must run from 0 to ", vocab_size - 1, " without gaps)");

  id_bytes.resize(vocab_size);
  for (int32_t id = 0; id < vocab_size; ++id) {
    const std::string& s = *id_spelling[id];
    // Like HF's ByteLevel decoder: a token that is not byte-level spelled decodes to itself.
    id_bytes[id] = kind == Kind::ByteBpe ? byte_level::decode(s).value_or(s) : s;
  }

  if (kind == Kind::Char) {
    for (size_t id = 0; id < model_tokens.size(); ++id) {
      char32_t cp = 0;
      const std::string& s = model_tokens[id];
      check(!s.empty() && utf8::decode(s, 0, cp) == s.size(), where, ": character token ", id, " '", s,
            "' is not exactly one character");
      char_ids[cp] = static_cast<int32_t>(id);
    }
  } else {
    byte_ids.fill(-1);
    const auto& spelled = byte_level::byte_to_unicode();
    for (int b = 0; b < 256; ++b)
      if (auto it = model_ids.find(spelled[b]); it != model_ids.end()) byte_ids[b] = it->second;
    std::vector<int32_t> new_ids;
    new_ids.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const auto& [a, b] = merges[i];
      auto it = model_ids.find(model_tokens[a] + model_tokens[b]);
      check(it != model_ids.end(), where, ": merge ", i, " '", model_tokens[a], " ", model_tokens[b],
            "' produces a token missing from model.vocab");
      new_ids.push_back(it->second);
    }
    merge_table = BpeMerges(merges, new_ids);
  }
  guess_bos_eos();
}

void Tokenizer::Impl::guess_bos_eos() {
  // tokenizer.json does not record BOS/EOS; these are the names the common model families use.
  static const std::vector<std::string_view> bos_names = {
      "<|begin_of_text|>", "<｜begin▁of▁sentence｜>", "<s>", "<bos>", "<|endoftext|>"};
  static const std::vector<std::string_view> eos_names = {
      "<|end_of_text|>", "<｜end▁of▁sentence｜>", "</s>", "<eos>", "<|endoftext|>"};
  auto find = [&](const std::vector<std::string_view>& names) -> std::optional<int32_t> {
    for (auto name : names)
      for (const auto& t : added)
        if (t.special && t.content == name) return t.id;
    return std::nullopt;
  };
  if (!bos) bos = find(bos_names);
  if (!eos) eos = find(eos_names);
}

Tokenizer Tokenizer::train_char(std::string_view text) {
  check_utf8(text);
  std::map<char32_t, std::string> chars;  // ordered: ids follow codepoint order
  for (size_t pos = 0; pos < text.size();) {
    char32_t cp;
    const size_t len = utf8::decode(text, pos, cp);
    chars.try_emplace(cp, text.substr(pos, len));
    pos += len;
  }
  check(!chars.empty(), "cannot train a character tokenizer on empty text");
  auto impl = std::make_shared<Impl>();
  impl->kind = Impl::Kind::Char;
  for (auto& [cp, s] : chars) {
    impl->model_ids.emplace(s, static_cast<int32_t>(impl->model_tokens.size()));
    impl->model_tokens.push_back(std::move(s));
  }
  impl->finalize("character tokenizer");
  return Tokenizer(impl);
}

Tokenizer Tokenizer::train_bpe(std::string_view text, int vocab_size) {
  check(vocab_size > 256, "BPE vocab size must exceed 256 (the byte tokens), got ", vocab_size);
  check_utf8(text);
  auto splitter = std::make_shared<const RegexSplitter>(kGpt2Pattern, "GPT-2 pre-tokenizer");
  std::vector<std::string_view> pieces;
  splitter->split(text, pieces);
  std::unordered_map<std::string_view, int64_t> counts;
  for (auto p : pieces) ++counts[p];
  std::vector<std::pair<std::string, int64_t>> words(counts.begin(), counts.end());
  // Sorted so every run sees the words in the same order (results do not depend on it, but
  // debugging is easier when runs are identical step by step).
  std::sort(words.begin(), words.end());
  BpeTrainResult trained = tandem::train_bpe(words, vocab_size);

  auto impl = std::make_shared<Impl>();
  impl->kind = Impl::Kind::ByteBpe;
  for (const auto& t : trained.tokens) {
    impl->model_ids.emplace(byte_level::encode(t), static_cast<int32_t>(impl->model_tokens.size()));
    impl->model_tokens.push_back(byte_level::encode(t));
  }
  impl->merges = std::move(trained.merges);
  impl->byte_level_regex = splitter;
  impl->finalize("BPE tokenizer");
  return Tokenizer(impl);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& m = *impl_;
  check_utf8(text);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);

  // Segments between added tokens go through the model; added tokens map straight to their id
  // (leftmost, then longest match, like HF's added-vocabulary splitting).
  std::vector<const AddedToken*> by_length;
  for (const auto& t : m.added)
    if (!t.content.empty()) by_length.push_back(&t);
  std::sort(by_length.begin(), by_length.end(),
            [](auto* x, auto* y) { return x->content.size() > y->content.size(); });
  std::array<bool, 256> may_start{};  // first bytes of added tokens: skips most positions fast
  for (auto* t : by_length) may_start[static_cast<unsigned char>(t->content[0])] = true;

  // Per-call cache: pre-tokenized words repeat a lot in natural text.
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;
  std::vector<std::string_view> pieces, refined, words;
  std::vector<int32_t> ids;

  auto encode_segment = [&](std::string_view seg, size_t seg_offset) {
    if (seg.empty()) return;
    if (m.kind == Impl::Kind::Char) {
      for (size_t pos = 0; pos < seg.size();) {
        char32_t cp;
        const size_t len = utf8::decode(seg, pos, cp);
        auto it = m.char_ids.find(cp);
        check(it != m.char_ids.end(), "cannot encode text: character ", utf8::describe(cp),
              " at byte offset ", seg_offset + pos, " is not in the character tokenizer's vocabulary");
        out.push_back(it->second);
        pos += len;
      }
      return;
    }
    // Byte offset in `text` of byte i of a word, for error messages. A word may lie in `prefixed`
    // (its piece behind ByteLevel's prefix space) rather than in `text`.
    std::string_view piece;
    std::string prefixed;
    auto offset_of = [&](std::string_view word, size_t i) {
      if (word.data() >= text.data() && word.data() < text.data() + text.size())
        return static_cast<size_t>(word.data() - text.data()) + i;
      const size_t in_prefixed = static_cast<size_t>(word.data() - prefixed.data()) + i;
      return static_cast<size_t>(piece.data() - text.data()) + (in_prefixed ? in_prefixed - 1 : 0);
    };
    auto encode_word = [&](std::string_view word) {
      if (auto hit = cache.find(word); hit != cache.end()) {
        out.insert(out.end(), hit->second.begin(), hit->second.end());
        return;
      }
      ids.clear();
      if (m.ignore_merges)
        if (auto it = m.model_ids.find(byte_level::encode(word)); it != m.model_ids.end()) ids.push_back(it->second);
      if (ids.empty()) {
        for (size_t i = 0; i < word.size(); ++i) {
          const auto b = static_cast<unsigned char>(word[i]);
          if (m.byte_ids[b] < 0)
            throw Error("cannot encode text: byte " + hex_byte(b) + " at byte offset " + std::to_string(offset_of(word, i)) +
                        " has no token in the BPE vocabulary");
          ids.push_back(m.byte_ids[b]);
        }
        m.merge_table.apply(ids);
      }
      out.insert(out.end(), ids.begin(), ids.end());
      cache.emplace(std::string(word), ids);
    };

    pieces.assign(1, seg);
    for (const auto& splitter : m.splits) {
      refined.clear();
      for (auto p : pieces) splitter->split(p, refined);
      pieces.swap(refined);
    }
    // ByteLevel, like HF, acts on each piece the splits left: prefix space, then its own regex.
    for (std::string_view p : pieces) {
      piece = p;
      if (m.add_prefix_space && p.front() != ' ') {
        prefixed.assign(1, ' ');
        prefixed += p;
        p = prefixed;
      }
      if (!m.byte_level_regex) {
        encode_word(p);
        continue;
      }
      words.clear();
      m.byte_level_regex->split(p, words);
      for (auto w : words) encode_word(w);
    }
  };

  size_t seg_start = 0;
  for (size_t pos = 0; pos < text.size() && !by_length.empty();) {
    const AddedToken* hit = nullptr;
    if (!may_start[static_cast<unsigned char>(text[pos])]) { ++pos; continue; }
    for (const AddedToken* t : by_length)
      if (text.compare(pos, t->content.size(), t->content) == 0) { hit = t; break; }
    if (!hit) { ++pos; continue; }
    encode_segment(text.substr(seg_start, pos - seg_start), seg_start);
    out.push_back(hit->id);
    pos += hit->content.size();
    seg_start = pos;
  }
  encode_segment(text.substr(seg_start), seg_start);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    check(id >= 0 && id < impl_->vocab_size, "cannot decode token id ", id, ": the tokenizer has ",
          impl_->vocab_size, " tokens (ids 0..", impl_->vocab_size - 1, ")");
    out += impl_->id_bytes[id];
  }
  return out;
}

int Tokenizer::vocab_size() const { return impl_->vocab_size; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

const std::string& Tokenizer::token(int32_t id) const {
  check(id >= 0 && id < impl_->vocab_size, "token id ", id, " is out of range (vocab size ", impl_->vocab_size, ")");
  return *impl_->id_spelling[id];
}

}  // namespace tandem
