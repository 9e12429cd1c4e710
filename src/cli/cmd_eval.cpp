#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "data/shard.h"
#include "train/step.h"

namespace tandem::cli {

void register_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Validation loss and perplexity of a model on a data directory");
  struct Opts {
    std::string weights;
    std::string model, data, backend = "cpu", split = "val";
    int64_t block = 0, batch = 8, max_batches = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--data", o->data, "Data directory from `tandem prepare`")->required();
  cmd->add_option("--split", o->split, "Shard to evaluate: val or train")->capture_default_str()->check(CLI::IsMember({"val", "train"}));
  cmd->add_option("--block", o->block, "Sequence length (default: the model's context)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", o->batch, "Sequences per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-batches", o->max_batches, "Stop after this many batches (0: the whole split)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  add_fallback_option(cmd);
  add_weights_option(cmd, o->weights);
  cmd->callback([o] {
    LoadedModel m = load_model(o->model, o->backend, o->weights);
    const Tokenizer& tok = require_tokenizer(m);
    const TokenShard shard = read_shard(std::filesystem::path(o->data) / (o->split + ".bin"));
    check(static_cast<int64_t>(shard.vocab_size) == tok.vocab_size(), shard.path.string(), ": written for a vocabulary of ",
          shard.vocab_size, " tokens, the model's tokenizer has ", tok.vocab_size());
    const int64_t T = o->block ? o->block : m.model->context_length();
    check(T <= m.model->context_length(), "--block ", T, " exceeds the model's context ", m.model->context_length());
    // Every token of the split predicted exactly once: consecutive, non-overlapping windows.
    const int64_t windows = (static_cast<int64_t>(shard.tokens.size()) - 1) / T;
    check(windows >= o->batch, shard.path.string(), ": too short for one batch of ", o->batch, " x ", T, " tokens");
    int64_t batches = windows / o->batch;
    if (o->max_batches) batches = std::min(batches, o->max_batches);
    EvalProgram eval(*m.model, *m.backend, *m.params, o->batch, T);
    std::vector<int32_t> x(static_cast<size_t>(o->batch * T)), y(x.size());
    double total = 0;
    for (int64_t b = 0; b < batches; ++b) {
      for (int64_t r = 0; r < o->batch; ++r) {
        const size_t start = static_cast<size_t>((b * o->batch + r) * T);
        std::copy_n(shard.tokens.begin() + static_cast<long>(start), T, x.begin() + r * T);
        std::copy_n(shard.tokens.begin() + static_cast<long>(start) + 1, T, y.begin() + r * T);
      }
      total += eval.run(x, y);
    }
    const double loss = total / static_cast<double>(batches);
    std::printf("%s_loss %.6f\nperplexity %.4f\ntokens %lld\n", o->split.c_str(), loss, std::exp(loss),
                static_cast<long long>(batches * o->batch * T));
  });
}

}  // namespace tandem::cli
