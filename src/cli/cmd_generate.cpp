#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "models/generator.h"

namespace tandem::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Continue a prompt with a trained model (KV-cached decoding)");
  struct Opts {
    std::string weights;
    std::string model, prompt, backend = "cpu";
    int max_tokens = 200;
    bool stats = false;
    SamplingOptions s{1.0f, 0, 1.0f, 1337};
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--prompt", o->prompt, "Text to continue")->required();
  cmd->add_option("--max-tokens", o->max_tokens, "Tokens to generate")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o->s.temperature, "Sampling temperature (0: greedy)")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", o->s.top_k, "Keep the k most likely tokens (0: all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->s.top_p, "Nucleus sampling mass (1: off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o->s.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  add_fallback_option(cmd);
  add_weights_option(cmd, o->weights);
  cmd->add_flag("--stats", o->stats,
                "Print timings as one JSON line on stderr: prompt tokens and prefill time (to the first token), "
                "decoded tokens and their rate (first to last token)");
  cmd->callback([o] {
    LoadedModel m = load_model(o->model, o->backend, o->weights);
    const Tokenizer& tok = require_tokenizer(m);
    std::vector<int32_t> prompt;
    try {
      prompt = tok.encode(o->prompt);
    } catch (const Error& e) {
      throw Error(std::string("--prompt: ") + e.what());
    }
    o->s.vocab_limit = tok.vocab_size();
    Generator gen(*m.model, *m.backend, *m.params);
    // Print as we go; hold back bytes of a UTF-8 character split across tokens.
    std::string pending;
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    Clock::time_point first, last;
    int64_t emitted = 0;
    gen.generate(prompt, o->max_tokens, o->s, tok.eos_id(), [&](int32_t id) {
      last = Clock::now();
      if (emitted++ == 0) first = last;
      if (tok.eos_id() && id == *tok.eos_id()) return false;
      pending += tok.decode(std::span<const int32_t>(&id, 1));
      size_t cut = pending.size();
      for (size_t back = 1; back <= std::min<size_t>(3, pending.size()); ++back) {
        unsigned char c = static_cast<unsigned char>(pending[pending.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
        const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (need > back) cut = pending.size() - back;
        break;
      }
      std::fwrite(pending.data(), 1, cut, stdout);
      std::fflush(stdout);
      pending.erase(0, cut);
      return true;
    });
    std::fwrite(pending.data(), 1, pending.size(), stdout);
    std::fputc('\n', stdout);
    if (o->stats) {
      auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
      const double prefill_s = secs(first - start), decode_s = secs(last - first);
      nlohmann::json j{{"prompt_tokens", prompt.size()},
                       {"prefill_s", prefill_s},
                       {"prefill_tokens_per_s", static_cast<double>(prompt.size()) / prefill_s},
                       {"generated_tokens", emitted},
                       {"decode_s", decode_s},
                       {"decode_tokens_per_s", emitted > 1 ? static_cast<double>(emitted - 1) / decode_s : 0.0}};
      std::fprintf(stderr, "%s\n", j.dump().c_str());
    }
  });
}

}  // namespace tandem::cli
