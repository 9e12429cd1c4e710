// The reference interpreter: runs any graph (forward and backward nodes) in float64 through the
// ops' reference definitions. It is the yardstick for every backend and for the backward rules.
#pragma once
#include <map>

#include "core/graph.h"
#include "ops/op.h"

namespace tandem {

// `leaves` binds every input and param the graph reads. Returns one RefTensor per node.
std::vector<RefTensor> run_reference(const Graph& g, const std::map<NodeId, RefTensor>& leaves);

}  // namespace tandem
