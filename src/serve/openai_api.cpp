#include "serve/openai_api.h"

#include <fstream>

#include "core/error.h"

namespace tandem::serve {

using nlohmann::json;

json ApiError::body() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---- chat template ----

ChatTemplate ChatTemplate::load(const std::filesystem::path& dir) {
  ChatTemplate t;
  const auto file = dir / "chat_template.json";
  if (!std::filesystem::exists(file)) return t;
  std::ifstream in(file);
  const json j = json::parse(in, nullptr, false);
  check(!j.is_discarded() && j.is_object(), file.string(), ": not a JSON object");
  auto str = [&](const char* key, std::string& out) {
    if (!j.contains(key)) return;
    check(j[key].is_string(), file.string(), ": '", key, "' must be a string");
    out = j[key].get<std::string>();
  };
  str("message", t.message);
  str("generation_prompt", t.generation_prompt);
  if (j.contains("stop")) {
    check(j["stop"].is_array(), file.string(), ": 'stop' must be an array of strings");
    t.stop.clear();
    for (const auto& s : j["stop"]) {
      check(s.is_string() && !s.get<std::string>().empty(), file.string(), ": 'stop' must hold non-empty strings");
      t.stop.push_back(s.get<std::string>());
    }
  }
  return t;
}

std::string ChatTemplate::render(const std::vector<std::pair<std::string, std::string>>& messages) const {
  std::string out;
  for (const auto& [role, content] : messages) {
    // Substitute in one left-to-right pass, so a message containing "{role}" stays literal.
    for (size_t i = 0; i < message.size();) {
      if (message.compare(i, 6, "{role}") == 0) {
        out += role;
        i += 6;
      } else if (message.compare(i, 9, "{content}") == 0) {
        out += content;
        i += 9;
      } else {
        out += message[i++];
      }
    }
  }
  return out + generation_prompt;
}

// ---- request validation ----

namespace {

ApiError bad(std::string param, std::string message, std::string code = {}) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

// A present, non-null field.
const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double number_in(const json& j, const char* key, double lo, double hi, double def) {
  const json* v = field(j, key);
  if (!v) return def;
  if (!v->is_number())
    throw bad(key, std::string("'") + key + "' must be a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump() +
                       ", got " + v->dump());
  return x;
}

int64_t integer_in(const json& j, const char* key, int64_t lo, int64_t hi, int64_t def) {
  const json* v = field(j, key);
  if (!v) return def;
  if (!v->is_number_integer()) throw bad(key, std::string("'") + key + "' must be an integer");
  // Positive JSON integers parse as unsigned: compare them as such, so huge values do not wrap.
  const bool ok = v->is_number_unsigned()
                      ? v->get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v->get<uint64_t>()) >= lo
                      : v->get<int64_t>() >= lo && v->get<int64_t>() <= hi;
  if (!ok)
    throw bad(key, std::string("'") + key + "' must be an integer between " + std::to_string(lo) + " and " +
                       std::to_string(hi) + ", got " + v->dump());
  return v->get<int64_t>();
}

bool boolean(const json& j, const char* key) {
  const json* v = field(j, key);
  if (!v) return false;
  if (!v->is_boolean()) throw bad(key, std::string("'") + key + "' must be a boolean");
  return v->get<bool>();
}

// Features of the API this server does not implement: refused rather than silently ignored.
void unsupported(const json& j, const char* key, bool (*used)(const json&)) {
  const json* v = field(j, key);
  if (v && used(*v)) throw bad(key, std::string("'") + key + "' is not supported by this server", "unsupported");
}

std::vector<std::string> stop_strings(const json& j) {
  std::vector<std::string> out;
  const json* v = field(j, "stop");
  if (!v) return out;
  const char* msg = "'stop' must be a non-empty string or an array of at most 4 non-empty strings";
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array() && v->size() <= 4) {
    for (const auto& s : *v) {
      if (!s.is_string()) throw bad("stop", msg);
      out.push_back(s.get<std::string>());
    }
  } else {
    throw bad("stop", msg);
  }
  for (const auto& s : out)
    if (s.empty()) throw bad("stop", msg);
  return out;
}

std::string prompt_text(const json& j) {
  const json* v = field(j, "prompt");
  if (!v) throw bad("prompt", "'prompt' is required");
  if (v->is_string()) return v->get<std::string>();
  if (v->is_array() && v->size() == 1 && (*v)[0].is_string()) return (*v)[0].get<std::string>();
  if (v->is_array() && v->size() > 1)
    throw bad("prompt", "'prompt' must be one string; batches of prompts are not supported", "unsupported");
  throw bad("prompt", "'prompt' must be a string");
}

std::string chat_prompt(const json& j, const ChatTemplate& tmpl) {
  const json* v = field(j, "messages");
  if (!v) throw bad("messages", "'messages' is required");
  if (!v->is_array() || v->empty()) throw bad("messages", "'messages' must be a non-empty array");
  std::vector<std::pair<std::string, std::string>> msgs;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad(where, "'" + where + "' must be an object");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) throw bad(where + ".role", "'" + where + ".role' must be a string");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer")
      throw bad(where + ".role", "'" + where + ".role' must be one of system, developer, user, assistant; got '" +
                                     r + "'");
    std::string content;
    const json* c = field(m, "content");
    if (c && c->is_string()) {
      content = c->get<std::string>();
    } else if (c && c->is_array()) {  // content parts: only text
      for (const auto& part : *c) {
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        const json* text = part.is_object() ? field(part, "text") : nullptr;
        if (!type || *type != "text" || !text || !text->is_string())
          throw bad(where + ".content", "'" + where + ".content' parts must be {\"type\": \"text\", \"text\": ...}");
        content += text->get<std::string>();
      }
    } else if (c || r != "assistant") {
      throw bad(where + ".content", "'" + where + ".content' must be a string");
    }
    msgs.emplace_back(r, std::move(content));
  }
  return tmpl.render(msgs);
}

}  // namespace

std::variant<ParsedRequest, ApiError> parse_request(std::string_view body, bool chat, const ApiContext& ctx) {
  try {
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) throw bad("", "The request body is not valid JSON", "invalid_json");
    if (!j.is_object()) throw bad("", "The request body must be a JSON object");

    const json* model = field(j, "model");
    if (!model) throw bad("model", "'model' is required");
    if (!model->is_string()) throw bad("model", "'model' must be a string");
    if (model->get<std::string>() != ctx.model_name)
      throw ApiError{404, "The model '" + model->get<std::string>() + "' does not exist; this server serves '" +
                              ctx.model_name + "'",
                     "invalid_request_error", "model", "model_not_found"};

    ParsedRequest r;
    r.chat = chat;
    const std::string text = chat ? chat_prompt(j, *ctx.chat_template) : prompt_text(j);

    r.stream = boolean(j, "stream");
    if (const json* so = field(j, "stream_options")) {
      if (!so->is_object()) throw bad("stream_options", "'stream_options' must be an object");
      r.include_usage = boolean(*so, "include_usage");
    }
    auto truthy = +[](const json& v) { return !(v.is_boolean() && !v.get<bool>()) && !(v.is_number() && v == 0); };
    auto not_one = +[](const json& v) { return !(v.is_number_integer() && v == 1); };
    unsupported(j, "n", not_one);
    unsupported(j, "logprobs", truthy);
    unsupported(j, chat ? "tools" : "echo", truthy);
    if (!chat) unsupported(j, "best_of", not_one);

    SamplingOptions& s = r.spec.sampling;
    s.temperature = static_cast<float>(number_in(j, "temperature", 0.0, 2.0, 1.0));
    s.top_p = static_cast<float>(number_in(j, "top_p", 0.0, 1.0, 1.0));
    s.top_k = static_cast<int>(integer_in(j, "top_k", 0, 1 << 30, 0));
    if (const json* seed = field(j, "seed")) {
      if (!seed->is_number_integer()) throw bad("seed", "'seed' must be an integer");
      s.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : static_cast<uint64_t>(seed->get<int64_t>());
    } else {
      s.seed = ctx.random_seed();
    }
    r.spec.stop = stop_strings(j);
    if (chat) r.spec.stop.insert(r.spec.stop.end(), ctx.chat_template->stop.begin(), ctx.chat_template->stop.end());

    try {
      r.spec.prompt = ctx.tokenizer->encode(text);
    } catch (const Error& e) {
      throw bad(chat ? "messages" : "prompt", std::string("The prompt cannot be tokenized: ") + e.what());
    }
    if (r.spec.prompt.empty()) {
      if (!ctx.tokenizer->bos_id()) throw bad(chat ? "messages" : "prompt", "The prompt is empty");
      r.spec.prompt.push_back(*ctx.tokenizer->bos_id());
    }
    const auto n = static_cast<int64_t>(r.spec.prompt.size());
    if (n >= ctx.max_context)
      throw bad(chat ? "messages" : "prompt",
                "This model's maximum context length is " + std::to_string(ctx.max_context) + " tokens; the prompt has " +
                    std::to_string(n) + " tokens, leaving no room for a completion",
                "context_length_exceeded");
    // OpenAI's defaults: 16 tokens for completions, up to the context for chat.
    const char* max_key = chat && field(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    r.spec.max_tokens =
        static_cast<int>(integer_in(j, max_key, 1, ctx.max_context, chat ? ctx.max_context - n : 16));
    return r;
  } catch (const ApiError& e) {
    return e;
  }
}

// ---- responses ----

json usage_json(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json completion_json(const ResponseIds& ids, bool chat, const std::string& text, const char* finish,
                     const json& usage) {
  json choice = {{"index", 0}, {"finish_reason", finish ? json(finish) : json(nullptr)}, {"logprobs", nullptr}};
  if (chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  json j = {{"id", ids.id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", ids.created},
            {"model", ids.model},
            {"choices", json::array({choice})}};
  if (!usage.is_null()) j["usage"] = usage;
  return j;
}

json chunk_json(const ResponseIds& ids, bool chat, const std::string& text, const char* finish, bool first) {
  json choice = {{"index", 0}, {"finish_reason", finish ? json(finish) : json(nullptr)}, {"logprobs", nullptr}};
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", ids.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", ids.created},
          {"model", ids.model},
          {"choices", json::array({choice})}};
}

}  // namespace tandem::serve
