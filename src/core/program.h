// A Program is a graph placed on a backend: dead nodes pruned, every intermediate given a slice
// of one arena by a liveness-based memory planner, ready to run again and again.
//  - Leaves (input, param) are bound from outside with bind().
//  - Nodes listed in `keep` survive the run (outputs, gradients, captured intermediates); every
//    other buffer is reused as soon as its last reader has run.
//  - reshape nodes are views: they share their input's memory.
#pragma once
#include <functional>
#include <set>
#include <vector>

#include "core/backend.h"
#include "core/graph.h"

namespace tandem {

class Program {
 public:
  Program(const Graph& graph, Backend& backend, const std::set<NodeId>& keep);

  void bind(NodeId leaf, const Tensor& t);  // shape and dtype must match the node
  // Runs the schedule; `after_step(i)`, when given, is called after the i-th scheduled node has
  // executed (data-parallel training starts reducing finished gradients there).
  void run(const std::function<void(size_t)>& after_step = nullptr);
  // The schedule step after which the kept node `id` holds its final value (for a view, the
  // step that writes the memory it views); npos for bound leaves.
  static constexpr size_t npos = static_cast<size_t>(-1);
  size_t written_at(NodeId id) const;
  // The tensor of a kept or bound node (a view into the arena for kept nodes).
  const Tensor& get(NodeId id) const;
  size_t arena_bytes() const { return arena_ ? arena_->bytes : 0; }
  const Graph& graph() const { return graph_; }
  Backend& backend() const { return backend_; }

 private:
  const Graph& graph_;
  Backend& backend_;
  std::vector<bool> live_;        // node contributes to a kept node
  std::vector<Tensor> tensors_;   // per node
  std::vector<NodeId> schedule_;  // op nodes to execute, in order
  std::vector<NodeId> root_;      // the node whose buffer each node uses (views: their input's)
  std::shared_ptr<Storage> arena_;
  std::set<NodeId> keep_;
};

}  // namespace tandem
