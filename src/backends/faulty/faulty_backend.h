// faulty:<B> — a rehearsal backend: B with one deliberately broken op, so that conform, parity
// and diff can be shown to catch and name it. Spec (`--fault` or TANDEM_FAULT):
//   op=NAME,kind=scale,eps=E       output of every NAME node multiplied by (1 + E)
//   op=NAME,kind=bitflip,p=P       each output element of NAME gets one bit flipped with probability
//                                  P (at least one element per execution); the bit is one of the
//                                  16 high bits (sign, exponent, top mantissa), above f32 rounding
//   op=NAME,kind=bf16              output truncated to bf16 (round toward zero): the classic wrong
//                                  bf16 rounding
//   op=NAME,kind=dropgrad          the gradient nodes of NAME (NAME_grad*, or NAME nodes built by
//                                  a backward rule, "*.bwd.*") output zeros: a dropped contribution
//   optional: seed=S (bitflip)
// Everything else is delegated to B unchanged; `supports` is B's.
#pragma once
#include <memory>
#include <random>
#include <string>

#include "core/backend.h"

namespace tandem {

struct FaultSpec {
  enum class Kind { scale, bitflip, bf16, dropgrad };
  std::string op;
  Kind kind = Kind::scale;
  double eps = 1e-3, p = 1e-3;
  uint64_t seed = 1;
  static FaultSpec parse(const std::string& spec);  // errors name the bad key
  bool matches(const Node& node) const;
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
  bool supports(const Node& node) const override { return inner_->supports(node); }
  void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) override;
  double sum_squares(const Tensor& t) override { return inner_->sum_squares(t); }
  void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) override {
    inner_->adamw(p, g, m, v, s);
  }
  void axpy(const Tensor& y, float alpha, const Tensor& x) override { inner_->axpy(y, alpha, x); }
  const FaultSpec& spec() const { return spec_; }

 private:
  std::unique_ptr<Backend> inner_;
  FaultSpec spec_;
  std::mt19937_64 rng_;
};

}  // namespace tandem
