// Conformance of the optimizer kernels (Backend::adamw, sum_squares, axpy): they update parameters
// in place and are not graph ops, so they have their own cases and float64 references here, and
// their rows (op "adamw", "sum_squares", "axpy") join `tandem conform`'s table, judged on the same
// two metrics against optimizer_tolerance (tolerance.h).
//
// Cases: sizes 1, 33, 4099 and 70001 (past the CPU's parallel threshold and sum_squares' 16384-
// element chunks), gradients at magnitudes x1, x100 and x1e-3; AdamW at step 1 from zero moments
// (bias correction at its strongest; beta2 0.999), at step 7 with moments carried over and a grad
// scale of 0.37 (global-norm clipping; beta2 0.99), and at step 1000 without weight decay (beta2
// 0.95); axpy with alpha 1 (gradient
// accumulation) and -0.37 (from 33 elements: one element can cancel to ~0, see axpy_rows). Every tensor sits at a non-zero offset with sentinel bytes around it: a
// kernel that writes outside its tensor, or leaves an element unwritten, fails.
//
// AdamW rows: the new parameter, the update it applied (p_new - p_old, against the reference's:
// the kernel's own numbers, at a learning rate of 0.05 where f32 resolves them), and both moments.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "qualify/conform.h"

namespace tandem::qualify {

// Every optimizer row, or only `op`'s ("adamw", "sum_squares", "axpy").
std::vector<ConformRow> conform_optimizer(Backend& backend, const std::optional<std::string>& op);

bool is_optimizer_kernel(const std::string& name);

}  // namespace tandem::qualify
