#include "serve/text_stream.h"

#include <algorithm>

namespace tandem::serve {

size_t complete_utf8_prefix(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the lead byte of the last character.
  for (size_t back = 1; back <= std::min<size_t>(4, s.size()); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? s.size() - back : s.size();
  }
  return s.size();  // only continuation bytes: invalid anyway, nothing to wait for
}

std::string TextStream::push(std::string_view bytes) {
  if (stopped_) return {};
  held_ += bytes;
  // Earliest stop string occurrence wins.
  size_t cut = std::string::npos;
  for (const auto& s : stop_) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stop_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (std::string_view(held_).substr(held_.size() - n) == std::string_view(s).substr(0, n)) {
        keep = n;
        break;
      }
  const size_t send = complete_utf8_prefix(std::string_view(held_).substr(0, held_.size() - keep));
  std::string out = held_.substr(0, send);
  held_.erase(0, send);
  return out;
}

std::string TextStream::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace tandem::serve
