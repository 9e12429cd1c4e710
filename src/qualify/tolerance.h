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
#pragma once
#include <string>

#include "core/dtype.h"
#include "ops/op_kind.h"

namespace tandem::qualify {

struct Tolerance {
  double nmse;         // bound on the normalised MSE (0: exact)
  const char* klass;   // the op class the bound belongs to
  const char* reason;
};

Tolerance tolerance_for(OpKind op, DType dtype);

}  // namespace tandem::qualify
