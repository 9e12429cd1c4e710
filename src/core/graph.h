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
struct SliceAttrs { int64_t start = 0, len = 0, full = 0; };  // a window [start, start+len) of a last dim of size full
struct RopeAttrs {
  int64_t rot_offset = 0, rot_dim = 0;  // the rotated window of the last dim
  double theta = 10000.0;
  bool interleaved = true;               // pairs (2i, 2i+1) as DeepSeek's checkpoints; else (i, i + rot_dim/2)
  // YaRN (factor > 1): frequency interpolation outside [beta_slow, beta_fast] rotations.
  double yarn_factor = 1.0, yarn_beta_fast = 32.0, yarn_beta_slow = 1.0;
  int64_t yarn_original_max_position = 0;
  double attention_factor = 1.0;  // multiplies cos and sin (YaRN's mscale ratio)
  bool inverse = false;           // rotate by -angle (the adjoint)
};
struct MlaAttrs {
  int64_t n_head = 0, d_nope = 0, d_rope = 0, d_v = 0;
  float scale = 1.0f;  // softmax scale (attention_latent)
  int part = 0;        // which input's gradient (mla_qkv_grad)
};
struct RouteAttrs {
  int64_t n_experts = 1, top_k = 1, n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};
struct GroupedMatmulAttrs { bool transpose_w = false; };  // false: y = x W_e^T (W [E, out, in]); true: y = x W_e
struct CastAttrs { DType to = DType::f32; };  // cast: the output dtype
struct ShiftAttrs { int64_t shift = 1; int32_t fill = -1; };
// Expert parallelism (ops/expert_parallel.cpp): routed experts split evenly over `ranks` ranks.
struct ExpertParallelAttrs { int ranks = 1; int64_t n_experts = 0, top_k = 0; };
using Attrs = std::variant<NoAttrs, MatmulAttrs, ScaleAttrs, NormAttrs, AttentionAttrs, ShapeAttrs, SliceAttrs, RopeAttrs,
                           MlaAttrs, RouteAttrs, GroupedMatmulAttrs, ShiftAttrs, ExpertParallelAttrs, CastAttrs>;

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
  // Parameters are f32 (the trainable master) unless a serving graph binds converted weights.
  NodeId param(const std::string& name, const Shape& shape, DType dtype = DType::f32);
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
