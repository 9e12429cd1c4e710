// Internal state of a Tokenizer, shared by the encode/decode code and the tokenizer.json reader
// and writer. Not part of the public API.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

namespace tandem {

// Lets unordered_map<std::string, T> be searched with a string_view without allocating.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// The Split regex tandem writes for character tokenizers: every codepoint, newline included,
// is its own piece (Oniguruma, which HF uses, and PCRE2 agree on this class).
inline constexpr std::string_view kEveryCharPattern = R"([\s\S])";

struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
};

struct Tokenizer::Impl {
  enum class Kind { Char, ByteBpe };
  Kind kind = Kind::Char;

  // Model vocabulary: spelling by id (byte-level spelling for BPE, the character itself for Char).
  std::vector<std::string> model_tokens;
  StringIdMap model_ids;
  std::vector<AddedToken> added;  // ids may coincide with model ids (GPT-2's <|endoftext|>)

  // Byte-level BPE.
  std::vector<TokenPair> merges;  // by rank
  bool ignore_merges = false;
  // Pre-tokenization, as HF's Sequence[Split..., ByteLevel]: the Split pre-tokenizers in order,
  // then per piece ByteLevel's prefix space and, with use_regex, the GPT-2 regex (null without).
  std::vector<std::shared_ptr<const RegexSplitter>> splits;
  bool add_prefix_space = false;
  std::shared_ptr<const RegexSplitter> byte_level_regex;

  std::optional<int32_t> bos, eos;

  // Derived by finalize().
  int32_t vocab_size = 0;
  std::vector<std::string> id_bytes;            // what decode() emits per id
  std::vector<const std::string*> id_spelling;  // token() per id
  std::array<int32_t, 256> byte_ids{};          // BPE: byte -> token id, -1 if absent
  std::unordered_map<char32_t, int32_t> char_ids;
  BpeMerges merge_table;

  // Checks ids are dense and builds the derived tables; `where` prefixes error messages.
  void finalize(const std::string& where);
  // Picks BOS/EOS from well-known special-token names if not set already.
  void guess_bos_eos();
};

}  // namespace tandem
