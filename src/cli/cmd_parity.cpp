#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "qualify/parity.h"

namespace tandem::cli {

namespace {
void add_two_backend_options(CLI::App* cmd, qualify::TwoBackendOptions& o, std::string& backends) {
  cmd->add_option("--config", o.config, "Preset name or JSON file (as `tandem train`)")->capture_default_str();
  cmd->add_option("--data", o.data_dir, "Data directory from `tandem prepare`")->required();
  cmd->add_option("--backends", backends, "Two backends, the reference first: A,B (e.g. cpu,opencl)")->required();
  cmd->add_option("--set", o.sets, "Override a config key: key=value (repeatable)");
  cmd->add_option("--seed", o.seed, "Init and batch seed")->capture_default_str();
  cmd->add_option("--fault", o.fault, "Fault spec for a faulty:<backend> (op=NAME,kind=...)");
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
  auto* cmd = app.add_subcommand("parity", "Train on two backends from the same init and batches; compare losses step by step");
  struct Opts {
    qualify::TwoBackendOptions o;
    std::string backends;
    int64_t steps = 200;
    double tol = 1e-4;
  };
  auto p = std::make_shared<Opts>();
  add_two_backend_options(cmd, p->o, p->backends);
  cmd->add_option("--steps", p->steps, "Training steps")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--tol", p->tol, "Bound on |loss_A - loss_B| at every step (fp32: 1e-4)")->capture_default_str();
  cmd->callback([p] {
    split_backends(p->backends, p->o);
    const auto r = qualify::run_parity(p->o, p->steps, p->tol, true);
    std::printf("max |dloss| %.3g at step %lld (tolerance %.3g)\n", r.max_dloss, static_cast<long long>(r.worst_step), p->tol);
    std::printf("final parameter relative error %.3g (worst: %s)\n", r.param_rel_err, r.worst_param.c_str());
    if (r.pass) {
      std::printf("verdict: PASS (%s tracks %s for %lld steps)\n", p->o.backend_b.c_str(), p->o.backend_a.c_str(),
                  static_cast<long long>(p->steps));
      return;
    }
    std::printf("verdict: FAIL (first step over tolerance: %lld)\n", static_cast<long long>(r.first_bad_step));
    throw Error("parity: " + p->o.backend_b + " diverges from " + p->o.backend_a + " at step " +
                std::to_string(r.first_bad_step) + "; run `tandem diff` to find the op");
  });
}

void register_diff(CLI::App& app) {
  auto* cmd = app.add_subcommand("diff", "One forward+backward on two backends; name the first node that diverges");
  struct Opts {
    qualify::TwoBackendOptions o;
    std::string backends;
    double bound = 1e-8;
    bool all = false;
  };
  auto p = std::make_shared<Opts>();
  add_two_backend_options(cmd, p->o, p->backends);
  cmd->add_option("--tol", p->bound,
                  "NMSE bound per node, A taken as the reference (f32 backends agree to ~1e-11 on baby-gpt; a 1e-3 "
                  "relative error is 1e-6)")
      ->capture_default_str();
  cmd->add_flag("--all", p->all, "Print every node's error, not only the first divergence");
  cmd->callback([p] {
    split_backends(p->backends, p->o);
    const auto r = qualify::run_diff(p->o, p->bound);
    std::printf("loss: %s %.6f, %s %.6f\n", p->o.backend_a.c_str(), r.loss_a, p->o.backend_b.c_str(), r.loss_b);
    double worst = 0;
    for (const auto& n : r.nodes) {
      worst = std::max(worst, n.nmse);
      if (p->all) std::printf("  %-20s %-48s nmse %.3g\n", n.op.c_str(), n.name.c_str(), n.nmse);
    }
    if (r.first_bad < 0) {
      std::printf("all %zu nodes within nmse %.3g (worst %.3g): no divergence\n", r.nodes.size(), p->bound, worst);
      return;
    }
    const auto& n = r.nodes[static_cast<size_t>(r.first_bad)];
    std::printf("first divergence (node %d of %zu in execution order): %s (%s) nmse %.3g > %.3g\n", r.first_bad + 1,
                r.nodes.size(), n.name.c_str(), n.op.c_str(), n.nmse, p->bound);
    bool inputs_ok = true;
    for (const auto& in : r.first_bad_inputs) {
      std::printf("  input %-48s (%s) nmse %.3g\n", in.name.c_str(), in.op.c_str(), in.nmse);
      inputs_ok = inputs_ok && in.nmse <= p->bound;
    }
    std::printf("%s\n", inputs_ok ? "its inputs agree: the op itself is wrong" : "its inputs already differ");
    throw Error("diff: " + p->o.backend_b + " diverges from " + p->o.backend_a + " first at node '" + n.name + "' (" + n.op + ")");
  });
}

}  // namespace tandem::cli
