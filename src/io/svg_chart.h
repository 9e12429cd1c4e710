// Charts as inline SVG for self-contained HTML reports (no script or network needed to draw them):
// line charts with vertical event markers, and heat maps. Every chart is a <figure class="chart"
// id="chart-ID" data-points="N"> whose series are <polyline class="series" data-name=...>, so
// tests and readers can find the data in the page.
#pragma once
#include <string>
#include <vector>

namespace tandem::svg {

struct Series {
  std::string name;
  std::vector<double> x, y;  // non-finite points are left out
  bool dots = false;         // draw each point (sparse series such as validation loss)
};

struct Marker {
  double x = 0;
  std::string kind;   // CSS class: skip, rollback, resume, ...
  std::string label;  // shown on hover
};

struct LineChart {
  std::string id, title, x_label, y_label;
  std::vector<Series> series;
  std::vector<Marker> markers;
  bool log_y = false;  // when every value is positive
};

// rows x columns of values in [0, max]; column_x labels the columns.
struct HeatMap {
  std::string id, title, x_label, y_label;
  std::vector<std::string> row_names;
  std::vector<double> column_x;
  std::vector<std::vector<double>> values;  // [row][column]
};

std::string render(const LineChart& c);
std::string render(const HeatMap& h);
std::string escape(const std::string& s);  // HTML/XML text and attribute escaping
// The page around the charts: title, a style sheet, and a small hover read-out script.
std::string page(const std::string& title, const std::string& body);

}  // namespace tandem::svg
