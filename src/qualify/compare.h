// Comparing a backend's output with the float64 reference (ggml's rules): NaN always fails, an
// inf must match in place and sign, otherwise two metrics over finite entries:
//  - nmse     sum (a - b)^2 / sum b^2: the tensor's error as a whole (honest rounding spreads out)
//  - max_rel  max |a - b| / (max |b| + tiny): the worst single element against the tensor's scale,
//             so one bad element (one lane, one tile) cannot hide in a large tensor's average.
#pragma once
#include <span>
#include <string>

namespace tandem::qualify {

struct ErrorStats {
  double nmse = 0;      // sum (a - b)^2 / sum b^2 over finite entries (sum (a-b)^2 when sum b^2 == 0)
  double max_abs = 0;   // max |a - b| over finite entries
  double max_ref = 0;   // max |b| over finite entries
  double max_rel = 0;   // max_abs / (max_ref + kTiny)
  long worst = -1;      // index of the element with the largest |a - b| (-1: none)
  long nan = 0;         // NaNs in the backend's output
  long inf_mismatch = 0;
  static constexpr double kTiny = 1e-30;  // an all-zero reference: max_rel is the absolute error
  bool finite() const { return nan == 0 && inf_mismatch == 0; }
  bool ok(double nmse_bound, double max_rel_bound) const {
    return finite() && nmse <= nmse_bound && max_rel <= max_rel_bound;
  }
  std::string describe() const;  // "nmse 1.2e-12, max_rel 3e-7 at [41]" or "3 NaN"
};

ErrorStats compare(std::span<const float> got, std::span<const double> want);
ErrorStats compare(std::span<const double> got, std::span<const double> want);  // results a backend returns in double

}  // namespace tandem::qualify
