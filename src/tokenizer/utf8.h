// UTF-8 helpers shared by the tokenizers: strict decoding (so errors can name the byte offset of a
// bad sequence) and encoding of single codepoints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::utf8 {

// Decodes the codepoint starting at text[pos]; returns its byte length, or 0 if the bytes there are
// not valid UTF-8 (truncated, overlong, surrogate, > U+10FFFF).
size_t decode(std::string_view text, size_t pos, char32_t& cp);

std::string encode(char32_t cp);

// "'x' (U+0078)" for messages; control characters are shown only by their codepoint.
std::string describe(char32_t cp);

}  // namespace tandem::utf8
