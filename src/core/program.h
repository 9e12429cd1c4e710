// A Program is a graph placed on a backend: dead nodes pruned, every intermediate given a slice
// of one arena by a liveness-based memory planner, ready to run again and again.
//  - Leaves (input, param) are bound from outside with bind().
//  - Nodes listed in `keep` survive the run (outputs, gradients, captured intermediates); every
//    other buffer is reused as soon as its last reader has run.
//  - reshape nodes are views: they share their input's memory.
//  - Placement is decided once, here: a node the backend does not support runs on its fallback()
//    backend (a plugin's CPU) when it has one. Each such node gets host buffers of its own for its
//    inputs and output; a run copies in the inputs that were computed on the backend (an input
//    computed by an earlier fallback node is read where it lies) and copies the output back only
//    when a node on the backend reads it or it is kept.
#pragma once
#include <functional>
#include <map>
#include <set>
#include <string>
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
  // Placement (fixed at construction).
  size_t nodes_scheduled() const { return schedule_.size(); }
  size_t nodes_on_fallback() const { return fallback_steps_.size(); }
  size_t copies_per_run() const { return copies_per_run_; }
  double copy_seconds() const { return copy_seconds_; }  // spent in fallback copies, all runs so far
  // "N of M nodes on foo, K on cpu (fallback), C copies per step": empty without fallback nodes.
  std::string placement() const;
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
  // A node run on the fallback backend: its host-side input and output tensors.
  struct FallbackStep {
    std::vector<Tensor> ins;
    std::vector<bool> copy_in;  // input k is copied from the backend each run
    Tensor out;
    bool copy_out = false;      // the output is copied back to the backend's arena
  };
  std::map<size_t, FallbackStep> fallback_steps_;  // by schedule step
  Backend* fallback_ = nullptr;
  size_t copies_per_run_ = 0;
  double copy_seconds_ = 0;
  void run_fallback(size_t step, FallbackStep& f, std::vector<Tensor>& ins);
};

}  // namespace tandem
