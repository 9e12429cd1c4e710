// Regex pre-tokenization (HF `Split` with behavior "Isolated"): the text is cut into the regex's
// matches and the gaps between them, and BPE merges never cross a piece boundary.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

// The GPT-2 pre-tokenization regex (also what HF's ByteLevel pre-tokenizer uses with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A PCRE2 regex compiled with UTF + UCP, so \s, \p{L}, \p{N} follow the Unicode tables instead
// of hand-written ones. Immutable after construction; safe to share between threads.
class RegexSplitter {
 public:
  // `where` names the source of the pattern (e.g. a JSON field) in the compile error.
  RegexSplitter(std::string_view pattern, std::string_view where);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Appends the non-empty pieces of `text` (matches and the gaps between them, in order) to out.
  // `text` must be valid UTF-8 (callers validate once up front: PCRE2's own check would rescan
  // the whole subject on every call).
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  struct Code;
  std::unique_ptr<Code> code_;
};

// Byte offset of the first invalid UTF-8 sequence in text, or npos if it is all valid.
size_t find_invalid_utf8(std::string_view text);

}  // namespace tandem
