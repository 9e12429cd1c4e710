#include "qualify/conform_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "io/svg_chart.h"

namespace tandem::qualify {

namespace {

std::string num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return "inf";
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// error / tolerance on a log scale from 1e-6 to 1e2 (1 is the bound: the dashed line).
std::string ratio_bar(double error, double tolerance) {
  const double ratio = tolerance > 0 ? error / tolerance : (error == 0 ? 0 : INFINITY);
  const double f = ratio <= 0 ? 0 : std::isfinite(ratio) ? std::clamp((std::log10(ratio) + 6) / 8, 0.0, 1.0) : 1.0;
  const char* color = ratio <= 1 ? "#2ca02c" : "#d62728";
  char b[320];
  std::snprintf(b, sizeof b,
                "<svg class=\"ratio\" width=\"120\" height=\"10\" data-ratio=\"%s\"><rect x=\"0\" y=\"1\" width=\"%.1f\" "
                "height=\"8\" fill=\"%s\"/><line x1=\"90\" x2=\"90\" y1=\"0\" y2=\"10\" stroke=\"#000\" "
                "stroke-dasharray=\"2 1\"/></svg>",
                num(ratio).c_str(), 120 * f, color);
  return b;
}

}  // namespace

std::string conform_html(const std::string& backend, const std::vector<ConformRow>& rows) {
  // Matrix: the worst verdict per op and dtype (FAIL over UNSUPPORTED over PASS), with counts.
  std::map<std::string, std::map<std::string, std::map<Status, int>>> matrix;
  std::map<std::string, int> dtypes;
  std::map<Status, int> totals;
  for (const auto& r : rows) {
    ++matrix[r.op][r.dtype][r.status];
    dtypes[r.dtype] = 1;
    ++totals[r.status];
  }
  std::string body = "<h1>tandem conform: " + svg::escape(backend) + "</h1>\n<p class=\"note\">" +
                     std::to_string(rows.size()) + " rows: " + std::to_string(totals[Status::pass]) + " PASS, " +
                     std::to_string(totals[Status::fail]) + " FAIL, " + std::to_string(totals[Status::unsupported]) +
                     " UNSUPPORTED. Error is the row's metric (nmse or exact) against the float64 reference; the bar is "
                     "error / tolerance on a log scale (1e-6 .. 1e2; the dashed line is the bound).</p>\n";
  body += "<h2>Op x dtype</h2>\n<table id=\"matrix\"><tr><th class=\"l\">op</th>";
  for (const auto& [dt, _] : dtypes) body += "<th>" + svg::escape(dt) + "</th>";
  body += "</tr>";
  for (const auto& [op, by_dt] : matrix) {
    body += "<tr><td class=\"l\">" + svg::escape(op) + "</td>";
    for (const auto& [dt, _] : dtypes) {
      auto it = by_dt.find(dt);
      if (it == by_dt.end()) {
        body += "<td></td>";
        continue;
      }
      const auto& c = it->second;
      const Status worst = c.contains(Status::fail) ? Status::fail : c.contains(Status::unsupported) ? Status::unsupported : Status::pass;
      int n = 0;
      for (const auto& [s, k] : c) n += k;
      body += std::string("<td class=\"") + status_name(worst) + "\">" + status_name(worst) + " (" + std::to_string(n) + ")</td>";
    }
    body += "</tr>";
  }
  body += "</table>\n<h2>Rows</h2>\n<table id=\"rows\"><tr><th class=\"l\">op</th><th class=\"l\">dtype</th>"
          "<th class=\"l\">case</th><th class=\"l\">node</th><th class=\"l\">metric</th><th>error</th><th>tolerance</th>"
          "<th>error / tolerance</th><th>max_rel</th><th>bound</th><th class=\"l\">status</th><th class=\"l\">detail</th></tr>";
  for (const auto& r : rows) {
    const char* s = status_name(r.status);
    body += "<tr class=\"row " + std::string(s) + "\"><td class=\"l\">" + svg::escape(r.op) + "</td><td class=\"l\">" +
            svg::escape(r.dtype) + "</td><td class=\"l\">" + svg::escape(r.case_name) + "</td><td class=\"l\">" +
            svg::escape(r.node) + "</td><td class=\"l\">" + svg::escape(r.metric) + "</td><td>" + num(r.error) + "</td><td>" +
            num(r.tolerance) + "</td><td>" + (r.status == Status::unsupported ? "" : ratio_bar(r.error, r.tolerance)) +
            "</td><td>" + num(r.max_rel) + "</td><td>" + num(r.max_rel_tolerance) + "</td><td class=\"l\">" + s +
            "</td><td class=\"l\">" + svg::escape(r.status == Status::fail ? r.detail : "") + "</td></tr>";
  }
  body += "</table>\n";
  return svg::page("tandem conform: " + backend, body);
}

}  // namespace tandem::qualify
