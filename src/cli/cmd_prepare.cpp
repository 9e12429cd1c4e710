// tandem prepare: train a tokenizer on a text file, encode it, and write the data directory
// (tokenizer.json, train.bin, val.bin) that `tandem train` reads.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "data/shard.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  check(fs::is_regular_file(path), "--input: file not found: ", path.string());
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "--input: cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

// "char" or "bpe:VOCAB_SIZE".
Tokenizer train_tokenizer(const std::string& spec, std::string_view text) {
  if (spec == "char") return Tokenizer::train_char(text);
  if (spec.starts_with("bpe:")) {
    const std::string_view num = std::string_view(spec).substr(4);
    int vocab = 0;
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), vocab);
    check(ec == std::errc{} && end == num.data() + num.size() && !num.empty(), "--tokenizer '", spec,
          "': the vocab size after 'bpe:' must be an integer");
    check(vocab > 256, "--tokenizer '", spec, "': the BPE vocab size must be at least 257 (256 byte tokens + 1 merge)");
    check(vocab <= (1 << 24), "--tokenizer '", spec, "': the BPE vocab size is unreasonably large");
    return Tokenizer::train_bpe(text, vocab);
  }
  throw Error("--tokenizer '" + spec + "': unknown tokenizer (expected 'char' or 'bpe:VOCAB_SIZE', e.g. bpe:4096)");
}

}  // namespace

void register_prepare(CLI::App& app) {
  struct Options {
    std::string input, spec, out;
    double val_fraction = 0.1;
  };
  auto opt = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("prepare", "Train a tokenizer on a text file and write tokenizer.json, train.bin, val.bin");
  cmd->add_option("--input", opt->input, "UTF-8 text file")->required();
  cmd->add_option("--tokenizer", opt->spec, "'char' or 'bpe:VOCAB_SIZE'")->required();
  cmd->add_option("--out", opt->out, "Data directory to write (created if missing; its files are replaced)")->required();
  cmd->add_option("--val-fraction", opt->val_fraction, "Fraction of tokens, taken from the end, kept for validation")
      ->capture_default_str();
  cmd->callback([opt] {
    check(opt->val_fraction > 0 && opt->val_fraction < 1, "--val-fraction must be between 0 and 1 (exclusive), got ",
          opt->val_fraction);
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const std::string text = read_file(opt->input);
    check(!text.empty(), "--input: ", opt->input, " is empty");
    const Tokenizer tok = train_tokenizer(opt->spec, text);
    const auto t1 = clock::now();
    const std::vector<int32_t> ids = tok.encode(text);
    const auto t2 = clock::now();
    // Like nanoGPT: the first (1 - f) of the tokens train, the rest validate.
    const auto n_train = static_cast<size_t>(static_cast<double>(ids.size()) * (1.0 - opt->val_fraction));
    check(n_train > 0 && n_train < ids.size(), "--input: ", opt->input, " encodes to only ", ids.size(),
          " tokens, too few to split into train and val");

    const fs::path out = opt->out;
    std::error_code ec;
    fs::create_directories(out, ec);
    check(fs::is_directory(out), "--out: cannot create directory ", out.string(), ec ? ": " + ec.message() : "");
    const std::span<const int32_t> all(ids);
    // Each file is written atomically; tokenizer.json goes last so that a directory with one
    // always has matching shards beside it.
    write_shard(out / "train.bin", all.first(n_train), static_cast<uint32_t>(tok.vocab_size()));
    write_shard(out / "val.bin", all.subspan(n_train), static_cast<uint32_t>(tok.vocab_size()));
    tok.save(out / "tokenizer.json");
    const auto t3 = clock::now();
    const auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    std::printf("prepared %s -> %s\n", opt->input.c_str(), out.string().c_str());
    std::printf("  tokenizer  %s, vocab size %d (trained in %.2fs)\n", opt->spec.c_str(), tok.vocab_size(), secs(t0, t1));
    std::printf("  text       %zu bytes -> %zu tokens (%.2f bytes/token, encoded in %.2fs)\n", text.size(), ids.size(),
                static_cast<double>(text.size()) / static_cast<double>(ids.size()), secs(t1, t2));
    std::printf("  train.bin  %zu tokens\n  val.bin    %zu tokens\n  total      %.2fs\n", n_train, ids.size() - n_train,
                secs(t0, t3));
  });
}

}  // namespace tandem::cli
