#include "io/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <tuple>

namespace tandem::svg {

namespace {

constexpr double kW = 720, kH = 300, kLeft = 70, kRight = 20, kTop = 30, kBottom = 45;
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

std::string px(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// About `n` round tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi, int n) {
  std::vector<double> t;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

struct Scale {
  double lo, hi, a, b;  // value range -> pixel range
  bool log;
  double operator()(double v) const {
    const double f = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    return a + f * (b - a);
  }
};

std::pair<double, double> padded(double lo, double hi) {
  if (!(hi > lo)) return {lo - (lo == 0 ? 1 : std::abs(lo) * 0.1), hi + (hi == 0 ? 1 : std::abs(hi) * 0.1)};
  return {lo, hi};
}

std::string axes(const std::string& title, const std::string& xl, const std::string& yl, const Scale& sx, const Scale& sy) {
  std::string s;
  s += "<text class=\"title\" x=\"" + px(kLeft) + "\" y=\"18\">" + escape(title) + "</text>";
  s += "<rect class=\"plot\" x=\"" + px(kLeft) + "\" y=\"" + px(kTop) + "\" width=\"" + px(kW - kLeft - kRight) +
       "\" height=\"" + px(kH - kTop - kBottom) + "\"/>";
  for (double v : ticks(sx.lo, sx.hi, 6)) {
    s += "<line class=\"grid\" x1=\"" + px(sx(v)) + "\" x2=\"" + px(sx(v)) + "\" y1=\"" + px(kTop) + "\" y2=\"" +
         px(kH - kBottom) + "\"/>";
    s += "<text class=\"tick\" x=\"" + px(sx(v)) + "\" y=\"" + px(kH - kBottom + 15) + "\" text-anchor=\"middle\">" + num(v) + "</text>";
  }
  std::vector<double> yt;
  if (sy.log) {
    for (double d = std::floor(std::log10(sy.lo)); d <= std::ceil(std::log10(sy.hi)); ++d)
      for (double m : {1.0, 2.0, 5.0})
        if (const double v = m * std::pow(10.0, d); v >= sy.lo && v <= sy.hi) yt.push_back(v);
  } else {
    yt = ticks(sy.lo, sy.hi, 5);
  }
  for (double v : yt) {
    s += "<line class=\"grid\" x1=\"" + px(kLeft) + "\" x2=\"" + px(kW - kRight) + "\" y1=\"" + px(sy(v)) + "\" y2=\"" +
         px(sy(v)) + "\"/>";
    s += "<text class=\"tick\" x=\"" + px(kLeft - 5) + "\" y=\"" + px(sy(v) + 4) + "\" text-anchor=\"end\">" + num(v) + "</text>";
  }
  s += "<text class=\"label\" x=\"" + px((kLeft + kW - kRight) / 2) + "\" y=\"" + px(kH - 8) + "\" text-anchor=\"middle\">" +
       escape(xl) + "</text>";
  s += "<text class=\"label\" transform=\"translate(14," + px((kTop + kH - kBottom) / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + escape(yl) + "</text>";
  return s;
}

}  // namespace

std::string escape(const std::string& in) {
  std::string s;
  for (char c : in) {
    switch (c) {
      case '&': s += "&amp;"; break;
      case '<': s += "&lt;"; break;
      case '>': s += "&gt;"; break;
      case '"': s += "&quot;"; break;
      default: s += c;
    }
  }
  return s;
}

std::string render(const LineChart& c) {
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  size_t points = 0;
  bool positive = true;
  for (const auto& s : c.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]), y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
        positive = positive && s.y[i] > 0;
        ++points;
      }
  std::string out = "<figure class=\"chart\" id=\"chart-" + escape(c.id) + "\" data-points=\"" + std::to_string(points) + "\">";
  if (points == 0) return out + "<figcaption>" + escape(c.title) + ": no data</figcaption></figure>";
  const bool log = c.log_y && positive && y1 / y0 > 10;
  std::tie(x0, x1) = padded(x0, x1);
  std::tie(y0, y1) = padded(y0, y1);
  if (!log) {
    const double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
  }
  const Scale sx{x0, x1, kLeft, kW - kRight, false}, sy{y0, y1, kH - kBottom, kTop, log};
  out += "<svg viewBox=\"0 0 " + px(kW) + " " + px(kH) + "\" width=\"" + px(kW) + "\" height=\"" + px(kH) +
         "\" data-x0=\"" + num(x0) + "\" data-x1=\"" + num(x1) + "\" data-left=\"" + px(kLeft) + "\" data-right=\"" +
         px(kW - kRight) + "\">";
  out += axes(c.title, c.x_label, c.y_label, sx, sy);
  for (const auto& m : c.markers) {
    if (!(m.x >= x0 && m.x <= x1)) continue;
    out += "<line class=\"marker " + escape(m.kind) + "\" x1=\"" + px(sx(m.x)) + "\" x2=\"" + px(sx(m.x)) + "\" y1=\"" +
           px(kTop) + "\" y2=\"" + px(kH - kBottom) + "\"><title>" + escape(m.label) + "</title></line>";
  }
  for (size_t k = 0; k < c.series.size(); ++k) {
    const auto& s = c.series[k];
    const char* color = kColors[k % std::size(kColors)];
    std::string pts;
    size_t n = 0;
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && (!log || s.y[i] > 0)) {
        pts += (n++ ? " " : "") + px(sx(s.x[i])) + "," + px(sy(s.y[i]));
        if (s.dots)
          out += "<circle cx=\"" + px(sx(s.x[i])) + "\" cy=\"" + px(sy(s.y[i])) + "\" r=\"3\" fill=\"" + color + "\"><title>" +
                 escape(s.name) + " " + num(s.x[i]) + ": " + num(s.y[i]) + "</title></circle>";
      }
    out += "<polyline class=\"series\" data-name=\"" + escape(s.name) + "\" data-n=\"" + std::to_string(n) +
           "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>";
    out += "<text class=\"legend\" x=\"" + px(kW - kRight - 5) + "\" y=\"" + px(kTop + 14 + 14 * k) +
           "\" text-anchor=\"end\" fill=\"" + color + "\">" + escape(s.name) + "</text>";
  }
  out += "<text class=\"readout\" x=\"" + px(kLeft + 5) + "\" y=\"" + px(kTop + 14) + "\"></text>";
  return out + "</svg></figure>";
}

std::string render(const HeatMap& h) {
  const size_t rows = h.values.size(), cols = h.column_x.size();
  double vmax = 0;
  size_t points = 0;
  for (const auto& r : h.values)
    for (double v : r)
      if (std::isfinite(v)) vmax = std::max(vmax, v), ++points;
  std::string out = "<figure class=\"chart heatmap\" id=\"chart-" + escape(h.id) + "\" data-points=\"" + std::to_string(points) + "\">";
  if (points == 0) return out + "<figcaption>" + escape(h.title) + ": no data</figcaption></figure>";
  const double cw = (kW - kLeft - kRight) / static_cast<double>(cols), ch = (kH - kTop - kBottom) / static_cast<double>(rows);
  out += "<svg viewBox=\"0 0 " + px(kW) + " " + px(kH) + "\" width=\"" + px(kW) + "\" height=\"" + px(kH) + "\">";
  out += "<text class=\"title\" x=\"" + px(kLeft) + "\" y=\"18\">" + escape(h.title) + " (darkest: " + num(vmax) + ")</text>";
  for (size_t r = 0; r < rows; ++r) {
    out += "<text class=\"tick\" x=\"" + px(kLeft - 5) + "\" y=\"" + px(kTop + ch * (r + 0.5) + 4) + "\" text-anchor=\"end\">" +
           escape(h.row_names[r]) + "</text>";
    for (size_t c = 0; c < cols && c < h.values[r].size(); ++c) {
      const double v = h.values[r][c], f = vmax > 0 && std::isfinite(v) ? v / vmax : 0;
      char fill[16];
      std::snprintf(fill, sizeof fill, "#%02x%02x%02x", static_cast<int>(255 - 224 * f), static_cast<int>(255 - 180 * f), 255);
      out += "<rect class=\"cell\" x=\"" + px(kLeft + cw * c) + "\" y=\"" + px(kTop + ch * r) + "\" width=\"" + px(cw + 0.5) +
             "\" height=\"" + px(ch + 0.5) + "\" fill=\"" + fill + "\"><title>" + escape(h.row_names[r]) + ", " +
             escape(h.x_label) + " " + num(h.column_x[c]) + ": " + num(v) + "</title></rect>";
    }
  }
  const size_t every = std::max<size_t>(1, cols / 8);
  for (size_t c = 0; c < cols; c += every)
    out += "<text class=\"tick\" x=\"" + px(kLeft + cw * (c + 0.5)) + "\" y=\"" + px(kH - kBottom + 15) +
           "\" text-anchor=\"middle\">" + num(h.column_x[c]) + "</text>";
  out += "<text class=\"label\" x=\"" + px((kLeft + kW - kRight) / 2) + "\" y=\"" + px(kH - 8) + "\" text-anchor=\"middle\">" +
         escape(h.x_label) + "</text>";
  out += "<text class=\"label\" transform=\"translate(14," + px((kTop + kH - kBottom) / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + escape(h.y_label) + "</text>";
  return out + "</svg></figure>";
}

std::string page(const std::string& title, const std::string& body) {
  return R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>)" +
         escape(title) + R"(</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
.chart { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
.chart svg { background: #fff; border: 1px solid #ddd; }
.plot { fill: none; stroke: #999; } .grid { stroke: #eee; } .tick { font-size: 11px; fill: #555; }
.title { font-weight: 600; } .label { font-size: 12px; fill: #333; } .legend { font-size: 12px; }
.readout { font-size: 12px; fill: #000; }
.marker { stroke-width: 1.5; stroke-dasharray: 4 3; } .marker.skip { stroke: #e6a000; }
.marker.rollback { stroke: #d62728; } .marker.resume { stroke: #2ca02c; } .marker.event { stroke: #888; }
table { border-collapse: collapse; font-size: 12px; } td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.PASS { background: #e3f6e3; } .FAIL { background: #fbd5d5; } .UNSUPPORTED { background: #eee; } .FALLBACK { background: #fff2cc; }
.note { color: #666; }
</style></head><body>
)" + body +
         R"(
<script>
// Hover read-out: the x value under the pointer, from each line chart's own axis range.
for (const svg of document.querySelectorAll('figure.chart svg[data-x0]')) {
  const x0 = +svg.dataset.x0, x1 = +svg.dataset.x1, left = +svg.dataset.left, right = +svg.dataset.right;
  const out = svg.querySelector('.readout');
  svg.addEventListener('mousemove', (e) => {
    const box = svg.getBoundingClientRect();
    const px = (e.clientX - box.left) * svg.viewBox.baseVal.width / box.width;
    out.textContent = px >= left && px <= right ? 'x = ' + (x0 + (px - left) / (right - left) * (x1 - x0)).toPrecision(5) : '';
  });
}
</script>
</body></html>
)";
}

}  // namespace tandem::svg
