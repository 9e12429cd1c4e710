// Comparing a backend's output with the float64 reference (ggml's rules): NaN always fails, an
// inf must match in place and sign, otherwise the normalised MSE over finite entries.
#pragma once
#include <span>
#include <string>

namespace tandem::qualify {

struct ErrorStats {
  double nmse = 0;      // sum (a - b)^2 / sum b^2 over finite entries (sum (a-b)^2 when sum b^2 == 0)
  double max_abs = 0;   // max |a - b| over finite entries
  long nan = 0;         // NaNs in the backend's output
  long inf_mismatch = 0;
  bool ok(double bound) const { return nan == 0 && inf_mismatch == 0 && nmse <= bound; }
  std::string describe() const;  // "nmse 1.2e-12" or "3 NaN"
};

ErrorStats compare(std::span<const float> got, std::span<const double> want);

}  // namespace tandem::qualify
