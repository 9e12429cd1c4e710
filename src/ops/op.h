// The single definition of an op: its shape rule, its float64 reference semantics, and its
// backward rule (expressed as new graph nodes, so every backend differentiates the same way and
// implements forward kernels only).
#pragma once
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/graph.h"

namespace tandem {

// A contiguous float64 tensor for the reference interpreter (integer ids are stored as doubles).
struct RefTensor {
  Shape shape;
  std::vector<double> data;
  RefTensor() = default;
  explicit RefTensor(Shape s) : shape(std::move(s)), data(static_cast<size_t>(tandem::numel(shape)), 0.0) {}
  int64_t numel() const { return tandem::numel(shape); }
};

// What a backward rule sees: the forward node, the gradient flowing into its output, and a way
// to add nodes and to hand a gradient contribution to each input.
class GradBuilder {
 public:
  GradBuilder(Graph& g, const Node& node, NodeId grad_out, std::vector<bool> needs,
              std::function<void(int, NodeId)> contribute)
      : g_(g), node_(node), grad_out_(grad_out), needs_(std::move(needs)), contribute_(std::move(contribute)) {}
  // Whether input i needs a gradient at all (rules skip work for data inputs and frozen params).
  bool needs(int i) const { return needs_.at(static_cast<size_t>(i)); }
  const Node& node() const { return node_; }
  const Node& input(int i) const { return g_.node(node_.inputs.at(static_cast<size_t>(i))); }
  NodeId in(int i) const { return node_.inputs.at(static_cast<size_t>(i)); }
  NodeId grad_out() const { return grad_out_; }
  // Adds a backward node named "<forward node>.bwd.<what>".
  NodeId add(OpKind op, std::vector<NodeId> inputs, Attrs attrs, const std::string& what) {
    return g_.add(op, std::move(inputs), std::move(attrs), node_.name + ".bwd." + what);
  }
  // Reshape `id` to input i's shape when it differs (a free view).
  NodeId like_input(NodeId id, int i, const std::string& what);
  void to(int input_index, NodeId grad) {
    if (needs(input_index)) contribute_(input_index, grad);
  }
  Graph& graph() { return g_; }

 private:
  Graph& g_;
  const Node& node_;
  NodeId grad_out_;
  std::vector<bool> needs_;
  std::function<void(int, NodeId)> contribute_;
};

struct OpDef {
  const char* name;
  int arity;  // number of inputs
  // Validates inputs (throwing an Error that names the node) and returns the output shape.
  Shape (*shape)(const Node& node, std::span<const Node* const> inputs);
  // float64 semantics: the living definition of what the op computes.
  void (*reference)(const Node& node, std::span<const RefTensor* const> inputs, RefTensor& out);
  // Backward rule; nullptr when the op is not differentiable (backward kernels, index inputs).
  void (*backward)(GradBuilder& b);
  // Output dtype; nullptr means the common float dtype of the inputs (default_dtype below):
  // index-producing ops return i32, cast returns its target.
  DType (*dtype)(const Node& node, std::span<const Node* const> inputs) = nullptr;
};

const OpDef& op_def(OpKind op);

// Shared shape-check helpers: every message names the node.
void expect_rank_at_least(const Node& n, const Node& in, size_t rank);
void expect_same_shape(const Node& n, const Node& a, const Node& b);
void expect_dtype(const Node& n, const Node& in, DType dt);
bool is_suffix(const Shape& small, const Shape& big);
// The default output dtype: every float input (f32 or bf16) of a node must have the same dtype,
// which the output takes (f32 when there is none). Mixed precision is explicit: the graph says
// where values change dtype with `cast` nodes, so a kernel never guesses. Throws naming the node.
DType default_dtype(const Node& n, std::span<const Node* const> inputs);

}  // namespace tandem
