#include "core/graph.h"

#include "core/error.h"
#include "ops/op.h"

namespace tandem {

NodeId Graph::push(Node n) {
  n.id = static_cast<NodeId>(nodes_.size());
  check(!by_name_.contains(n.name), "graph: duplicate node name '", n.name, "'");
  by_name_[n.name] = n.id;
  nodes_.push_back(std::move(n));
  return nodes_.back().id;
}

NodeId Graph::input(const std::string& name, const Shape& shape, DType dtype) {
  Node n;
  n.op = OpKind::input;
  n.name = qualify(name);
  n.shape = shape;
  n.dtype = dtype;
  return push(std::move(n));
}

NodeId Graph::param(const std::string& name, const Shape& shape, DType dtype) {
  Node n;
  n.op = OpKind::param;
  n.name = qualify(name);
  n.shape = shape;
  n.dtype = dtype;
  return push(std::move(n));
}

NodeId Graph::add(OpKind op, std::vector<NodeId> inputs, Attrs attrs, const std::string& name) {
  const OpDef& def = op_def(op);
  Node n;
  n.op = op;
  n.name = qualify(name);
  n.inputs = std::move(inputs);
  n.attrs = std::move(attrs);
  check(static_cast<int>(n.inputs.size()) == def.arity, "op ", def.name, " at node '", n.name,
        "': expects ", def.arity, " inputs, got ", n.inputs.size());
  std::vector<const Node*> ins;
  for (NodeId id : n.inputs) {
    check(id >= 0 && static_cast<size_t>(id) < nodes_.size(), "node '", n.name, "': input id ", id,
          " does not exist");
    ins.push_back(&nodes_[static_cast<size_t>(id)]);
  }
  n.shape = def.shape(n, ins);
  n.dtype = def.dtype ? def.dtype(n, ins) : default_dtype(n, ins);
  return push(std::move(n));
}

NodeId Graph::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

NodeId Graph::at(const std::string& name) const {
  NodeId id = find(name);
  check(id >= 0, "graph has no node named '", name, "'");
  return id;
}

Graph::Scope Graph::scope(const std::string& part) {
  size_t saved = prefix_.size();
  prefix_ += part + ".";
  return Scope{this, saved};
}

}  // namespace tandem
