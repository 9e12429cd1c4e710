// Regex pre-tokenization, as HF tokenizers' `Split` pre-tokenizer does it: the text is cut at the
// pattern's matches, the pieces are kept, dropped or glued together according to the behavior,
// and BPE merges never cross a piece boundary.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

// The GPT-2 pre-tokenization regex (also what HF's ByteLevel pre-tokenizer uses with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// What HF's Split does with the matches (the "delimiters") and the text between them.
enum class SplitBehavior {
  Removed,             // drop the matches
  Isolated,            // matches and gaps are separate pieces
  MergedWithPrevious,  // a match joins the gap before it
  MergedWithNext,      // a match joins the gap after it
  Contiguous,          // adjacent matches form one piece
};
// The spelling in tokenizer.json ("MergedWithPrevious", ...), and back.
std::string_view split_behavior_name(SplitBehavior b);
std::optional<SplitBehavior> split_behavior_from_name(std::string_view name);

// One Split pre-tokenizer.
struct SplitSpec {
  std::string pattern;
  bool literal = false;  // {"String": ...}: the pattern is plain text, not a regex
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;  // the gaps are the delimiters instead of the matches
};

// A Split pre-tokenizer with its pattern compiled by PCRE2 (UTF + UCP, so \s, \p{L}, \p{N} follow
// the Unicode tables) with the options that make it behave like Oniguruma's Ruby syntax, which HF
// uses: ^ and $ match at every "\n". Known differences: PCRE2's \s also matches U+180E, and the
// system PCRE2's Unicode tables may predate Oniguruma's (characters assigned since then).
// Immutable after construction; safe to share between threads.
class RegexSplitter {
 public:
  // `where` names the source of the pattern (e.g. a JSON field) in the compile error.
  RegexSplitter(SplitSpec spec, std::string_view where);
  // An Isolated, non-inverted regex.
  RegexSplitter(std::string_view pattern, std::string_view where)
      : RegexSplitter(SplitSpec{std::string(pattern)}, where) {}
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Appends the non-empty pieces of `text` to out, in order. `text` must be valid UTF-8 (callers
  // validate once up front: PCRE2's own check would rescan the whole subject on every call).
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  const SplitSpec& spec() const { return spec_; }
  const std::string& pattern() const { return spec_.pattern; }

 private:
  struct Match {
    size_t start, end;
  };
  // The matches as Oniguruma's find_iter reports them (empty ones included).
  void find(std::string_view text, std::vector<Match>& out) const;

  SplitSpec spec_;
  struct Code;
  std::unique_ptr<Code> code_;
};

// Byte offset of the first invalid UTF-8 sequence in text, or npos if it is all valid.
size_t find_invalid_utf8(std::string_view text);

}  // namespace tandem
