// The OpenAI wire format: request validation (every bad input becomes a 4xx error object, never
// an exception escaping to the server), the chat template, and the response/chunk JSON.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "serve/batch_engine.h"
#include "tokenizer/tokenizer.h"

namespace tandem::serve {

// {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
  nlohmann::json body() const;
};

// How chat messages become a prompt. Stored with the model as chat_template.json (all fields
// optional):
//   {"message": "{role}: {content}\n", "generation_prompt": "assistant:", "stop": ["\nuser:"]}
// Each message is `message` with {role} and {content} substituted, then `generation_prompt` is
// appended; `stop` strings are added to every chat request's own. The default is the above.
struct ChatTemplate {
  std::string message = "{role}: {content}\n";
  std::string generation_prompt = "assistant:";
  std::vector<std::string> stop = {"\nuser:"};

  // `dir`/chat_template.json if it exists, else the default; a malformed file is an Error.
  static ChatTemplate load(const std::filesystem::path& dir);
  std::string render(const std::vector<std::pair<std::string, std::string>>& messages) const;
};

struct ApiContext {
  std::string model_name;
  const Tokenizer* tokenizer = nullptr;
  int64_t max_context = 0;
  const ChatTemplate* chat_template = nullptr;
  std::function<uint64_t()> random_seed;  // for requests without a seed
};

struct ParsedRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  JobSpec spec;
};

// Parses and validates a /v1/completions (chat = false) or /v1/chat/completions body.
std::variant<ParsedRequest, ApiError> parse_request(std::string_view body, bool chat, const ApiContext& ctx);

// Response bodies. `finish` is null while streaming; `usage` is added when given.
struct ResponseIds {
  std::string id, model;
  int64_t created = 0;
};
nlohmann::json usage_json(int prompt_tokens, int completion_tokens);
nlohmann::json completion_json(const ResponseIds& ids, bool chat, const std::string& text, const char* finish,
                               const nlohmann::json& usage);
// One streamed chunk; `first` adds the assistant role to a chat delta.
nlohmann::json chunk_json(const ResponseIds& ids, bool chat, const std::string& text, const char* finish, bool first);

// JSON text that tolerates invalid UTF-8 (a token may split a character): replaced by U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace tandem::serve
