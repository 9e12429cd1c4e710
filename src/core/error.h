// One exception type for every user-facing failure. The message must name the culprit
// (file, tensor, op, config key or flag); the CLI prints it as a single line and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace tandem {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// check(cond, msg...) throws Error with the concatenated message when cond is false.
template <typename... Args>
inline void check(bool cond, const Args&... parts) {
  if (cond) return;
  std::string msg;
  ((msg += [](const auto& p) {
     if constexpr (std::is_arithmetic_v<std::decay_t<decltype(p)>>) return std::to_string(p);
     else return std::string(p);
   }(parts)), ...);
  throw Error(msg);
}

}  // namespace tandem
