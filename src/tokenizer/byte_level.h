// GPT-2's byte-to-unicode mapping: byte-level BPE vocabularies spell every byte as a printable
// codepoint (space is 'Ġ', newline 'Ċ', ...) so that token strings are valid, visible text.
#pragma once
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::byte_level {

// UTF-8 spelling of the codepoint standing for each byte.
const std::array<std::string, 256>& byte_to_unicode();

// The byte a codepoint stands for, or nullopt if it is not one of the 256 mapped codepoints.
std::optional<unsigned char> unicode_to_byte(char32_t cp);

// Maps raw bytes to their byte-level spelling ("a b" -> "aĠb").
std::string encode(std::string_view bytes);

// Inverse of encode; nullopt if some codepoint is not a byte-level one.
std::optional<std::string> decode(std::string_view spelled);

}  // namespace tandem::byte_level
