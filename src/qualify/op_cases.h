// The op case list shared by `tandem conform` and the C++ op tests: every op, forward and
// backward, over shapes that stress kernels (odd sizes, size 1, tile boundaries, wide rows) and
// magnitudes (x1, large x100, tiny x1e-3).
//
// A case builds a small graph whose output feeds a weighted sum (`loss`), so build_backward adds
// the op's backward nodes: conformance covers forward and backward nodes alike.
//
// Magnitudes: every float leaf of a case is ~ N(0, magnitude^2) unless the case says otherwise
// with `leaf`. DeepSeekMoE routing does: its router logits stay O(1) at every magnitude (x scales
// by m, the gate by 1/m), because sigmoid scores of x100 logits saturate into exact ties (0 or 1)
// and top-k choices would then depend on the tie-break rather than on the kernel.
//
// Views: the graph's only view today is `reshape` of a contiguous tensor (Program gives every
// intermediate a contiguous slice of one arena), so there is no strided input to test; the
// conformance runner places every input and output at a non-zero byte offset inside its buffer,
// the one way a kernel sees a "view" today.
#pragma once
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/autodiff.h"
#include "core/graph.h"
#include "ops/op.h"

namespace tandem::qualify {

struct OpCase {
  std::string name;                       // unique, e.g. "softmax_wide@x100"
  OpKind op;                              // the op under test (its backward nodes come along)
  std::function<NodeId(Graph&)> build;    // returns the output node; leaves are inputs/params
  double magnitude = 1.0;                 // float leaves ~ N(0, magnitude^2)
  // Values of one float leaf at `magnitude`, for cases that need other than N(0, magnitude^2)
  // (empty: random_leaf for every leaf).
  std::function<RefTensor(const Node&, std::mt19937&, double magnitude)> leaf = nullptr;
};

// Every case, base cases first (magnitude 1), then the large and tiny variants (of every case with
// a float leaf: magnitude means nothing to a case of ids only, nor to a view).
const std::vector<OpCase>& op_cases();

// A case's graph with its loss and backward pass, and float64 leaf values.
struct CaseGraph {
  Graph graph;
  NodeId out = -1, loss = -1;
  std::vector<NodeId> wrt;  // params
  Backward backward;
  std::map<NodeId, RefTensor> leaves;  // every input and param, the seed bound to 1
};
CaseGraph build_case(const OpCase& c, uint64_t seed = 1234);

// Random values for one leaf: ids in [0, max) where the name ends in "@<max>" (a name containing
// "ignore" also gets one ignored -1 target), floats ~ N(0, magnitude^2).
RefTensor random_leaf(const Node& n, std::mt19937& rng, double magnitude);

}  // namespace tandem::qualify
