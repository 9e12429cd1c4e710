#include "qualify/compare.h"

#include <cmath>
#include <cstdio>

namespace tandem::qualify {

namespace {
template <typename T>
ErrorStats compare_impl(std::span<const T> got, std::span<const double> want) {
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
    if (std::abs(a - b) > s.max_abs || s.worst < 0) {
      s.max_abs = std::abs(a - b);
      s.worst = static_cast<long>(i);
    }
    s.max_ref = std::max(s.max_ref, std::abs(b));
  }
  s.nmse = den > 0 ? num / den : num;
  s.max_rel = s.max_abs / (s.max_ref + ErrorStats::kTiny);
  return s;
}
}  // namespace

ErrorStats compare(std::span<const float> got, std::span<const double> want) { return compare_impl(got, want); }
ErrorStats compare(std::span<const double> got, std::span<const double> want) { return compare_impl(got, want); }

std::string ErrorStats::describe() const {
  char buf[96];
  if (nan) std::snprintf(buf, sizeof buf, "%ld NaN", nan);
  else if (inf_mismatch) std::snprintf(buf, sizeof buf, "%ld inf mismatch", inf_mismatch);
  else std::snprintf(buf, sizeof buf, "nmse %.3g, max_rel %.3g at [%ld]", nmse, max_rel, worst);
  return buf;
}

}  // namespace tandem::qualify
