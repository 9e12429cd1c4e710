// Reverse-mode autodiff over the graph: each op's backward rule (ops/*.cpp) adds nodes, so the
// backward pass is ordinary graph nodes that every backend executes with its forward kernels.
#pragma once
#include <map>
#include <span>

#include "core/graph.h"

namespace tandem {

struct Backward {
  NodeId seed = -1;               // input node "d.<loss>" ([] f32): bind it to 1 (or a loss scale)
  std::map<NodeId, NodeId> grad;  // forward node -> node holding d(loss)/d(node), for every node on
                                  // a path from `wrt` to the loss (captures gradients by name)
};

// Appends d(loss)/d(w) for every w in `wrt` to g. `loss` must be a scalar node.
Backward build_backward(Graph& g, NodeId loss, std::span<const NodeId> wrt);

}  // namespace tandem
