#include "qualify/compare.h"

#include <cmath>
#include <cstdio>

namespace tandem::qualify {

ErrorStats compare(std::span<const float> got, std::span<const double> want) {
  ErrorStats s;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = got[i], b = want[i];
    if (std::isnan(a)) {
      ++s.nan;
      continue;
    }
    if (std::isinf(a) || std::isinf(b)) {
      if (a != b) ++s.inf_mismatch;
      continue;
    }
    num += (a - b) * (a - b);
    den += b * b;
    s.max_abs = std::max(s.max_abs, std::abs(a - b));
  }
  s.nmse = den > 0 ? num / den : num;
  return s;
}

std::string ErrorStats::describe() const {
  char buf[96];
  if (nan) std::snprintf(buf, sizeof buf, "%ld NaN", nan);
  else if (inf_mismatch) std::snprintf(buf, sizeof buf, "%ld inf mismatch", inf_mismatch);
  else std::snprintf(buf, sizeof buf, "%.3g", nmse);
  return buf;
}

}  // namespace tandem::qualify
