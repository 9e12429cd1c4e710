// `tandem report`: a run directory's metrics.jsonl (and events.log) as one self-contained HTML
// page of inline SVG charts (io/svg_chart.h): losses against steps and tokens, learning rate,
// gradient norm, throughput, guard events and resumes marked on the loss curve; expert load per
// MoE layer (max/mean over steps, and each expert's share over the evaluation steps) for
// DeepSeek runs; per-rank throughput and communication bytes for data-parallel runs; reward,
// accuracy, KL and completion length for runs that log them.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace tandem {

struct RunReport {
  std::string html;
  int64_t records = 0, events = 0;
  int64_t malformed = 0;            // metrics lines skipped (not JSON, not an object, no step, wrong types)
  std::vector<std::string> charts;  // ids of the charts with data
};

RunReport run_report(const std::filesystem::path& run_dir);

}  // namespace tandem
