#include "qualify/parity.h"

#include <cmath>
#include <cstdio>
#include <numeric>

#include "backends/registry.h"
#include "core/autodiff.h"
#include "core/error.h"
#include "core/program.h"
#include "data/batch_loader.h"
#include "data/shard.h"
#include "models/params.h"
#include "qualify/compare.h"
#include "tokenizer/tokenizer.h"
#include "train/config.h"
#include "train/step.h"

namespace tandem::qualify {

namespace {

struct Setup {
  TrainConfig cfg;
  std::unique_ptr<Model> model;
  TokenShard train;
  std::unique_ptr<Backend> a, b;
};

Setup setup(const TwoBackendOptions& o) {
  Setup s;
  s.cfg = TrainConfig::load(o.config, o.sets);
  const Tokenizer tok = Tokenizer::load(o.data_dir / "tokenizer.json");
  if (!s.cfg.model.contains("vocab_size")) s.cfg.model["vocab_size"] = tok.vocab_size();
  s.train = read_shard(o.data_dir / "train.bin");
  s.model = model_from_hf_config(s.cfg.model, "config");
  check(!o.backend_b.empty(), "--backends needs two backends, e.g. cpu,opencl");
  s.a = make_backend(o.backend_a, o.backend_a.starts_with("faulty:") ? o.fault : "");
  s.b = make_backend(o.backend_b, o.backend_b.starts_with("faulty:") ? o.fault : "");
  check(o.fault.empty() || o.backend_a.starts_with("faulty:") || o.backend_b.starts_with("faulty:"),
        "--fault needs one of the backends to be faulty:<backend>");
  return s;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// One training run, stepped in lockstep with the other by the caller.
struct Trainer {
  Backend& be;
  ParamStore params;
  AdamW opt;
  TrainingProgram prog;
  Trainer(const Setup& s, Backend& backend, uint64_t seed)
      : be(backend),
        params(ParamStore::init(*s.model, backend, seed)),
        opt(params, backend),
        prog(*s.model, backend, params, s.cfg.batch_size, s.cfg.block_size) {}
  // The update of `tandem train` (train/trainer.cpp) for grad_accum = 1.
  double step(const TrainConfig& c, int64_t step, std::span<const int32_t> x, std::span<const int32_t> y) {
    const double loss = prog.run(x, y);
    std::vector<const Tensor*> grads(params.tensors.size());
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = &prog.grad(i);
    const double norm = global_norm(be, grads);
    double scale = 1.0;
    if (c.grad_clip > 0) scale = std::min(1.0, c.grad_clip / (norm + 1e-6));
    opt.step(params, grads, c, learning_rate_at(c, step - 1), step, static_cast<float>(scale));
    return loss;
  }
};

}  // namespace

ParityResult run_parity(const TwoBackendOptions& o, int64_t steps, double tol, bool verbose) {
  Setup s = setup(o);
  check(s.cfg.grad_accum == 1, "parity: grad_accum must be 1 (got ", s.cfg.grad_accum, ")");
  Trainer ta(s, *s.a, o.seed), tb(s, *s.b, o.seed);
  BatchLoader loader(s.train, static_cast<int>(s.cfg.batch_size), static_cast<int>(s.cfg.block_size), o.seed);
  std::vector<int32_t> x(static_cast<size_t>(s.cfg.batch_size * s.cfg.block_size)), y(x.size());
  ParityResult r;
  if (verbose) std::printf("%6s %12s %12s %12s\n", "step", s.a->name().c_str(), s.b->name().c_str(), "|dloss|");
  for (int64_t step = 1; step <= steps; ++step) {
    loader.next(x.data(), y.data());
    const double la = ta.step(s.cfg, step, x, y), lb = tb.step(s.cfg, step, x, y);
    r.loss_a.push_back(la);
    r.loss_b.push_back(lb);
    const double d = std::isfinite(la) && std::isfinite(lb) ? std::abs(la - lb) : INFINITY;
    if (step == 1 || d > r.max_dloss) {
      r.max_dloss = d;
      r.worst_step = step;
    }
    if (d > tol && r.first_bad_step == 0) r.first_bad_step = step;
    if (verbose) std::printf("%6lld %12.6f %12.6f %12.3g%s\n", static_cast<long long>(step), la, lb, d, d > tol ? "  > tol" : "");
  }
  for (size_t i = 0; i < ta.params.tensors.size(); ++i) {
    const double e = rel_err(ta.params.tensors[i].to_host(), tb.params.tensors[i].to_host());
    if (i == 0 || e > r.param_rel_err) {
      r.param_rel_err = e;
      r.worst_param = ta.params.specs[i].name;
    }
  }
  r.pass = r.first_bad_step == 0;
  return r;
}

DiffResult run_diff(const TwoBackendOptions& o, double bound) {
  Setup s = setup(o);
  const int64_t B = s.cfg.batch_size, T = s.cfg.block_size;
  Graph g;
  const ModelNodes nodes = s.model->build(g, B, T, GraphMode::train);
  std::vector<NodeId> wrt;
  for (const auto& spec : s.model->param_specs())
    if (spec.trainable) wrt.push_back(nodes.params.at(spec.name));  // buffers (MoE routing bias) get no gradient
  const Backward bw = build_backward(g, nodes.loss, wrt);
  std::set<NodeId> keep;
  for (const Node& n : g.nodes()) keep.insert(n.id);

  BatchLoader loader(s.train, static_cast<int>(B), static_cast<int>(T), o.seed);
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(x.size()), pos(static_cast<size_t>(T));
  loader.next(x.data(), y.data());
  std::iota(pos.begin(), pos.end(), 0);
  const std::vector<float> one{1.0f};

  struct Run {
    ParamStore params;
    std::unique_ptr<Program> prog;
  };
  auto run = [&](Backend& be) {
    Run r{ParamStore::init(*s.model, be, o.seed), std::make_unique<Program>(g, be, keep)};
    r.params.bind(*r.prog, nodes);
    r.prog->bind(nodes.input_ids, Tensor::from_host_i32(be, {B, T}, x));
    r.prog->bind(nodes.labels, Tensor::from_host_i32(be, {B, T}, y));
    if (nodes.position_ids >= 0) r.prog->bind(nodes.position_ids, Tensor::from_host_i32(be, {T}, pos));
    r.prog->bind(bw.seed, Tensor::from_host(be, {}, one));
    r.prog->run();
    return r;
  };
  Run ra = run(*s.a), rb = run(*s.b);

  auto node_diff = [&](NodeId id) {
    const Node& n = g.node(id);
    NodeDiff d{n.name, op_name(n.op)};
    if (n.dtype != DType::f32) {  // ids: exact
      d.nmse = ra.prog->get(id).to_host_i32() == rb.prog->get(id).to_host_i32() ? 0.0 : INFINITY;
      return d;
    }
    const auto va = ra.prog->get(id).to_host(), vb = rb.prog->get(id).to_host();
    const std::vector<double> want(va.begin(), va.end());
    const ErrorStats e = compare(vb, want);
    d.finite = e.nan == 0 && e.inf_mismatch == 0;
    d.nmse = d.finite ? e.nmse : INFINITY;
    return d;
  };
  DiffResult r;
  r.loss_a = ra.prog->get(nodes.loss).to_host()[0];
  r.loss_b = rb.prog->get(nodes.loss).to_host()[0];
  for (const Node& n : g.nodes()) {
    if (n.op == OpKind::input || n.op == OpKind::param || n.op == OpKind::reshape) continue;
    r.nodes.push_back(node_diff(n.id));
    if (r.first_bad < 0 && !(r.nodes.back().nmse <= bound)) {
      r.first_bad = static_cast<int>(r.nodes.size()) - 1;
      for (NodeId in : n.inputs) r.first_bad_inputs.push_back(node_diff(in));
    }
  }
  return r;
}

}  // namespace tandem::qualify
