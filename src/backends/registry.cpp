#include <memory>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"

namespace tandem {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
  throw Error("unknown backend '" + name + "' (this build has: cpu)");
}

}  // namespace tandem
