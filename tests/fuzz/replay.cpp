// tandem_fuzz_replay TARGET PATH...: runs every file of each PATH (a file, or a directory's files in
// name order) through the fuzz target TARGET, as libFuzzer would, without libFuzzer. ctest runs it
// over each tests/fuzz/corpus/<target>/ (seeds and every crasher found), so a fixed finding stays fixed.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_target.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TARGET PATH...\n", argv[0]);
    return 2;
  }
  const auto fn = tandem::fuzz::find_target(argv[1]);
  if (!fn) {
    std::fprintf(stderr, "%s: no fuzz target '%s' (tests/fuzz/targets/)\n", argv[0], argv[1]);
    return 2;
  }
  std::vector<fs::path> files;
  for (int i = 2; i < argc; ++i) {
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.emplace_back(argv[i]);
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "%s: no inputs for '%s'\n", argv[0], argv[1]);
    return 1;
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay %s %s (%zu bytes)\n", argv[1], f.filename().c_str(), bytes.size());
    fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("%s: %zu inputs replayed cleanly\n", argv[1], files.size());
  return 0;
}
