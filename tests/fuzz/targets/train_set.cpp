// `tandem train --set key=value` (train/config.cpp): one --set per input line over the baby-gpt
// preset; values are JSON when they parse as JSON, else strings.
#include "fuzz_target.h"
#include "train/config.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(train_set) {
  std::vector<std::string> sets;
  std::string_view rest = fuzz::as_text(data, size);
  while (!rest.empty()) {
    const size_t nl = rest.find('\n');
    sets.emplace_back(rest.substr(0, nl));
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  }
  fuzz::expect_clean([&] { TrainConfig::load("baby-gpt", sets); }, "--set");
}
