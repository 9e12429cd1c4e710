#include "train/run_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "io/svg_chart.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

struct Record {
  int64_t step = 0;
  std::map<std::string, double> v;  // numeric fields
  bool skipped = false;
  nlohmann::json moe;  // DeepSeek routing loads, when logged
};

struct Event {
  int64_t step;
  std::string kind, detail;
};

// Numeric top-level fields the report knows; a line where one of them is not a number is malformed.
const char* kNumeric[] = {"loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "step_ms", "mtp_loss",
                          "tokens_per_s_per_rank", "comm_bytes", "reward", "accuracy", "kl", "completion_length"};

bool parse_record(const std::string& line, std::vector<Record>& records, std::vector<Event>& events) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const std::exception&) {
    return false;
  }
  if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) return false;
  const int64_t step = j["step"].get<int64_t>();
  if (j.contains("event")) {
    if (!j["event"].is_string()) return false;
    events.push_back({step, j["event"].get<std::string>(), j.value("detail", std::string())});
    return true;
  }
  Record r;
  r.step = step;
  for (const char* k : kNumeric) {
    if (!j.contains(k)) continue;
    const auto& v = j[k];
    if (v.is_number()) r.v[k] = v.get<double>();
    else if (!v.is_null()) return false;  // a NaN loss is written as null
  }
  if (j.contains("skipped")) r.skipped = j["skipped"].is_boolean() && j["skipped"].get<bool>();
  if (j.contains("moe")) {
    if (!j["moe"].is_object()) return false;
    r.moe = j["moe"];
  }
  // A rollback replays steps: the replayed records replace the abandoned ones on the curves (the
  // events table and markers keep what happened).
  while (!records.empty() && records.back().step >= step) records.pop_back();
  records.push_back(std::move(r));
  return true;
}

}  // namespace

RunReport run_report(const fs::path& run_dir) {
  const fs::path file = run_dir / "metrics.jsonl";
  std::ifstream in(file);
  check(in.good(), file.string(), ": cannot open (is ", run_dir.string(), " a run directory?)");
  RunReport rep;
  std::vector<Record> records;
  std::vector<Event> events;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!parse_record(line, records, events)) ++rep.malformed;
  }
  rep.records = static_cast<int64_t>(records.size());  // after replays replaced abandoned steps
  rep.events = static_cast<int64_t>(events.size());

  // Resumes are in events.log ("resumed from step_N"): the run continued from step N.
  std::vector<svg::Marker> markers;
  if (std::ifstream log(run_dir / "events.log"); log.good()) {
    static const std::regex resumed(R"(resumed from step_(\d+))");
    std::smatch m;
    while (std::getline(log, line))
      if (std::regex_search(line, m, resumed)) markers.push_back({std::stod(m[1]), "resume", "resumed from step " + m[1].str()});
  }
  for (const auto& e : events)
    if (e.kind != "parallel")  // the run's layout (world size, ZeRO), not something that happened
      markers.push_back({static_cast<double>(e.step), e.kind == "skip" || e.kind == "rollback" ? e.kind : "event",
                       "step " + std::to_string(e.step) + ": " + e.kind + (e.detail.empty() ? "" : ": " + e.detail)});

  auto series = [&](const std::string& key, const std::string& name, bool by_tokens = false, bool dots = false) {
    svg::Series s{name, {}, {}, dots};
    double tokens = 0;
    for (const auto& r : records) {
      // Tokens of a step: tokens/s x step time (the trainer computes tokens/s as tokens / time).
      if (r.v.contains("tokens_per_s") && r.v.contains("step_ms")) tokens += std::round(r.v.at("tokens_per_s") * r.v.at("step_ms") / 1e3);
      auto it = r.v.find(key);
      if (it == r.v.end()) continue;
      s.x.push_back(by_tokens ? tokens : static_cast<double>(r.step));
      s.y.push_back(it->second);
    }
    return s;
  };
  std::string body;
  auto add = [&](const svg::LineChart& c) {
    size_t n = 0;
    for (const auto& s : c.series) n += s.x.size();
    if (n == 0) return;
    body += svg::render(c);
    rep.charts.push_back(c.id);
  };
  auto loss_series = [&](bool by_tokens) {
    std::vector<svg::Series> s{series("loss", "train loss", by_tokens), series("val_loss", "val loss", by_tokens, true)};
    if (auto mtp = series("mtp_loss", "mtp loss", by_tokens); !mtp.x.empty()) s.push_back(mtp);
    return s;
  };
  std::vector<svg::Marker> loss_markers = markers;
  for (const auto& r : records)
    if (r.skipped && std::none_of(events.begin(), events.end(), [&](const Event& e) { return e.step == r.step && e.kind == "skip"; }))
      loss_markers.push_back({static_cast<double>(r.step), "skip", "step " + std::to_string(r.step) + ": update skipped"});
  body += "<h2>Training</h2>\n";
  add({"loss", "Loss", "step", "cross-entropy", loss_series(false), loss_markers});
  add({"loss-tokens", "Loss against tokens", "tokens", "cross-entropy", loss_series(true), {}});
  add({"lr", "Learning rate", "step", "lr", {series("lr", "lr")}, {}});
  add({"grad-norm", "Gradient norm (before clipping)", "step", "norm", {series("grad_norm", "grad norm")}, markers, true});
  add({"tokens-per-s", "Throughput", "step", "tokens/s", {series("tokens_per_s", "tokens/s")}, {}});

  // DeepSeek: max/mean expert load per MoE layer every step; each expert's share at eval steps.
  std::vector<std::string> layers;
  for (const auto& r : records)
    if (r.moe.is_object())
      for (const auto& [layer, v] : r.moe.items())
        if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers.push_back(layer);
  if (!layers.empty()) {
    body += "<h2>Expert load (MoE layers)</h2>\n";
    svg::LineChart load{"moe-max-over-mean", "Expert load: max / mean per MoE layer", "step", "max / mean", {}, {}};
    for (const auto& layer : layers) {
      svg::Series s{layer, {}, {}};
      for (const auto& r : records)
        if (r.moe.contains(layer) && r.moe[layer].is_object() && r.moe[layer].contains("max_over_mean") &&
            r.moe[layer]["max_over_mean"].is_number()) {
          s.x.push_back(static_cast<double>(r.step));
          s.y.push_back(r.moe[layer]["max_over_mean"].get<double>());
        }
      load.series.push_back(std::move(s));
    }
    add(load);
    for (size_t li = 0; li < layers.size(); ++li) {
      const std::string& layer = layers[li];
      svg::HeatMap h{"moe-share-" + std::to_string(li), "Expert share, " + layer, "step", "expert", {}, {}, {}};
      for (const auto& r : records) {
        if (!r.moe.contains(layer) || !r.moe[layer].is_object() || !r.moe[layer].contains("fraction")) continue;
        const auto& f = r.moe[layer]["fraction"];
        if (!f.is_array()) continue;
        if (h.values.empty()) {
          h.values.resize(f.size());
          for (size_t e = 0; e < f.size(); ++e) h.row_names.push_back(std::to_string(e));
        }
        if (f.size() != h.values.size()) continue;
        h.column_x.push_back(static_cast<double>(r.step));
        for (size_t e = 0; e < f.size(); ++e) h.values[e].push_back(f[e].is_number() ? f[e].get<double>() : NAN);
      }
      if (h.column_x.empty()) continue;
      body += svg::render(h);
      rep.charts.push_back(h.id);
    }
  }
  // Data parallel.
  if (!series("tokens_per_s_per_rank", "").x.empty() || !series("comm_bytes", "").x.empty()) {
    body += "<h2>Data parallel</h2>\n";
    add({"tokens-per-s-per-rank", "Throughput per rank", "step", "tokens/s", {series("tokens_per_s_per_rank", "per rank")}, {}});
    add({"comm-bytes", "Communication (bytes sent by rank 0 per step)", "step", "bytes", {series("comm_bytes", "bytes")}, {}});
  }
  // Reinforcement learning (GRPO) runs.
  if (!series("reward", "").x.empty()) {
    body += "<h2>GRPO</h2>\n";
    for (const char* k : {"reward", "accuracy", "kl", "completion_length"}) add({k, k, "step", k, {series(k, k)}, {}});
  }

  std::string head = "<h1>tandem run report</h1>\n<p class=\"note\">" + svg::escape(run_dir.string()) + ": " +
                     std::to_string(rep.records) + " steps logged, " + std::to_string(rep.events) + " events, " +
                     std::to_string(rep.malformed) + " malformed metrics line(s) skipped";
  if (!records.empty())
    head += "; steps " + std::to_string(records.front().step) + " to " + std::to_string(records.back().step);
  head += ". Markers on the loss curve: <span style=\"color:#e6a000\">skipped updates</span>, "
          "<span style=\"color:#d62728\">rollbacks</span>, <span style=\"color:#2ca02c\">resumes</span>.</p>\n";
  if (!events.empty()) {
    head += "<table><tr><th>step</th><th class=\"l\">event</th><th class=\"l\">detail</th></tr>";
    for (const auto& e : events)
      head += "<tr><td>" + std::to_string(e.step) + "</td><td class=\"l\">" + svg::escape(e.kind) + "</td><td class=\"l\">" +
              svg::escape(e.detail) + "</td></tr>";
    head += "</table>\n";
  }
  rep.html = svg::page("tandem report: " + run_dir.filename().string(), head + body);
  return rep;
}

}  // namespace tandem
