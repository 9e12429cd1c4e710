#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "backends/registry.h"
#include "cli/commands.h"
#include "core/error.h"
#include "qualify/conform.h"

#include <nlohmann/json.hpp>

namespace tandem::cli {

void register_conform(CLI::App& app) {
  auto* cmd = app.add_subcommand("conform", "Every op x dtype x shape case, forward and backward, against the float64 reference");
  struct Opts {
    std::string backend = "cpu", op, dtype, json, fault;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--backend", o->backend, "Backend to qualify (cpu, opencl, cuda, faulty:<backend>; `tandem backends` lists this build's)")->capture_default_str();
  cmd->add_option("--op", o->op, "Only this op's cases (and rows whose node is this op)");
  cmd->add_option("--dtype", o->dtype, "Only this dtype (default: f32 and bf16)")->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--json", o->json, "Also write the rows as JSON to this file");
  cmd->add_option("--fault", o->fault, "Fault spec for faulty:<backend> (op=NAME,kind=scale|bitflip|bf16|dropgrad,...)");
  cmd->callback([o] {
    auto backend = make_backend(o->backend, o->fault);
    qualify::ConformOptions opts;
    if (!o->op.empty()) opts.op = o->op;
    if (o->dtype == "f32") opts.dtypes = {DType::f32};
    if (o->dtype == "bf16") opts.dtypes = {DType::bf16};
    const auto rows = qualify::conform(*backend, opts);
    check(!rows.empty(), "conform: no case exercises op '", o->op, "'");

    std::printf("%-20s %-5s %-34s %-28s %-6s %10s %10s  %s\n", "op", "dtype", "case", "node", "metric", "error",
                "tolerance", "status");
    std::map<std::string, std::map<qualify::Status, int>> by_dtype;
    std::map<std::string, int> failing_ops;
    for (const auto& r : rows) {
      std::printf("%-20s %-5s %-34s %-28s %-6s %10.3g %10.3g  %s%s%s\n", r.op.c_str(), r.dtype.c_str(),
                  r.case_name.c_str(), r.node.c_str(), r.metric.c_str(), r.error, r.tolerance, qualify::status_name(r.status),
                  r.status == qualify::Status::fail ? ": " : "", r.status == qualify::Status::fail ? r.detail.c_str() : "");
      ++by_dtype[r.dtype][r.status];
      if (r.status == qualify::Status::fail) ++failing_ops[r.op];
    }
    std::printf("\nconform %s (%s):\n", backend->name().c_str(), o->op.empty() ? "all ops" : o->op.c_str());
    for (auto& [dt, counts] : by_dtype)
      std::printf("  %-5s %4d PASS  %4d FAIL  %4d UNSUPPORTED\n", dt.c_str(), counts[qualify::Status::pass],
                  counts[qualify::Status::fail], counts[qualify::Status::unsupported]);
    if (!failing_ops.empty()) {
      std::printf("  failing ops:");
      for (auto& [op, n] : failing_ops) std::printf(" %s (%d)", op.c_str(), n);
      std::printf("\n");
    }
    if (!o->json.empty()) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& r : rows)
        j.push_back({{"op", r.op}, {"dtype", r.dtype}, {"case", r.case_name}, {"node", r.node}, {"metric", r.metric},
                     {"error", std::isfinite(r.error) ? nlohmann::json(r.error) : nlohmann::json("inf")},
                     {"tolerance", r.tolerance}, {"status", qualify::status_name(r.status)}, {"detail", r.detail}});
      std::ofstream f(o->json);
      check(f.good(), o->json, ": cannot open for writing");
      f << nlohmann::json{{"backend", backend->name()}, {"rows", j}}.dump(1) << "\n";
    }
    if (!failing_ops.empty()) throw Error("conform: " + std::to_string(failing_ops.size()) + " op(s) failed on backend " + backend->name());
  });
}

}  // namespace tandem::cli
