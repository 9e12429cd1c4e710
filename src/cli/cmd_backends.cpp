#include <cstdio>

#include "backends/plugin/plugin_backend.h"
#include "backends/registry.h"
#include "cli/commands.h"
#include "core/error.h"
#include "ops/op_kind.h"

namespace tandem::cli {

void add_fallback_option(CLI::App* cmd) {
  cmd->add_option_function<std::string>("--fallback", set_plugin_fallback,
                                        "For a plugin backend: cpu (default; nodes the plugin does not support run on "
                                        "the CPU, copies inserted) or none (refuse them); env TANDEM_FALLBACK")
      ->check(CLI::IsMember({"cpu", "none"}));
}

namespace {
// A plugin's line: name, file, ABI, its devices and which of tandem's ops it has a kernel for.
void describe_plugin(const std::string& path) {
  try {
    const PluginLibrary& lib = load_plugin(path);
    const tdb_backend_api* api = lib.api;
    std::printf("%s (plugin %s, version %s, ABI %u.%u; this tandem %d.%d)\n", api->name, path.c_str(),
                api->version ? api->version : "?", api->abi_major, api->abi_minor, TDB_ABI_MAJOR, TDB_ABI_MINOR);
    PluginBackend be(lib, false);
    std::printf("  device 0 of %d: %s\n", api->device_count(), be.device_name().c_str());
    std::string has, lacks;
    int n = 0, total = 0;
    auto cover = [&](OpKind op) {
      if (op == OpKind::input || op == OpKind::param || op == OpKind::reshape) return;
      ++total;
      std::string& list = api->op_lookup(op_name(op), 1) >= 0 ? (++n, has) : lacks;
      list += (list.empty() ? "" : " ") + std::string(op_name(op));
    };
#define TANDEM_COVER(op) cover(OpKind::op);
    TANDEM_OPS(TANDEM_COVER)
#undef TANDEM_COVER
    std::printf("  ops: %d of %d have a kernel%s%s\n", n, total, n ? ": " : "", has.c_str());
    if (!lacks.empty()) std::printf("  no kernel (CPU fallback): %s\n", lacks.c_str());
    std::printf("  optimizer kernels:%s%s%s%s\n", api->adamw ? " adamw" : "", api->sum_squares ? " sum_squares" : "",
                api->axpy ? " axpy" : "", api->adamw && api->sum_squares && api->axpy ? "" : " (the rest on the CPU)");
  } catch (const Error& e) {
    std::printf("%s\n  refused: %s\n", path.c_str(), e.what());
  }
}
}  // namespace

void register_backends(CLI::App& app) {
  auto* cmd = app.add_subcommand("backends", "The backends this build has, the devices each one sees, and the plugins "
                                             "found in TANDEM_BACKEND_PATH");
  auto plugins = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--plugin", *plugins, "Also load and describe this plugin file (repeatable)");
  cmd->callback([plugins] {
    for (const BackendInfo& b : list_backends()) {
      std::printf("%s\n", b.name.c_str());
      for (size_t i = 0; i < b.devices.size(); ++i) std::printf("  device %zu: %s\n", i, b.devices[i].c_str());
      if (!b.note.empty()) std::printf("  %s\n", b.note.c_str());
    }
    std::vector<std::string> all = plugins_on_path();
    all.insert(all.end(), plugins->begin(), plugins->end());
    for (const std::string& p : all) describe_plugin(p);
  });
}

}  // namespace tandem::cli
