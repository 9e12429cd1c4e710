// A graph of named ops. Nodes are stored in construction order, which is a valid execution order
// (inputs always precede their users). Forward and backward nodes live in the same graph, so any
// intermediate of either pass can be captured by name.
#pragma once
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "ops/op_kind.h"

namespace tandem {

using NodeId = int32_t;

// Op parameters, one named struct per family of ops (never anonymous integer slots).
struct NoAttrs {};
struct MatmulAttrs { bool trans_a = false, trans_b = false; };
struct ScaleAttrs { float scale = 1.0f; };
struct NormAttrs { float eps = 1e-5f; };
struct AttentionAttrs {
  int n_head = 1, d_qk = 0, d_v = 0;  // qkv packs [q: n_head*d_qk | k: n_head*d_qk | v: n_head*d_v]
  float scale = 1.0f;                  // softmax scale, usually 1/sqrt(d_qk)
};
struct ShapeAttrs { Shape shape; };  // reshape target; sum_to target; embedding_grad [rows, dim]
using Attrs = std::variant<NoAttrs, MatmulAttrs, ScaleAttrs, NormAttrs, AttentionAttrs, ShapeAttrs>;

struct Node {
  NodeId id = -1;
  OpKind op = OpKind::input;
  std::string name;
  std::vector<NodeId> inputs;
  Attrs attrs;
  Shape shape;
  DType dtype = DType::f32;

  template <typename A> const A& attr() const { return std::get<A>(attrs); }
  int64_t numel() const { return tandem::numel(shape); }
};

class Graph {
 public:
  // Leaves.
  NodeId input(const std::string& name, const Shape& shape, DType dtype = DType::f32);
  NodeId param(const std::string& name, const Shape& shape);
  // An op node: checks inputs and infers the output shape through the op's definition.
  NodeId add(OpKind op, std::vector<NodeId> inputs, Attrs attrs, const std::string& name);

  const Node& node(NodeId id) const { return nodes_.at(static_cast<size_t>(id)); }
  const std::vector<Node>& nodes() const { return nodes_; }
  size_t size() const { return nodes_.size(); }
  NodeId find(const std::string& name) const;  // -1 if absent
  NodeId at(const std::string& name) const;    // throws naming the node if absent

  // Name scoping for model builders: `auto s = g.scope("h.3");` makes "attn" become "h.3.attn".
  struct Scope {
    Graph* g;
    size_t saved;
    ~Scope() { g->prefix_.resize(saved); }
  };
  [[nodiscard]] Scope scope(const std::string& part);
  std::string qualify(const std::string& name) const { return prefix_ + name; }

 private:
  NodeId push(Node n);
  std::vector<Node> nodes_;
  std::map<std::string, NodeId> by_name_;
  std::string prefix_;
};

}  // namespace tandem
