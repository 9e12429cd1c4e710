#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "qualify/parity.h"

namespace tandem::cli {

namespace {
void add_two_backend_options(CLI::App* cmd, qualify::TwoBackendOptions& o, std::string& backends) {
  cmd->add_option("--config", o.config, "Preset name or JSON file (as `tandem train`)")->capture_default_str();
  cmd->add_option("--data", o.data_dir, "Data directory from `tandem prepare`")->required();
  cmd->add_option("--backends", backends, "Two backends, the reference first: A,B (e.g. cpu,opencl)")->required();
  add_fallback_option(cmd);
  cmd->add_option("--set", o.sets, "Override a config key: key=value (repeatable)");
  cmd->add_option("--seed", o.seed, "Init and batch seed")->capture_default_str();
  cmd->add_option("--fault", o.fault,
                  "Fault spec for a faulty:<backend> (op=NAME,kind=...; see `tandem conform --help`); the op must be "
                  "one the run uses");
}
void split_backends(const std::string& s, qualify::TwoBackendOptions& o) {
  const auto comma = s.find(',');
  check(comma != std::string::npos && s.find(',', comma + 1) == std::string::npos,
        "--backends: expected two backends A,B, got '", s, "'");
  o.backend_a = s.substr(0, comma);
  o.backend_b = s.substr(comma + 1);
}
}  // namespace

void register_parity(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "parity", "Train on two backends from the same init and batches; compare losses, gradient norms and parameters");
  struct Opts {
    qualify::TwoBackendOptions o;
    std::string backends;
    int64_t steps = 200;
    qualify::ParityBounds bounds;
  };
  auto p = std::make_shared<Opts>();
  add_two_backend_options(cmd, p->o, p->backends);
  cmd->add_option("--steps", p->steps, "Training steps")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--tol", p->bounds.loss, "Bound on |loss_A - loss_B| at every step")->capture_default_str();
  cmd->add_option("--tol-grad-norm", p->bounds.grad_norm,
                  "Bound on the gradient norm's relative difference |n_A - n_B| / n_A at every step")
      ->capture_default_str();
  cmd->add_option("--tol-param", p->bounds.param,
                  "Bound on the final parameters' relative error, max over tensors of ||p_A - p_B|| / ||p_A||")
      ->capture_default_str();
  cmd->callback([p] {
    split_backends(p->backends, p->o);
    const auto& b = p->bounds;
    const auto r = qualify::run_parity(p->o, p->steps, b, true);
    auto mark = [](bool ok) { return ok ? "ok" : "OVER"; };
    std::printf("loss:        max |dloss| %.3g at step %lld (bound %.3g) %s\n", r.max_dloss,
                static_cast<long long>(r.worst_step), b.loss, mark(r.loss_ok));
    std::printf("grad norm:   max |dn|/n %.3g at step %lld (bound %.3g) %s\n", r.max_dgrad_norm,
                static_cast<long long>(r.worst_grad_step), b.grad_norm, mark(r.grad_norm_ok));
    std::printf("parameters:  final relative error %.3g (bound %.3g) %s; worst tensor %s %.3g\n", r.param_rel_err,
                b.param, mark(r.param_ok), r.worst_param.c_str(), r.param_rel_err_tensor);
    if (!r.fault_report.empty()) std::printf("%s\n", r.fault_report.c_str());
    if (r.pass) {
      std::printf("verdict: PASS (%s tracks %s for %lld steps: loss, gradient norm and parameters within bounds)\n",
                  p->o.backend_b.c_str(), p->o.backend_a.c_str(), static_cast<long long>(p->steps));
      return;
    }
    std::string why;
    auto add = [&](const std::string& w) { why += (why.empty() ? "" : "; ") + w; };
    if (!r.loss_ok) add("loss over bound from step " + std::to_string(r.first_bad_step));
    if (!r.grad_norm_ok) add("gradient norm over bound from step " + std::to_string(r.first_bad_grad_step));
    if (!r.param_ok) add("final parameters over bound (worst " + r.worst_param + ")");
    std::printf("verdict: FAIL (%s)\n", why.c_str());
    throw Error("parity: " + p->o.backend_b + " diverges from " + p->o.backend_a + ": " + why +
                "; run `tandem diff` to find the op");
  });
}

void register_diff(CLI::App& app) {
  auto* cmd = app.add_subcommand("diff", "One forward+backward on two backends; name the first node that diverges");
  struct Opts {
    qualify::TwoBackendOptions o;
    std::string backends;
    double bound = 1e-8;
    double max_rel = 1e-4;
    bool all = false;
  };
  auto p = std::make_shared<Opts>();
  add_two_backend_options(cmd, p->o, p->backends);
  cmd->add_option("--tol", p->bound,
                  "NMSE bound per node, A taken as the reference (f32 backends agree to ~1e-11 on baby-gpt; a 1e-3 "
                  "relative error is 1e-6)")
      ->capture_default_str();
  cmd->add_option("--tol-elem", p->max_rel,
                  "Per-element bound per node: max |b - a| / max |a| (cpu and opencl agree to ~1.3e-6 on baby-gpt's "
                  "nodes; one element off by 1e-3 at the node's largest magnitude is 1e-3)")
      ->capture_default_str();
  cmd->add_flag("--all", p->all, "Print every node's error, not only the first divergence");
  auto precision = std::make_shared<std::string>();
  cmd->add_option("--precision", *precision,
                  "A,B: each side's precision (f32 or bf16, e.g. f32,bf16 on cpu,cpu): the same step in both, every "
                  "node's error against its op class's bf16 bound, largest ratios first (where bf16 loses precision)");
  cmd->callback([p, precision] {
    split_backends(p->backends, p->o);
    if (!precision->empty()) {
      const auto comma = precision->find(',');
      check(comma != std::string::npos, "--precision: expected A,B (e.g. f32,bf16), got '", *precision, "'");
      p->o.precision_a = precision->substr(0, comma);
      p->o.precision_b = precision->substr(comma + 1);
    }
    const auto r = qualify::run_diff(p->o, p->bound, p->max_rel);
    std::printf("loss: %s %.6f, %s %.6f\n", p->o.backend_a.c_str(), r.loss_a, p->o.backend_b.c_str(), r.loss_b);
    if (r.mixed) {
      // Where the lower precision's error concentrates: nodes by NMSE over their class bound.
      std::vector<const qualify::NodeDiff*> by_ratio;
      for (const auto& n : r.nodes) by_ratio.push_back(&n);
      auto ratio = [](const qualify::NodeDiff* n) { return n->class_bound > 0 ? n->nmse / n->class_bound : n->nmse > 0 ? INFINITY : 0.0; };
      std::stable_sort(by_ratio.begin(), by_ratio.end(), [&](auto* a, auto* b) { return ratio(a) > ratio(b); });
      int over = 0;
      for (auto* n : by_ratio) over += ratio(n) > 1;
      std::printf("%s (%s) vs %s (%s): %zu nodes compared; %d above their op class's bf16 NMSE bound (errors accumulate "
                  "through the graph: a node's error includes its inputs')\n",
                  p->o.backend_b.c_str(), p->o.precision_b.c_str(), p->o.backend_a.c_str(), p->o.precision_a.c_str(),
                  r.nodes.size(), over);
      std::printf("  %-20s %-52s %10s %10s %8s %10s\n", "op", "node", "nmse", "bound", "ratio", "max_rel");
      const size_t shown = p->all ? by_ratio.size() : std::min<size_t>(15, by_ratio.size());
      for (size_t i = 0; i < shown; ++i) {
        const auto* n = by_ratio[i];
        std::printf("  %-20s %-52s %10.3g %10.3g %8.3g %10.3g\n", n->op.c_str(), n->name.c_str(), n->nmse, n->class_bound,
                    ratio(n), n->max_rel);
      }
      for (const auto& n : r.nodes)
        check(n.finite, "diff: node '", n.name, "' is not finite in ", p->o.precision_b);
      return;
    }
    double worst = 0, worst_rel = 0;
    for (const auto& n : r.nodes) {
      worst = std::max(worst, n.nmse);
      worst_rel = std::max(worst_rel, n.max_rel);
      if (p->all) std::printf("  %-20s %-48s nmse %.3g  max_rel %.3g\n", n.op.c_str(), n.name.c_str(), n.nmse, n.max_rel);
    }
    if (!r.fault_report.empty()) std::printf("%s\n", r.fault_report.c_str());
    if (r.first_bad < 0) {
      std::printf("all %zu nodes within nmse %.3g and max_rel %.3g (worst %.3g, %.3g): no divergence\n", r.nodes.size(),
                  p->bound, p->max_rel, worst, worst_rel);
      return;
    }
    const auto& n = r.nodes[static_cast<size_t>(r.first_bad)];
    std::printf("first divergence (node %d of %zu in execution order): %s (%s) nmse %.3g (bound %.3g) max_rel %.3g "
                "(bound %.3g)\n",
                r.first_bad + 1, r.nodes.size(), n.name.c_str(), n.op.c_str(), n.nmse, p->bound, n.max_rel, p->max_rel);
    bool inputs_ok = true;
    for (const auto& in : r.first_bad_inputs) {
      std::printf("  input %-48s (%s) nmse %.3g max_rel %.3g\n", in.name.c_str(), in.op.c_str(), in.nmse, in.max_rel);
      inputs_ok = inputs_ok && in.within(p->bound, p->max_rel);
    }
    std::printf("%s\n", inputs_ok ? "its inputs agree: the op itself is wrong" : "its inputs already differ");
    throw Error("diff: " + p->o.backend_b + " diverges from " + p->o.backend_a + " first at node '" + n.name + "' (" + n.op + ")");
  });
}

}  // namespace tandem::cli
