// Each `tandem <verb>` lives in its own cmd_<verb>.cpp and registers itself here.
#pragma once
#include <CLI/CLI.hpp>

namespace tandem::cli {

void register_prepare(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_train(CLI::App& app);
void register_checkpoints(CLI::App& app);
void register_generate(CLI::App& app);
void register_serve(CLI::App& app);
void register_eval(CLI::App& app);
void register_grad(CLI::App& app);
void register_import(CLI::App& app);
void register_export(CLI::App& app);
void register_backends(CLI::App& app);
void register_conform(CLI::App& app);
void register_parity(CLI::App& app);
void register_diff(CLI::App& app);
void register_report(CLI::App& app);
void register_grpo_loss(CLI::App& app);
void register_task(CLI::App& app);
void register_grpo(CLI::App& app);

// --fallback cpu|none beside every --backend: whether a plugin's unsupported nodes run on the CPU.
void add_fallback_option(CLI::App* cmd);

}  // namespace tandem::cli
