#include "qualify/parity.h"
#include "qualify/tolerance.h"

#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>

#include "backends/faulty/faulty_backend.h"
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
  s.model->set_compute_dtype(compute_dtype(s.cfg));
  check(!o.backend_b.empty(), "--backends needs two backends, e.g. cpu,opencl");
  s.a = make_backend(o.backend_a, o.backend_a.starts_with("faulty:") ? o.fault : "");
  s.b = make_backend(o.backend_b, o.backend_b.starts_with("faulty:") ? o.fault : "");
  check(o.fault.empty() || o.backend_a.starts_with("faulty:") || o.backend_b.starts_with("faulty:"),
        "--fault needs one of the backends to be faulty:<backend>");
  return s;
}

FaultyBackend* faulty_of(const Setup& s) {
  if (auto* f = dynamic_cast<FaultyBackend*>(s.a.get())) return f;
  return dynamic_cast<FaultyBackend*>(s.b.get());
}

// A fault on an op the run never executes would rehearse nothing: refuse it, naming the op. Graph
// ops: no node of the graph just placed on the backend is that op (Program asks `supports` of every
// node it schedules). Optimizer kernels: `what` says which of them the command runs.
void check_fault_used(const Setup& s, const std::string& command, const std::set<std::string>& kernels_run) {
  const FaultyBackend* f = faulty_of(s);
  if (!f) return;
  const FaultSpec& spec = f->spec();
  if (spec.on_optimizer()) {
    std::string run;
    for (const auto& k : kernels_run) run += (run.empty() ? "" : ", ") + k;
    check(kernels_run.contains(spec.op), command, ": --fault op=", spec.op, " is never run by ", command, " (it runs ",
          run.empty() ? "no optimizer kernel" : run, ")");
    return;
  }
  check(f->used(), command, ": --fault op=", spec.op, " is used by no node of the ", s.cfg.model.value("model_type", "model"),
        " training graph (", f->spec().describe(), ")");
}

std::string fault_report(const Setup& s) {
  const FaultyBackend* f = faulty_of(s);
  if (!f) return "";
  return f->name() + ": " + f->spec().describe() + " fired on " + std::to_string(f->injected()) + " of " +
         std::to_string(f->executions()) + " executions of " + f->spec().op;
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
  double grad_norm = 0;  // of the last step, before clipping
  // The update of `tandem train` (train/trainer.cpp) for grad_accum = 1.
  double step(const TrainConfig& c, int64_t step, std::span<const int32_t> x, std::span<const int32_t> y) {
    const double loss = prog.run(x, y);
    std::vector<const Tensor*> grads(params.tensors.size());
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = &prog.grad(i);
    const double norm = global_norm(be, grads);
    grad_norm = norm;
    double scale = 1.0;
    if (c.grad_clip > 0) scale = std::min(1.0, c.grad_clip / (norm + 1e-6));
    opt.step(params, grads, c, learning_rate_at(c, step - 1), step, static_cast<float>(scale));
    return loss;
  }
};

}  // namespace

ParityResult run_parity(const TwoBackendOptions& o, int64_t steps, const ParityBounds& bounds, bool verbose) {
  Setup s = setup(o);
  check(s.cfg.grad_accum == 1, "parity: grad_accum must be 1 (got ", s.cfg.grad_accum, ")");
  Trainer ta(s, *s.a, o.seed), tb(s, *s.b, o.seed);
  check_fault_used(s, "parity", {"adamw", "sum_squares"});  // grad_accum 1: no axpy
  BatchLoader loader(s.train, static_cast<int>(s.cfg.batch_size), static_cast<int>(s.cfg.block_size), o.seed);
  std::vector<int32_t> x(static_cast<size_t>(s.cfg.batch_size * s.cfg.block_size)), y(x.size());
  ParityResult r;
  if (verbose)
    std::printf("%6s %12s %12s %12s %12s %12s %12s\n", "step", s.a->name().c_str(), s.b->name().c_str(), "|dloss|",
                "gnorm A", "gnorm B", "rel dgnorm");
  // NaN or inf anywhere counts as over every bound.
  auto over = [](double d, double bound) { return !(d <= bound); };
  for (int64_t step = 1; step <= steps; ++step) {
    loader.next(x.data(), y.data());
    const double la = ta.step(s.cfg, step, x, y), lb = tb.step(s.cfg, step, x, y);
    const double na = ta.grad_norm, nb = tb.grad_norm;
    r.loss_a.push_back(la);
    r.loss_b.push_back(lb);
    r.grad_norm_a.push_back(na);
    r.grad_norm_b.push_back(nb);
    const double d = std::isfinite(la) && std::isfinite(lb) ? std::abs(la - lb) : INFINITY;
    const double dn = std::isfinite(na) && std::isfinite(nb) ? std::abs(na - nb) / std::max(na, 1e-30) : INFINITY;
    if (step == 1 || !(d <= r.max_dloss)) {
      r.max_dloss = d;
      r.worst_step = step;
    }
    if (step == 1 || !(dn <= r.max_dgrad_norm)) {
      r.max_dgrad_norm = dn;
      r.worst_grad_step = step;
    }
    if (over(d, bounds.loss) && r.first_bad_step == 0) r.first_bad_step = step;
    if (over(dn, bounds.grad_norm) && r.first_bad_grad_step == 0) r.first_bad_grad_step = step;
    if (verbose)
      std::printf("%6lld %12.6f %12.6f %12.3g %12.6g %12.6g %12.3g%s%s\n", static_cast<long long>(step), la, lb, d, na, nb,
                  dn, over(d, bounds.loss) ? "  loss > bound" : "", over(dn, bounds.grad_norm) ? "  gnorm > bound" : "");
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < ta.params.tensors.size(); ++i) {
    const auto a = ta.params.tensors[i].to_host(), b = tb.params.tensors[i].to_host();
    const double e = rel_err(a, b);
    for (size_t k = 0; k < a.size(); ++k) {
      num += (double(a[k]) - b[k]) * (double(a[k]) - b[k]);
      den += double(a[k]) * a[k];
    }
    if (i == 0 || !(e <= r.param_rel_err_tensor)) {
      r.param_rel_err_tensor = e;
      r.worst_param = ta.params.specs[i].name;
    }
  }
  r.param_rel_err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  r.loss_ok = r.first_bad_step == 0;
  r.grad_norm_ok = r.first_bad_grad_step == 0;
  r.param_ok = !over(r.param_rel_err, bounds.param);
  r.pass = r.loss_ok && r.grad_norm_ok && r.param_ok;
  r.fault_report = fault_report(s);
  return r;
}

DiffResult run_diff(const TwoBackendOptions& o, double nmse_bound, double max_rel_bound) {
  Setup s = setup(o);
  const int64_t B = s.cfg.batch_size, T = s.cfg.block_size;
  // One graph per side: the same step, in each side's precision (--precision A,B; default both the
  // config's). Nodes are matched by name; a bf16 graph's extra cast nodes have no f32 partner.
  struct Side {
    Graph g;
    ModelNodes nodes;
    Backward bw;
  };
  auto dtype_of = [&](const std::string& p) {
    check(p.empty() || p == "f32" || p == "bf16", "--precision: '", p, "' is not f32 or bf16");
    return p.empty() ? compute_dtype(s.cfg) : p == "bf16" ? DType::bf16 : DType::f32;
  };
  auto build = [&](Side& side, DType precision) {
    s.model->set_compute_dtype(precision);
    side.nodes = s.model->build(side.g, B, T, GraphMode::train);
    std::vector<NodeId> wrt;
    for (const auto& spec : s.model->param_specs())
      if (spec.trainable) wrt.push_back(side.nodes.params.at(spec.name));  // buffers (MoE routing bias) get no gradient
    side.bw = build_backward(side.g, side.nodes.loss, wrt);
  };
  Side sa, sb;
  const DType prec_a = dtype_of(o.precision_a), prec_b = dtype_of(o.precision_b);
  build(sa, prec_a);
  build(sb, prec_b);
  const Graph& g = sa.g;
  const ModelNodes& nodes = sa.nodes;

  BatchLoader loader(s.train, static_cast<int>(B), static_cast<int>(T), o.seed);
  std::vector<int32_t> x(static_cast<size_t>(B * T)), y(x.size()), pos(static_cast<size_t>(T));
  loader.next(x.data(), y.data());
  std::iota(pos.begin(), pos.end(), 0);
  const std::vector<float> one{1.0f};

  struct Run {
    ParamStore params;
    std::unique_ptr<Program> prog;
  };
  auto run = [&](Backend& be, const Side& side) {
    std::set<NodeId> keep;
    for (const Node& n : side.g.nodes()) keep.insert(n.id);
    Run r{ParamStore::init(*s.model, be, o.seed), std::make_unique<Program>(side.g, be, keep)};
    r.params.bind(*r.prog, side.nodes);
    r.prog->bind(side.nodes.input_ids, Tensor::from_host_i32(be, {B, T}, x));
    r.prog->bind(side.nodes.labels, Tensor::from_host_i32(be, {B, T}, y));
    if (side.nodes.position_ids >= 0) r.prog->bind(side.nodes.position_ids, Tensor::from_host_i32(be, {T}, pos));
    r.prog->bind(side.bw.seed, Tensor::from_host(be, {}, one));
    r.prog->run();
    return r;
  };
  Run ra = run(*s.a, sa), rb = run(*s.b, sb);
  check_fault_used(s, "diff", {});  // one forward and backward: no optimizer kernel

  const bool r_mixed = prec_a != prec_b;
  auto node_diff = [&](NodeId id) {
    const Node& n = g.node(id);
    NodeDiff d{n.name, op_name(n.op)};
    const NodeId id_b = sb.g.find(n.name);
    if (id_b < 0) return d;  // a cast of the other precision's graph: no partner
    d.matched = true;
    if (r_mixed) d.class_bound = tolerance_for(n.op, DType::bf16).nmse;
    if (n.dtype == DType::i32) {  // ids: exact (bf16 values are compared widened, like f32)
      d.nmse = d.max_rel = ra.prog->get(id).to_host_i32() == rb.prog->get(id_b).to_host_i32() ? 0.0 : INFINITY;
      return d;
    }
    const auto va = ra.prog->get(id).to_host(), vb = rb.prog->get(id_b).to_host();
    const std::vector<double> want(va.begin(), va.end());
    const ErrorStats e = compare(vb, want);
    d.finite = e.finite();
    d.nmse = d.finite ? e.nmse : INFINITY;
    d.max_rel = d.finite ? e.max_rel : INFINITY;
    return d;
  };
  DiffResult r;
  r.mixed = r_mixed;
  r.loss_a = ra.prog->get(nodes.loss).to_host()[0];
  r.loss_b = rb.prog->get(sb.nodes.loss).to_host()[0];
  for (const Node& n : g.nodes()) {
    if (n.op == OpKind::input || n.op == OpKind::param || n.op == OpKind::reshape) continue;
    NodeDiff d = node_diff(n.id);
    if (!d.matched) continue;
    r.nodes.push_back(d);
    // Two precisions: a report of where the lower one's error sits, not a divergence verdict.
    if (!r.mixed && r.first_bad < 0 && !r.nodes.back().within(nmse_bound, max_rel_bound)) {
      r.first_bad = static_cast<int>(r.nodes.size()) - 1;
      for (NodeId in : n.inputs) r.first_bad_inputs.push_back(node_diff(in));
    }
  }
  r.fault_report = fault_report(s);
  return r;
}

}  // namespace tandem::qualify
