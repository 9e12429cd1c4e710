// What this build has: backend names and, for each, the devices it sees (`tandem backends`).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"

namespace tandem {

struct BackendInfo {
  std::string name;
  std::vector<std::string> devices;  // human-readable, one per device; empty: none usable
  std::string note;                  // why there is no device, when there is none
};

std::vector<BackendInfo> list_backends();

// make_backend with a fault spec for "faulty:<B>" names (see backends/faulty/faulty_backend.h).
// make_backend(name) takes the spec from the TANDEM_FAULT environment variable.
std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& fault);

// Whether plugins (plugin:<path> or a name found in TANDEM_BACKEND_PATH) run the nodes they do
// not support on the CPU: "cpu" (the default, or TANDEM_FALLBACK) or "none" (--fallback none).
void set_plugin_fallback(const std::string& mode);

}  // namespace tandem
