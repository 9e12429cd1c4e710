// One fuzz target per parser of outside bytes (tests/fuzz/README.md). A target is one file,
// tests/fuzz/targets/<name>.cpp:
//   #include "fuzz_target.h"
//   TANDEM_FUZZ_TARGET(name) { ... feed data[0, size) to the parser, as tandem does ... }
// The same file builds as a libFuzzer executable (TANDEM_FUZZ_LIBFUZZER, scripts/fuzz.sh) and into
// tandem_fuzz_replay, which ctest runs over tests/fuzz/corpus/<name>/ without libFuzzer.
//
// What counts as a finding: any sanitizer report, a crash, a hang, an allocation beyond libFuzzer's
// limit, and any exception other than tandem::Error escaping the parser; an Error whose message
// does not name the culprit (file, key, field) is a finding too (expect_clean). Messages may quote
// the input's own bytes (a newline in a token): the CLI escapes those, so errors print as one line.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace tandem::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);
bool register_target(const char* name, TargetFn fn);  // the replay build's registry
TargetFn find_target(const std::string& name);

// A fresh scratch directory of this process (under $TMPDIR, removed at exit); parsers read files.
const std::filesystem::path& scratch_dir();
// Writes bytes to scratch_dir()/<file> and returns the path.
std::filesystem::path write_file(const std::string& file, std::string_view bytes);
inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs fn. Returns true if it returned, false if it threw tandem::Error with a one-line message
// containing `culprit`; aborts with a report on any other outcome.
bool expect_clean(const std::function<void()>& fn, const std::string& culprit);
// Aborts with `what` when cond is false: a property the parser promises did not hold.
void require(bool cond, const std::string& what);

}  // namespace tandem::fuzz

#ifdef TANDEM_FUZZ_LIBFUZZER
#define TANDEM_FUZZ_TARGET(name)                                                       \
  static void tandem_fuzz_body(const uint8_t* data, size_t size);                     \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {           \
    tandem_fuzz_body(data, size);                                                     \
    return 0;                                                                         \
  }                                                                                   \
  static void tandem_fuzz_body(const uint8_t* data, size_t size)
#else
#define TANDEM_FUZZ_TARGET(name)                                                       \
  static void tandem_fuzz_body(const uint8_t* data, size_t size);                     \
  [[maybe_unused]] static const bool tandem_fuzz_registered =                         \
      ::tandem::fuzz::register_target(#name, tandem_fuzz_body);                        \
  static void tandem_fuzz_body(const uint8_t* data, size_t size)
#endif
