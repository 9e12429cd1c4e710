// Shapes and strides (in elements). Row-major; a contiguous tensor's last stride is 1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

using Shape = std::vector<int64_t>;

inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

inline std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Product of all dims but the last: the number of "rows" an op over the last axis sees.
inline int64_t rows_of(const Shape& s) { return s.empty() ? 1 : numel(s) / s.back(); }

}  // namespace tandem
