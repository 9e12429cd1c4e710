// Byte-level BPE on arbitrary bytes (tokenizer/tokenizer.cpp, pretokenize.cpp): valid UTF-8 must
// encode and decode back to the same bytes (every byte has a token); invalid UTF-8 must be refused
// naming its offset. Two real pre-tokenizer setups: GPT-2's ByteLevel regex and DeepSeek's Sequence
// of Split regexes (tests/fuzz/data/*.tokenizer.json, HF tokenizers files).
#include <filesystem>

#include "fuzz_target.h"
#include "tokenizer/tokenizer.h"

using namespace tandem;

namespace {
const std::vector<Tokenizer>& tokenizers() {
  static const std::vector<Tokenizer> t = [] {
    const std::filesystem::path dir = std::filesystem::path(TANDEM_FUZZ_DATA_DIR);
    return std::vector<Tokenizer>{Tokenizer::load(dir / "gpt2-bpe.tokenizer.json"),
                                  Tokenizer::load(dir / "deepseek-bpe.tokenizer.json")};
  }();
  return t;
}
}  // namespace

TANDEM_FUZZ_TARGET(bpe_encode) {
  const std::string_view text = fuzz::as_text(data, size);
  for (const Tokenizer& tok : tokenizers()) {
    std::vector<int32_t> ids;
    if (!fuzz::expect_clean([&] { ids = tok.encode(text); }, "invalid UTF-8 at byte offset")) continue;
    fuzz::require(tok.decode(ids) == text, "decode(encode(text)) != text");
  }
}
