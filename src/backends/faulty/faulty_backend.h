// faulty:<B> — a rehearsal backend: B with one deliberately broken op, so that conform, parity
// and diff can be shown to catch and name it. Spec (`--fault` or TANDEM_FAULT), op=NAME plus:
//   kind=scale,eps=E                 every output element multiplied by (1 + E)
//   kind=bitflip[,rate=R]            each output element gets one bit flipped with probability R
//                                    (default 1e-3; at least one element per execution); the bit
//                                    is one of the 16 high bits (sign, exponent, top mantissa)
//   kind=bf16                        output truncated to bf16 (round toward zero): the classic
//                                    wrong bf16 rounding
//   kind=dropgrad                    the gradient nodes of NAME (NAME_grad*, or NAME nodes built
//                                    by a backward rule, "*.bwd.*") output zeros
//   kind=element,eps=E[,index=I]     one element multiplied by (1 + E): element I (modulo the
//                                    output's size), by default the output's largest-magnitude
//                                    element (where a relative error is largest in absolute terms)
//   kind=tile,eps=E[,size=S][,index=I]  S contiguous elements (default 16) multiplied by (1 + E),
//                                    starting at I (modulo the size), by default the aligned block
//                                    of S holding the largest-magnitude element: a bad tile or SM
//   kind=stuck,bit=B[,lane=L][,lanes=W][,value=0|1]  bit B (0-31 of the f32 pattern) stuck at
//                                    value (default 1) in one lane: elements i with i % W == L
//                                    (defaults L = 0, W = 32: one lane of a warp or SIMD row)
//   kind=bf16acc                     matmul only: the product recomputed with its running sum
//                                    rounded to bf16 after every multiply-add (a kernel that
//                                    accumulates in bf16 instead of f32, the classic low-precision bug)
// bf16 outputs are perturbed on their widened f32 values and rounded back (RNE); the bits of a
// bf16 value are bits 16-31 of its f32 pattern.
// Intermittent, on any kind: every=N (the fault fires on the N-th, 2N-th, ... execution of the
// op; default 1: every execution) and p=P (each of those fires with probability P; default 1);
// seed=S seeds p and bitflip.
//
// NAME is a graph op, or one of the optimizer kernels: adamw (the fault acts on the updated
// parameter), sum_squares (on the returned sum, as one f32 value), axpy (on y). The faulted op
// must run: parity and diff refuse a spec no node of their graph uses, and a training run stops at
// its first optimizer step if the op has not run by then (see `used`).
// Everything else is delegated to B unchanged; `supports` is B's.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>

#include "core/backend.h"

namespace tandem {

struct FaultSpec {
  enum class Kind { scale, bitflip, bf16, dropgrad, element, tile, stuck, bf16acc };
  std::string op;
  Kind kind = Kind::scale;
  double eps = 1e-3;
  double rate = 1e-3;          // bitflip: per-element probability
  int64_t index = -1;          // element, tile: -1 = around the largest-magnitude element
  int64_t size = 16;           // tile: elements
  int bit = -1;                // stuck: 0..31
  int64_t lane = 0, lanes = 32;
  int value = 1;               // stuck at 0 or 1
  int64_t every = 1;           // intermittent: every N-th execution
  double p = 1.0;              // intermittent: probability per (N-th) execution
  uint64_t seed = 1;
  static FaultSpec parse(const std::string& spec);  // errors name the bad key
  static bool is_optimizer_op(const std::string& name);  // adamw, sum_squares, axpy
  bool matches(const Node& node) const;
  bool on_optimizer() const { return is_optimizer_op(op); }
  std::string describe() const;  // the spec, normalised
};

class FaultyBackend final : public Backend {
 public:
  FaultyBackend(std::unique_ptr<Backend> inner, FaultSpec spec);
  std::string name() const override { return "faulty:" + inner_->name(); }
  void* alloc(size_t bytes) override { return inner_->alloc(bytes); }
  void free(void* h) override { inner_->free(h); }
  void upload(void* dst, size_t off, const void* src, size_t n) override { inner_->upload(dst, off, src, n); }
  void download(void* dst, const void* src, size_t off, size_t n) override { inner_->download(dst, src, off, n); }
  void copy(void* dst, size_t doff, const void* src, size_t soff, size_t n) override {
    inner_->copy(dst, doff, src, soff, n);
  }
  void zero(void* dst, size_t off, size_t n) override { inner_->zero(dst, off, n); }
  void sync() override { inner_->sync(); }
  void attach_thread() override { inner_->attach_thread(); }
  bool supports(const Node& node) const override;
  bool supports_node(const Node& node, std::span<const Node* const> inputs) const override;
  Backend* fallback() override { return inner_->fallback(); }
  void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) override;
  double sum_squares(const Tensor& t) override;
  void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) override;
  void axpy(const Tensor& y, float alpha, const Tensor& x) override;
  const FaultSpec& spec() const { return spec_; }

  // Whether the faulted op is in use: a node it matches was placed on this backend (a Program asks
  // `supports` of every node it schedules) or ran, or the optimizer kernel ran.
  bool used() const { return seen_ || executions_ > 0; }
  int64_t executions() const { return executions_; }  // executions of the faulted op
  int64_t injected() const { return injected_; }      // of which the fault fired

 private:
  bool fires();  // counts one execution; whether the fault fires on it (every, p)
  void perturb(std::span<float> v);
  void perturb_tensor(const Tensor& t, const std::string& what);
  void check_used_before_optimizer(const char* kernel);

  std::unique_ptr<Backend> inner_;
  FaultSpec spec_;
  std::mt19937_64 rng_;
  mutable bool seen_ = false;
  int64_t executions_ = 0, injected_ = 0;
  bool optimizer_checked_ = false;
};

}  // namespace tandem
