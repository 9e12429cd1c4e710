// `tandem task make parity|addition`: an SFT corpus (text for `tandem prepare`), RL prompts and a
// held-out evaluation set, for `tandem grpo`.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "cli/commands.h"
#include "core/error.h"
#include "data/task.h"

namespace tandem::cli {

void register_task(CLI::App& app) {
  auto* task = app.add_subcommand("task", "Synthetic tasks with verifiable answers (SFT corpus, RL prompts)");
  task->require_subcommand(1);
  auto* cmd = task->add_subcommand(
      "make", "Write DIR/sft.txt (prompt+completion lines), DIR/prompts.jsonl and DIR/eval.jsonl "
              "({\"prompt\", \"answer\"} per line); eval prompts appear in neither of the others");
  struct Opts {
    std::string name, out;
    int64_t bits = 16, digits = 3, examples = 100000, prompts = 20000, eval = 512;
    double scratchpad = 0.22;
    uint64_t seed = 1;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("task", o->name, "parity or addition")->required();
  cmd->add_option("--out", o->out, "Output directory")->required();
  cmd->add_option("--bits", o->bits, "parity: number of bits")->capture_default_str();
  cmd->add_option("--digits", o->digits, "addition: digits per operand")->capture_default_str();
  cmd->add_option("--examples", o->examples, "SFT examples")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--scratchpad", o->scratchpad, "Fraction of SFT examples that show the scratchpad")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--prompts", o->prompts, "RL prompts")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--eval", o->eval, "Held-out evaluation prompts")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->callback([o] {
    const TaskSpec spec = make_task_spec(o->name, o->name == "parity" ? o->bits : o->digits);
    namespace fs = std::filesystem;
    fs::create_directories(o->out);
    std::mt19937_64 rng(o->seed);
    // The evaluation prompts come first; nothing else may repeat them. Small spaces (few bits or
    // digits) cannot hold a disjoint held-out set of the size asked: say so instead of looping.
    std::unordered_set<std::string> held_out;
    auto write_jsonl = [&](const std::string& file, int64_t n, bool hold) {
      std::ofstream f(fs::path(o->out) / file);
      check(f.good(), "task make: cannot write ", (fs::path(o->out) / file).string());
      for (int64_t i = 0, tries = 0; i < n; ++tries) {
        check(tries < 50 * n + 1000, "task make: cannot draw ", n, " ", file,
              " prompts disjoint from the held-out set: the task is too small");
        TaskExample e = spec.sample(rng);
        if (hold ? !held_out.insert(e.prompt).second : held_out.contains(e.prompt)) continue;
        f << nlohmann::json{{"prompt", e.prompt}, {"answer", e.answer}}.dump() << '\n';
        ++i;
      }
    };
    write_jsonl("eval.jsonl", o->eval, true);
    write_jsonl("prompts.jsonl", o->prompts, false);
    std::ofstream sft(fs::path(o->out) / "sft.txt");
    std::bernoulli_distribution think(o->scratchpad);
    int64_t thinking = 0;
    for (int64_t i = 0, tries = 0; i < o->examples; ++tries) {
      check(tries < 50 * o->examples + 1000, "task make: the task is too small for a held-out set");
      TaskExample e = spec.sample(rng);
      if (held_out.contains(e.prompt)) continue;
      const bool t = think(rng);
      thinking += t;
      sft << e.prompt << (t ? e.thinking : e.direct);
      ++i;
    }
    check(sft.good(), "task make: cannot write ", (fs::path(o->out) / "sft.txt").string());
    nlohmann::json meta{{"task", spec.name}, {"size", spec.size}, {"examples", o->examples},
                        {"scratchpad_fraction", static_cast<double>(thinking) / static_cast<double>(o->examples)},
                        {"prompts", o->prompts}, {"eval", o->eval}, {"seed", o->seed}};
    std::ofstream(fs::path(o->out) / "task.json") << meta.dump(2) << '\n';
    std::printf("%s: %lld SFT examples (%.1f%% with the scratchpad) in sft.txt, %lld prompts.jsonl, %lld eval.jsonl\n",
                o->out.c_str(), static_cast<long long>(o->examples), 100.0 * meta["scratchpad_fraction"].get<double>(),
                static_cast<long long>(o->prompts), static_cast<long long>(o->eval));
  });
}

}  // namespace tandem::cli
