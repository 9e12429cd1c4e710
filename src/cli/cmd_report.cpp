// `tandem report`: a run's metrics as one self-contained HTML file (train/run_report.h).
#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "train/run_report.h"

namespace tandem::cli {

void register_report(CLI::App& app) {
  auto* cmd = app.add_subcommand("report", "Write a run's metrics as one self-contained HTML page of charts");
  auto run = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--run", *run, "Run directory (holds metrics.jsonl, events.log)")->required();
  cmd->add_option("--out", *out, "HTML file to write")->required();
  cmd->callback([run, out] {
    const RunReport r = run_report(*run);
    write_file_atomic(*out, r.html);
    std::printf("report %s: %lld steps, %lld events, %zu charts, %lld malformed metrics line(s) skipped -> %s\n",
                run->c_str(), static_cast<long long>(r.records), static_cast<long long>(r.events), r.charts.size(),
                static_cast<long long>(r.malformed), out->c_str());
  });
}

}  // namespace tandem::cli
