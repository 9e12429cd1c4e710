#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace tandem::byte_level {
namespace {

// bytes_to_unicode() from GPT-2's encoder.py: printable Latin-1 bytes map to themselves, the other
// 68 bytes map, in byte order, to U+0100, U+0101, ...
std::array<char32_t, 256> make_table() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

const std::array<char32_t, 256>& table() {
  static const std::array<char32_t, 256> t = make_table();
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> spelled = [] {
    std::array<std::string, 256> s;
    for (int b = 0; b < 256; ++b) s[b] = utf8::encode(table()[b]);
    return s;
  }();
  return spelled;
}

std::optional<unsigned char> unicode_to_byte(char32_t cp) {
  // All mapped codepoints are below U+0144, so a flat inverse table suffices.
  static const std::array<int, 0x144> inverse = [] {
    std::array<int, 0x144> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b) inv[table()[b]] = b;
    return inv;
  }();
  if (cp >= inverse.size() || inverse[cp] < 0) return std::nullopt;
  return static_cast<unsigned char>(inverse[cp]);
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += byte_to_unicode()[b];
  return out;
}

std::optional<std::string> decode(std::string_view spelled) {
  std::string out;
  out.reserve(spelled.size());
  for (size_t pos = 0; pos < spelled.size();) {
    char32_t cp;
    const size_t len = utf8::decode(spelled, pos, cp);
    if (len == 0) return std::nullopt;
    const auto b = unicode_to_byte(cp);
    if (!b) return std::nullopt;
    out += static_cast<char>(*b);
    pos += len;
  }
  return out;
}

}  // namespace tandem::byte_level
