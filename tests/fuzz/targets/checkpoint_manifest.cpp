// A checkpoint's manifest.json (train/checkpoint.cpp: checkpoint_problem, verify_checkpoint), in a
// directory holding one real file (a tiny run's config.json) so that listed names, sizes and
// digests matter.
#include <fstream>
#include <iterator>

#include "fuzz_target.h"
#include "train/checkpoint.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(checkpoint_manifest) {
  const auto dir = fuzz::scratch_dir() / "run" / "checkpoints" / "step_1";
  static const std::string config = [] {
    std::ifstream in(std::string(TANDEM_FUZZ_DATA_DIR) + "/checkpoint-config.json", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }();
  fuzz::write_file("run/checkpoints/step_1/config.json", config);
  const auto path = fuzz::write_file("run/checkpoints/step_1/manifest.json", fuzz::as_text(data, size));
  std::optional<std::string> problem;
  fuzz::require(fuzz::expect_clean([&] { problem = checkpoint_problem(dir); }, ""), "checkpoint_problem threw");
  if (!problem) {  // accepted: it lists only files of the checkpoint directory itself
    const nlohmann::json manifest = read_json_file(path);
    for (const auto& [name, info] : manifest["files"].items())
      fuzz::require(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
                    "a manifest naming a file outside the checkpoint was accepted: " + name);
  } else {
    fuzz::require(problem->find('\n') == std::string::npos, "a problem message spans lines: " + *problem);
    fuzz::require(problem->find(dir.string()) != std::string::npos, "a problem does not name the checkpoint: " + *problem);
  }
}
