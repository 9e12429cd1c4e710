#include "core/autodiff.h"

#include <algorithm>

#include "ops/op.h"

namespace tandem {

Backward build_backward(Graph& g, NodeId loss, std::span<const NodeId> wrt) {
  check(g.node(loss).shape.empty(), "backward: loss node '", g.node(loss).name, "' must be a scalar, got ",
        shape_str(g.node(loss).shape));
  const size_t n_fwd = static_cast<size_t>(loss) + 1;
  // needs[i]: node i depends on some `wrt` node, so a gradient must flow into it.
  std::vector<bool> needs(n_fwd, false);
  for (NodeId w : wrt) needs.at(static_cast<size_t>(w)) = true;
  // Integer outputs (ids, routing choices) carry no gradient.
  for (size_t i = 0; i < n_fwd; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    for (NodeId in : n.inputs) needs[i] = needs[i] || needs[static_cast<size_t>(in)];
    needs[i] = needs[i] && is_float(n.dtype);
  }

  Backward out;
  out.seed = g.input("d." + g.node(loss).name, {}, DType::f32);
  std::vector<std::vector<NodeId>> pending(n_fwd);
  pending[static_cast<size_t>(loss)].push_back(out.seed);

  for (size_t i = n_fwd; i-- > 0;) {
    auto& parts = pending[i];
    if (parts.empty() || !needs[i]) continue;
    // Copy: adding nodes below may reallocate the node vector.
    const Node node = g.node(static_cast<NodeId>(i));
    NodeId grad = parts[0];
    for (size_t k = 1; k < parts.size(); ++k)
      grad = g.add(OpKind::add, {grad, parts[k]}, NoAttrs{},
                   "d." + node.name + (k + 1 == parts.size() ? "" : ".acc" + std::to_string(k)));
    out.grad[node.id] = grad;
    const OpDef& def = op_def(node.op);
    if (node.inputs.empty()) continue;
    check(def.backward != nullptr, "backward: op ", def.name, " at node '", node.name, "' is not differentiable");
    std::vector<bool> in_needs;
    for (NodeId in : node.inputs) in_needs.push_back(needs[static_cast<size_t>(in)]);
    GradBuilder b(g, node, grad, in_needs, [&](int k, NodeId contribution) {
      pending[static_cast<size_t>(node.inputs[static_cast<size_t>(k)])].push_back(contribution);
    });
    def.backward(b);
  }
  for (NodeId w : wrt)
    check(out.grad.contains(w), "backward: '", g.node(w).name, "' does not influence the loss '",
          g.node(loss).name, "'");
  return out;
}

}  // namespace tandem
