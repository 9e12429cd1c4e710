// Mixed precision in model graphs. A model computes in one of two precisions:
//  - f32: every value f32 (no cast node anywhere: the graph is the plain f32 graph);
//  - bf16 (mixed): matmul operands (activations and a bf16 copy of each weight, rounded from the
//    f32 master once per step), what the matmuls produce and the ops between two matmuls
//    (attention, GELU, SwiGLU) are bf16; the residual stream, norms and their statistics,
//    embeddings, the MoE router and its scores, logits -> cross-entropy -> loss stay f32.
// Models say where a value enters the compute dtype (`compute`) and where it returns to f32
// (`f32`); `Casts` turns that into cast nodes, one per (value, dtype) per graph, so a weight used
// twice (GPT-2's tied embedding) is rounded once.
//
// Weights may also arrive already converted (serving with --weights bf16|q8_0: params declared so);
// `compute` of such a param is then the param itself, and `f32` of a bf16 embedding row a cast
// (a q8_0 one a dequantizing cast).
#pragma once
#include <map>
#include <string>
#include <utility>

#include "core/graph.h"

namespace tandem {

class Casts {
 public:
  Casts(Graph& g, DType compute) : g_(g), compute_(compute) {}
  DType compute_dtype() const { return compute_; }
  // q8_0 weights enter matmuls as they are (the kernel dequantizes); embeddings of them come out f32.
  NodeId compute(NodeId x) { return g_.node(x).dtype == DType::q8_0 ? x : to(x, compute_); }
  NodeId f32(NodeId x) { return to(x, DType::f32); }
  NodeId to(NodeId x, DType dt) {
    if (g_.node(x).dtype == dt) return x;
    auto [it, fresh] = cache_.try_emplace({x, dt}, -1);
    if (fresh) {
      // "<x's name>.bf16": the scope prefix g.add puts back is taken off x's full name first.
      std::string base = g_.node(x).name;
      if (const std::string scope = g_.qualify(""); base.starts_with(scope)) base.erase(0, scope.size());
      it->second = g_.add(OpKind::cast, {x}, CastAttrs{dt}, base + "." + std::string(dtype_name(dt)));
    }
    return it->second;
  }

 private:
  Graph& g_;
  DType compute_;
  std::map<std::pair<NodeId, DType>, NodeId> cache_;
};

}  // namespace tandem
