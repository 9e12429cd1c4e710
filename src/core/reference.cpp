#include "core/reference.h"

namespace tandem {

std::vector<RefTensor> run_reference(const Graph& g, const std::map<NodeId, RefTensor>& leaves) {
  std::vector<RefTensor> vals(g.size());
  for (const Node& n : g.nodes()) {
    auto& v = vals[static_cast<size_t>(n.id)];
    if (n.op == OpKind::input || n.op == OpKind::param) {
      auto it = leaves.find(n.id);
      if (it == leaves.end()) continue;  // unbound leaves are fine if nothing reads them
      check(it->second.shape == n.shape, "reference: leaf '", n.name, "' bound with shape ",
            shape_str(it->second.shape), ", expected ", shape_str(n.shape));
      v = it->second;
      continue;
    }
    std::vector<const RefTensor*> ins;
    for (NodeId in : n.inputs) {
      const auto& t = vals[static_cast<size_t>(in)];
      check(t.shape == g.node(in).shape && static_cast<int64_t>(t.data.size()) == numel(t.shape),
            "reference: node '", n.name, "' reads '", g.node(in).name, "' which has no value");
      ins.push_back(&t);
    }
    v = RefTensor(n.shape);
    op_def(n.op).reference(n, ins, v);
  }
  return vals;
}

}  // namespace tandem
