// The Backend interface: all memory and all compute go through it. A backend
//  - owns device memory (alloc/free, host<->device copies, device copies, zero fill),
//  - says which graph nodes it can execute (`supports` is the single truth: the executor, the
//    conformance suite and the docs ask it),
//  - executes one node: output = op(inputs), every tensor already in its memory,
//  - runs the optimizer kernels, which update parameters in place and are not graph ops.
// backends/cpu is the reference implementation of this interface.
#pragma once
#include <memory>
#include <span>
#include <string>

#include "core/tensor.h"

namespace tandem {

struct Node;

struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1-based, for bias correction
  float grad_scale = 1.0f;  // multiplies the gradient first (global-norm clipping, accumulation)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Memory.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* handle) = 0;
  virtual void upload(void* dst, size_t dst_offset, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t src_offset, size_t bytes) = 0;
  virtual void copy(void* dst, size_t dst_offset, const void* src, size_t src_offset, size_t bytes) = 0;
  virtual void zero(void* dst, size_t offset, size_t bytes) = 0;
  virtual void sync() = 0;
  // Called by a thread that did not create the backend before it runs kernels through it (the
  // serving engine thread), for per-thread state: the CPU backend's floating-point mode.
  virtual void attach_thread() {}

  // Compute.
  virtual bool supports(const Node& node) const = 0;
  // supports() with the input nodes known: what a Program and conform ask. Plugins decide on the
  // inputs' dtypes and shapes too; in-tree backends need only the node.
  virtual bool supports_node(const Node& node, std::span<const Node* const> inputs) const { return supports(node); }
  // The backend that runs the nodes this one does not support (a plugin's CPU fallback), or
  // nullptr: a Program then refuses such nodes. A Program places each node once, at plan time.
  virtual Backend* fallback() { return nullptr; }
  virtual void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) = 0;

  // Optimizer kernels (in place; not differentiated).
  virtual double sum_squares(const Tensor& t) = 0;
  virtual void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                     const AdamWStep& s) = 0;
  virtual void axpy(const Tensor& y, float alpha, const Tensor& x) = 0;  // y += alpha * x
};

// The backend registry: `make_backend("cpu")`. Unknown names are errors listing what exists.
std::unique_ptr<Backend> make_backend(const std::string& name);

}  // namespace tandem
