// `tandem conform --html`: the conformance rows as one self-contained HTML page (io/svg_chart.h's
// page): an op x dtype matrix of verdicts, then every row with its error against its bound (a bar
// of error / tolerance on a log scale) and its status.
#pragma once
#include <string>
#include <vector>

#include "qualify/conform.h"

namespace tandem::qualify {

std::string conform_html(const std::string& backend, const std::vector<ConformRow>& rows);

}  // namespace tandem::qualify
