// Conformance bounds: one table, per op class and dtype, each with its reason.
//
// The metric is the normalised MSE  sum (got - want)^2 / sum want^2  over finite entries, where
// `want` is the float64 reference evaluated on the *same rounded inputs* the backend received, so
// the bound measures the kernel alone. NaN anywhere fails; an inf must match in place and sign.
// Data that is only moved (embedding rows, broadcast, windows, tokens grouped per expert) and
// integer outputs (top-k expert ids) must be bit-exact: their bound is 0.
//
// Every f32 bound is <= 1e-9, three orders below the 1e-6 NMSE of a 1e-3 relative perturbation,
// so a single-op error of that size can never hide inside a tolerance.
//
// NMSE averages: one element of a 4000-element matmul off by 0.1% is NMSE ~2.5e-10, under the
// matmul bound. So every row also bounds the per-element metric max_rel = max |got - want| /
// (max |want| + tiny) (compare.h): the worst element against the tensor's scale. Every f32 max_rel
// bound is < 1e-4, so a 1e-3 relative error on any one element at >= 10% of the tensor's largest
// magnitude fails, wherever it sits; the bounds sit 5-50x above the worst value measured on cpu
// and opencl over every case (`tandem conform` prints the worst per class next to the bound).
//
// The optimizer kernels (Backend::adamw, sum_squares, axpy) are not graph ops; their rows have
// their own entries (optimizer_tolerance).
#pragma once
#include <limits>
#include <string>

#include "core/dtype.h"
#include "ops/op_kind.h"

namespace tandem::qualify {

// One row of the table. New metrics go at the end with a default that fails loudly (NaN: a bound
// nothing passes), so a row that forgets a metric is caught by the Tolerance tests, never skipped.
struct Tolerance {
  double nmse;         // bound on the normalised MSE (0: exact)
  const char* klass;   // the op class the bound belongs to
  const char* reason;
  double max_rel = std::numeric_limits<double>::quiet_NaN();  // bound on max_rel (0: exact)
};

Tolerance tolerance_for(OpKind op, DType dtype);

// The optimizer kernels, by name: "adamw", "sum_squares", "axpy" (f32 state and gradients).
Tolerance optimizer_tolerance(const std::string& kernel, DType dtype);

}  // namespace tandem::qualify
