// HF tokenizers' tokenizer.json (tokenizer/tokenizer_json.cpp): every accepted shape of model,
// pre-tokenizer, added tokens; a tokenizer that loads must encode and decode without failing
// other than by a clean Error, and byte-level BPE must round-trip text exactly.
#include "fuzz_target.h"
#include "tokenizer/tokenizer.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(tokenizer_json) {
  const auto path = fuzz::write_file("tok/tokenizer.json", fuzz::as_text(data, size));
  std::optional<Tokenizer> tok;
  if (!fuzz::expect_clean([&] { tok = Tokenizer::load(path); }, path.string())) return;
  for (std::string_view text : {"Hello world, it's 2024!\n", "  ünïcödé 日本語 🙂\t\r\n", "<|endoftext|>a"}) {
    std::vector<int32_t> ids;
    if (!fuzz::expect_clean([&] { ids = tok->encode(text); }, "cannot encode")) continue;
    for (int32_t id : ids) fuzz::require(id >= 0 && id < tok->vocab_size(), "encode produced an id out of range");
    tok->decode(ids);
  }
}
