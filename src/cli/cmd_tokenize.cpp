// tandem tokenize: encode text to ids (or decode ids to text) with a tokenizer.json, for checking
// a tokenizer against other implementations.
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

std::string read_file(const std::filesystem::path& path) {
  check(std::filesystem::is_regular_file(path), "--input: file not found: ", path.string());
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "--input: cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

// Whitespace-separated decimal ids.
std::vector<int32_t> parse_ids(std::string_view text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (true) {
    pos = text.find_first_not_of(" \t\r\n", pos);
    if (pos == std::string_view::npos) break;
    const size_t end = std::min(text.find_first_of(" \t\r\n", pos), text.size());
    const std::string_view word = text.substr(pos, end - pos);
    int32_t id = 0;
    const auto [p, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
    check(ec == std::errc{} && p == word.data() + word.size(), "--decode: '", std::string(word), "' at character ", pos,
          " is not a token id");
    ids.push_back(id);
    pos = end;
  }
  return ids;
}

}  // namespace

void register_tokenize(CLI::App& app) {
  struct Options {
    std::string tokenizer, text, input;
    bool bos = false, decode = false;
  };
  auto opt = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (or, with --decode, the text of ids)");
  cmd->add_option("--tokenizer", opt->tokenizer, "tokenizer.json, or a directory holding one")->required();
  auto* text = cmd->add_option("--text", opt->text, "The text (or ids, with --decode)");
  auto* input = cmd->add_option("--input", opt->input, "File holding the text (or ids, with --decode)");
  text->excludes(input);
  input->excludes(text);
  cmd->add_flag("--bos", opt->bos, "Prepend the tokenizer's BOS id");
  cmd->add_flag("--decode", opt->decode, "Decode space-separated ids to text");
  cmd->callback([opt, text, input] {
    check(text->count() + input->count() == 1, "tokenize: give exactly one of --text or --input");
    const Tokenizer tok = Tokenizer::load(opt->tokenizer);
    const std::string source = text->count() ? opt->text : read_file(opt->input);
    if (opt->decode) {
      check(!opt->bos, "tokenize: --bos has no meaning with --decode");
      const std::string decoded = tok.decode(parse_ids(source));
      std::fwrite(decoded.data(), 1, decoded.size(), stdout);
      return;
    }
    std::vector<int32_t> ids;
    if (opt->bos) {
      check(tok.bos_id().has_value(), "--bos: tokenizer ", opt->tokenizer, " has no BOS token");
      ids.push_back(*tok.bos_id());
    }
    const std::vector<int32_t> body = tok.encode(source);
    ids.insert(ids.end(), body.begin(), body.end());
    std::string line;
    line.reserve(ids.size() * 6);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(ids[i]);
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
  });
}

}  // namespace tandem::cli
