#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace tandem::cli {

void register_checkpoints(CLI::App& app) {
  auto* cmd = app.add_subcommand("checkpoints", "List a run's checkpoints with size and checksum verification");
  struct Opts {
    fs::path run;
    bool verify = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--run", o->run, "Run directory (the --out of `tandem train`)")->required();
  cmd->add_flag("--verify", o->verify, "Exit non-zero if the newest checkpoint fails verification");
  cmd->callback([o] {
    check(fs::is_directory(o->run), o->run.string(), ": no such run directory");
    const auto cks = list_checkpoints(o->run);
    check(!cks.empty(), o->run.string(), ": no checkpoints (", (o->run / "checkpoints").string(), " has no step_<N>)");
    std::string latest;
    std::error_code ec;
    if (const fs::path link = fs::read_symlink(o->run / "checkpoints" / "latest", ec); !ec)
      latest = link.filename().string();
    std::printf("%10s  %10s  %s\n", "step", "size", "status");
    std::optional<std::string> newest_problem;
    for (size_t i = 0; i < cks.size(); ++i) {
      // Every file is read and checked against the manifest's size and XXH64.
      const auto problem = checkpoint_problem(cks[i]);
      if (i == 0) newest_problem = problem;
      char size[32];
      std::snprintf(size, sizeof size, "%.1f MB", static_cast<double>(checkpoint_bytes(cks[i])) / 1e6);
      std::printf("%10lld  %10s  %s%s\n", static_cast<long long>(checkpoint_step(cks[i])), size,
                  problem ? ("BAD: " + *problem).c_str() : "ok",
                  cks[i].filename() == latest ? "  (latest)" : "");
    }
    std::fflush(stdout);
    if (o->verify && newest_problem)
      throw Error("newest checkpoint " + cks.front().filename().string() + " is bad: " + *newest_problem);
  });
}

}  // namespace tandem::cli
