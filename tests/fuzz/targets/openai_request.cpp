// OpenAI request bodies (serve/openai_api.cpp parse_request), /v1/completions and
// /v1/chat/completions: the first input byte picks the endpoint, the rest is the body. Every bad
// body must become a 4xx error object, never an exception escaping to the server (a 500).
#include <filesystem>

#include "fuzz_target.h"
#include "serve/openai_api.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(openai_request) {
  static const Tokenizer tok = Tokenizer::load(std::filesystem::path(TANDEM_FUZZ_DATA_DIR) / "gpt2-bpe.tokenizer.json");
  static const serve::ChatTemplate tmpl;
  static const serve::ApiContext ctx{"tandem-fuzz", &tok, 64, &tmpl, [] { return uint64_t{7}; }};
  if (size == 0) return;
  const bool chat = data[0] & 1;
  std::variant<serve::ParsedRequest, serve::ApiError> r;
  fuzz::require(fuzz::expect_clean([&] { r = serve::parse_request(fuzz::as_text(data + 1, size - 1), chat, ctx); }, ""),
                "parse_request threw an Error");
  if (const auto* e = std::get_if<serve::ApiError>(&r)) {
    fuzz::require(e->status >= 400 && e->status < 500, "a non-4xx status for a bad request");
    fuzz::require(!e->message.empty(), "an empty error message");
    serve::dump(e->body());
    return;
  }
  const auto& p = std::get<serve::ParsedRequest>(r);
  const auto n = static_cast<int64_t>(p.spec.prompt.size());
  fuzz::require(n > 0 && n < ctx.max_context, "an accepted prompt does not fit the context");
  fuzz::require(p.spec.max_tokens >= 1 && p.spec.max_tokens <= ctx.max_context, "max_tokens out of range");
  for (int32_t id : p.spec.prompt) fuzz::require(id >= 0 && id < tok.vocab_size(), "a prompt id out of range");
}
