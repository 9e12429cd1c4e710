#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "backends/faulty/faulty_backend.h"
#include "backends/registry.h"
#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "qualify/conform.h"
#include "qualify/conform_html.h"
#include "qualify/optimizer_conform.h"

#include <nlohmann/json.hpp>

namespace tandem::cli {

namespace {
// Headroom, per op class and dtype: the worst value of each metric over the rows that ran (pass or
// fail), next to the bound, and the row it came from.
void print_class_summary(const std::vector<qualify::ConformRow>& rows) {
  struct Worst {
    double nmse = 0, nmse_bound = 0, max_rel = 0, max_rel_bound = 0;
    std::string nmse_at, max_rel_at;
    int rows = 0;
  };
  std::map<std::pair<std::string, std::string>, Worst> by_class;
  for (const auto& r : rows) {
    if (r.status == qualify::Status::unsupported || r.status == qualify::Status::fallback) continue;
    Worst& w = by_class[{r.dtype, r.klass}];
    w.nmse_bound = r.tolerance;
    w.max_rel_bound = r.max_rel_tolerance;
    ++w.rows;
    if (w.nmse_at.empty() || !(r.error <= w.nmse)) {
      w.nmse = r.error;
      w.nmse_at = r.case_name + " " + r.node;
    }
    if (w.max_rel_at.empty() || !(r.max_rel <= w.max_rel)) {
      w.max_rel = r.max_rel;
      w.max_rel_at = r.case_name + " " + r.node;
    }
  }
  if (by_class.empty()) return;
  std::printf("\nworst per class (rows that ran; bound in parentheses):\n");
  std::printf("  %-5s %-22s %5s %22s  %-40s %22s  %s\n", "dtype", "class", "rows", "nmse (bound)", "at", "max_rel (bound)",
              "at");
  for (const auto& [key, w] : by_class) {
    char nm[48], mr[48];
    std::snprintf(nm, sizeof nm, "%.2g (%.2g)", w.nmse, w.nmse_bound);
    std::snprintf(mr, sizeof mr, "%.2g (%.2g)", w.max_rel, w.max_rel_bound);
    std::printf("  %-5s %-22s %5d %22s  %-40s %22s  %s\n", key.first.c_str(), key.second.c_str(), w.rows, nm,
                w.nmse_at.c_str(), mr, w.max_rel_at.c_str());
  }
}
}  // namespace

void register_conform(CLI::App& app) {
  auto* cmd = app.add_subcommand("conform", "Every op x dtype x shape case, forward and backward, against the float64 reference");
  struct Opts {
    std::string backend = "cpu", op, dtype, json, html, fault;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--backend", o->backend, "Backend to qualify (cpu, opencl, cuda, faulty:<backend>, plugin:<path.so> or a TANDEM_BACKEND_PATH plugin name; `tandem backends` lists them)")->capture_default_str();
  add_fallback_option(cmd);
  cmd->add_option("--op", o->op, "Only this op's cases (and rows whose node is this op)");
  cmd->add_option("--dtype", o->dtype,
                  "Only this dtype (default: all three; q8_0 rows: matmuls and embeddings with a q8_0 weight, f32 "
                  "activations)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0"}));
  cmd->add_option("--json", o->json, "Also write the rows as JSON to this file");
  cmd->add_option("--html", o->html, "Also write the table as a self-contained HTML page (op x dtype matrix, every row)");
  cmd->add_option("--fault", o->fault,
                  "Fault spec for faulty:<backend>: op=NAME,kind=scale|bitflip|bf16|dropgrad|element|tile|stuck[,...]"
                  "[,every=N][,p=P] (NAME: a graph op, or adamw, sum_squares, axpy)");
  cmd->callback([o] {
    auto backend = make_backend(o->backend, o->fault);
    qualify::ConformOptions opts;
    if (!o->op.empty()) opts.op = o->op;
    if (o->dtype == "f32") opts.dtypes = {DType::f32};
    if (o->dtype == "bf16") opts.dtypes = {DType::bf16};
    if (o->dtype == "q8_0") opts.dtypes = {DType::q8_0};
    auto* faulty = dynamic_cast<FaultyBackend*>(backend.get());
    if (faulty && opts.op && (faulty->spec().on_optimizer() || qualify::is_optimizer_kernel(*opts.op)))
      check(faulty->spec().op == *opts.op, "conform: --fault op=", faulty->spec().op, " is not in the rows --op ", *opts.op,
            " selects");
    const auto rows = qualify::conform(*backend, opts);
    check(!rows.empty(), "conform: no case exercises op '", o->op, "'");
    // A fault on an op outside the rows run would rehearse nothing (conform asks `supports` of
    // every row's node, so `used` says whether one of them was the faulted op).
    if (faulty)
      check(faulty->used(), "conform: --fault op=", faulty->spec().op, " is in none of the rows run (",
            o->op.empty() ? "all ops" : "--op " + o->op, o->dtype.empty() ? "" : ", --dtype " + o->dtype, ")");

    std::printf("%-20s %-5s %-34s %-28s %-6s %10s %10s %10s %10s %10s  %s\n", "op", "dtype", "case", "node", "metric",
                "error", "tolerance", "max_rel", "bound", "format", "status");
    std::map<std::string, std::map<qualify::Status, int>> by_dtype;
    std::map<std::string, int> failing_ops;
    for (const auto& r : rows) {
      std::printf("%-20s %-5s %-34s %-28s %-6s %10.3g %10.3g %10.3g %10.3g %10.3g  %s%s%s\n", r.op.c_str(),
                  r.dtype.c_str(), r.case_name.c_str(), r.node.c_str(), r.metric.c_str(), r.error, r.tolerance,
                  r.max_rel, r.max_rel_tolerance, r.format_error,
                  qualify::status_name(r.status),
                  r.status == qualify::Status::fail ? ": " : "", r.status == qualify::Status::fail ? r.detail.c_str() : "");
      ++by_dtype[r.dtype][r.status];
      if (r.status == qualify::Status::fail) ++failing_ops[r.op];
    }
    print_class_summary(rows);
    if (faulty)
      std::printf("\n%s: %s fired on %lld of %lld executions of %s\n", faulty->name().c_str(),
                  faulty->spec().describe().c_str(), static_cast<long long>(faulty->injected()),
                  static_cast<long long>(faulty->executions()), faulty->spec().op.c_str());
    std::printf("\nconform %s (%s):\n", backend->name().c_str(), o->op.empty() ? "all ops" : o->op.c_str());
    for (auto& [dt, counts] : by_dtype)
      std::printf("  %-5s %4d PASS  %4d FAIL  %4d UNSUPPORTED%s\n", dt.c_str(), counts[qualify::Status::pass],
                  counts[qualify::Status::fail], counts[qualify::Status::unsupported],
                  counts[qualify::Status::fallback]
                      ? ("  " + std::to_string(counts[qualify::Status::fallback]) + " FALLBACK").c_str()
                      : "");
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
                     {"tolerance", r.tolerance},
                     {"max_rel", std::isfinite(r.max_rel) ? nlohmann::json(r.max_rel) : nlohmann::json("inf")},
                     {"max_rel_tolerance", r.max_rel_tolerance}, {"class", r.klass},
                     {"format_error", std::isfinite(r.format_error) ? nlohmann::json(r.format_error) : nlohmann::json("inf")},
                     {"status", qualify::status_name(r.status)}, {"detail", r.detail}});
      std::ofstream f(o->json);
      check(f.good(), o->json, ": cannot open for writing");
      f << nlohmann::json{{"backend", backend->name()}, {"rows", j}}.dump(1) << "\n";
    }
    if (!o->html.empty()) write_file_atomic(o->html, qualify::conform_html(backend->name(), rows));
    if (!failing_ops.empty()) throw Error("conform: " + std::to_string(failing_ops.size()) + " op(s) failed on backend " + backend->name());
  });
}

}  // namespace tandem::cli
