// Conformance: every op node of every case (forward and backward) executed on a backend in
// isolation and compared with the float64 reference.
//  - Each node gets the reference values of its inputs, rounded to the dtype under test, so an
//    error upstream never leaks into the verdict of a node; the reference of the node is evaluated
//    on those same rounded inputs.
//  - Inputs and outputs sit at a non-zero byte offset inside their buffers, with sentinel bytes
//    before and after the output (and inside it before the kernel runs): a kernel that writes out
//    of bounds, or leaves part of its output unwritten, fails.
//  - A node the backend does not `supports` is UNSUPPORTED, never a failure; when the backend has
//    a fallback (a plugin's CPU) it is FALLBACK: programs run it there, it proves nothing about
//    the backend, and it is never PASS.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/dtype.h"

namespace tandem::qualify {

enum class Status { pass, fail, unsupported, fallback };
const char* status_name(Status s);

struct ConformRow {
  std::string op, dtype, case_name, node, metric;  // metric: "nmse" or "exact"
  double error = 0, tolerance = 0;
  // The per-element metric (compare.h: max |got - want| / max |want|) and its bound; the verdict
  // needs both error <= tolerance and max_rel <= max_rel_tolerance.
  double max_rel = 0, max_rel_tolerance = 0;
  std::string klass;  // the tolerance table's op class ("matmul-like", "optimizer", ...)
  // The format error: the same output against the float64 reference on the original, unrounded
  // inputs (error alone measures the kernel on the inputs it received). For bf16 rows it shows
  // how much the format costs at this node; it informs, the verdict is on `error`.
  double format_error = 0;
  Status status = Status::pass;
  std::string detail;  // why it failed (NaN, sentinel, exception), or the tolerance's class
};

struct ConformOptions {
  std::optional<std::string> op;    // only cases of this op, or rows whose node is this op
  // q8_0 rows: the forward matmuls (plain 2-D right operand) and embeddings whose weight is whole
  // q8_0 blocks along its last dimension, that weight quantized, everything else f32.
  std::vector<DType> dtypes = {DType::f32, DType::bf16, DType::q8_0};
};

std::vector<ConformRow> conform(Backend& backend, const ConformOptions& opts);

struct ErrorStats;
// A row's verdict on both metrics (error, max_rel against their tolerances, which the row holds);
// a failure's detail says which bound broke and where the worst element sits. Shared by the op
// rows and the optimizer-kernel rows (optimizer_conform.h).
void judge(ConformRow& row, const ErrorStats& s);

}  // namespace tandem::qualify
