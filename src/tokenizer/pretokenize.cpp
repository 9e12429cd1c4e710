#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenize.h"

#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace tandem {

struct RegexSplitter::Code {
  pcre2_code* re = nullptr;
  ~Code() { pcre2_code_free(re); }
};

RegexSplitter::RegexSplitter(std::string_view pattern, std::string_view where)
    : pattern_(pattern), code_(std::make_unique<Code>()) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  code_->re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                            PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!code_->re) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    throw Error(std::string(where) + ": cannot compile regex '" + std::string(pattern) +
                "' at offset " + std::to_string(err_offset) + ": " + reinterpret_cast<char*>(buf));
  }
  // JIT makes matching several times faster; if unavailable the interpreter still works.
  pcre2_jit_compile(code_->re, PCRE2_JIT_COMPLETE);
}

RegexSplitter::~RegexSplitter() = default;

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& out) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->re, nullptr);
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;   // where the next search starts
  size_t emitted = 0;  // end of the last piece emitted
  while (pos <= text.size()) {
    const int rc = pcre2_match(code_->re, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      throw Error("pre-tokenizer regex '" + pattern_ + "' failed with PCRE2 error " + std::to_string(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (start > emitted) out.push_back(text.substr(emitted, start - emitted));
    if (end > start) {
      out.push_back(text.substr(start, end - start));
      emitted = end;
      pos = end;
    } else {
      // Empty match: step over one whole codepoint so we neither loop nor split a character.
      if (start >= text.size()) break;
      char32_t cp;
      const size_t len = utf8::decode(text, start, cp);
      pos = start + (len ? len : 1);
      emitted = start;
    }
  }
  if (emitted < text.size()) out.push_back(text.substr(emitted));
  pcre2_match_data_free(md);
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
