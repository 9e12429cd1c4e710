#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenize.h"

#include <pcre2.h>

#include <algorithm>
#include <array>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace tandem {
namespace {

constexpr std::array<std::pair<SplitBehavior, std::string_view>, 5> kBehaviorNames = {{
    {SplitBehavior::Removed, "Removed"},
    {SplitBehavior::Isolated, "Isolated"},
    {SplitBehavior::MergedWithPrevious, "MergedWithPrevious"},
    {SplitBehavior::MergedWithNext, "MergedWithNext"},
    {SplitBehavior::Contiguous, "Contiguous"},
}};

// One match data per thread, big enough for the whole-match offsets (all split() needs).
pcre2_match_data* thread_match_data() {
  struct Holder {
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    ~Holder() { pcre2_match_data_free(md); }
  };
  thread_local Holder holder;
  check(holder.md != nullptr, "out of memory allocating regex match data");
  return holder.md;
}

}  // namespace

std::string_view split_behavior_name(SplitBehavior b) {
  for (const auto& [value, name] : kBehaviorNames)
    if (value == b) return name;
  return "?";
}

std::optional<SplitBehavior> split_behavior_from_name(std::string_view name) {
  for (const auto& [value, n] : kBehaviorNames)
    if (n == name) return value;
  return std::nullopt;
}

struct RegexSplitter::Code {
  pcre2_code* re = nullptr;
  ~Code() { pcre2_code_free(re); }
};

RegexSplitter::RegexSplitter(SplitSpec spec, std::string_view where) : spec_(std::move(spec)) {
  const std::string& pattern = spec_.pattern;
  // An empty literal is compiled like any other: it matches the empty string at every character
  // boundary, so it cuts the text into characters, as HF tokenizers 0.23 does.
  code_ = std::make_unique<Code>();
  // MULTILINE + LF newlines: ^ and $ match at every "\n", as in Oniguruma's Ruby syntax.
  pcre2_compile_context* ctx = pcre2_compile_context_create(nullptr);
  check(ctx != nullptr, "out of memory compiling a regex");
  pcre2_set_newline(ctx, PCRE2_NEWLINE_LF);
  const uint32_t options = spec_.literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  code_->re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                            &err_offset, ctx);
  pcre2_compile_context_free(ctx);
  if (!code_->re) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    throw Error(std::string(where) + ": cannot compile regex '" + pattern + "' at offset " +
                std::to_string(err_offset) + ": " + reinterpret_cast<char*>(buf));
  }
  // JIT makes matching several times faster; if unavailable the interpreter still works.
  pcre2_jit_compile(code_->re, PCRE2_JIT_COMPLETE);
}

RegexSplitter::~RegexSplitter() = default;

void RegexSplitter::find(std::string_view text, std::vector<Match>& out) const {
  pcre2_match_data* md = thread_match_data();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // The loop of Oniguruma's find_iter (Rust `onig` crate), which HF uses: an empty match right
  // where the previous match ended is skipped by stepping one character.
  size_t last_end = 0;
  std::optional<size_t> last_match_end;
  while (last_end <= text.size()) {
    const int rc = pcre2_match(code_->re, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    // rc == 0: the ovector holds only the whole match, which is all we read.
    if (rc < 0)
      throw Error("pre-tokenizer regex '" + spec_.pattern + "' failed with PCRE2 error " + std::to_string(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = std::max(ov[0], ov[1]);
    if (start == end && last_match_end == end) {
      if (last_end >= text.size()) break;
      char32_t cp;
      const size_t len = utf8::decode(text, last_end, cp);
      last_end += len ? len : 1;
      continue;
    }
    last_end = end;
    last_match_end = end;
    out.push_back({start, end});
  }
}

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  thread_local std::vector<Match> matches;
  matches.clear();
  find(text, matches);

  // HF's NormalizedString::split: the text as alternating gaps and matches (empty matches
  // included: they still separate pieces for the merging behaviors), then folded per behavior.
  struct Piece {
    size_t start, end;
    bool delimiter;
  };
  thread_local std::vector<Piece> pieces, merged;
  pieces.clear();
  size_t prev = 0;
  for (const Match& m : matches) {
    if (m.start != prev) pieces.push_back({prev, m.start, spec_.invert});
    pieces.push_back({m.start, m.end, !spec_.invert});
    prev = m.end;
  }
  if (prev != text.size()) pieces.push_back({prev, text.size(), spec_.invert});

  const std::vector<Piece>* result = &pieces;
  const SplitBehavior behavior = spec_.behavior;
  if (behavior == SplitBehavior::Contiguous || behavior == SplitBehavior::MergedWithPrevious) {
    // Contiguous: a piece of the same kind as the one before joins it.
    // MergedWithPrevious: a delimiter following a non-delimiter joins it.
    merged.clear();
    bool previous_delimiter = false;
    for (const Piece& p : pieces) {
      const bool join = behavior == SplitBehavior::Contiguous ? p.delimiter == previous_delimiter
                                                              : p.delimiter && !previous_delimiter;
      if (join && !merged.empty()) merged.back().end = p.end;
      else merged.push_back({p.start, p.end, false});
      previous_delimiter = p.delimiter;
    }
    result = &merged;
  } else if (behavior == SplitBehavior::MergedWithNext) {
    // A delimiter preceding a non-delimiter joins it (HF folds from the back).
    merged.clear();
    bool next_delimiter = false;
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
      if (it->delimiter && !next_delimiter && !merged.empty()) merged.back().start = it->start;
      else merged.push_back({it->start, it->end, false});
      next_delimiter = it->delimiter;
    }
    std::reverse(merged.begin(), merged.end());
    result = &merged;
  }
  for (const Piece& p : *result) {
    const bool keep = behavior == SplitBehavior::Removed ? !p.delimiter : true;
    if (keep && p.end > p.start) out.push_back(text.substr(p.start, p.end - p.start));
  }
}

size_t find_invalid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    // ASCII fast path: most text is ASCII.
    if (static_cast<unsigned char>(text[pos]) < 0x80) { ++pos; continue; }
    char32_t cp;
    const size_t len = utf8::decode(text, pos, cp);
    if (len == 0) return pos;
    pos += len;
  }
  return std::string_view::npos;
}

}  // namespace tandem
