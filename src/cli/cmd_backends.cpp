#include <cstdio>

#include "backends/registry.h"
#include "cli/commands.h"

namespace tandem::cli {

void register_backends(CLI::App& app) {
  auto* cmd = app.add_subcommand("backends", "The backends this build has, and the devices each one sees");
  cmd->callback([] {
    for (const BackendInfo& b : list_backends()) {
      std::printf("%s\n", b.name.c_str());
      for (size_t i = 0; i < b.devices.size(); ++i) std::printf("  device %zu: %s\n", i, b.devices[i].c_str());
      if (!b.note.empty()) std::printf("  %s\n", b.note.c_str());
    }
  });
}

}  // namespace tandem::cli
