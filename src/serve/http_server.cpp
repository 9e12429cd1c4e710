#include "serve/http_server.h"

#include <httplib.h>

#include <atomic>
#include <ctime>
#include <map>
#include <random>

#include "core/error.h"
#include "serve/ui_index.h"  // generated at build time from src/serve/ui/index.html

namespace tandem::serve {

using nlohmann::json;

namespace {
// How long a response waits for output before writing a heartbeat. The heartbeat (an SSE comment,
// or a space before a JSON body) is how a vanished client is noticed: writing to its socket fails.
constexpr auto kHeartbeat = std::chrono::milliseconds(1000);
// After the engine has drained on shutdown, how long streams get to write their last events.
constexpr auto kFlushGrace = std::chrono::seconds(5);

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, e.body()); }

const char* status_text(int status) {
  switch (status) {
    case 400: return "Bad request";
    case 404: return "Not found";
    case 405: return "Method not allowed";
    case 413: return "Request body too large";
    case 414: return "Request URI too long";
    case 503: return "Service unavailable";
    default: return status >= 500 ? "Internal server error" : "Request failed";
  }
}
}  // namespace

// One in-flight completion: what its response writer needs between calls.
struct Relay {
  std::shared_ptr<Job> job;
  ResponseIds ids;
  bool chat = false, stream = false, include_usage = false;
  bool first = true;  // no chunk written yet
  std::string text;   // the whole completion (non-streaming)
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
};

struct HttpServer::Impl {
  BatchEngine& engine;
  const Tokenizer& tokenizer;
  ChatTemplate chat_template;
  ServerOptions opts;
  ApiContext ctx;
  httplib::Server svr;
  const int64_t started = std::time(nullptr);

  std::atomic<bool> draining{false};
  std::atomic<uint64_t> next_id{1};
  std::mutex mu;  // guards the fields below
  std::condition_variable relays_done;
  int relays = 0;  // responses still writing a completion
  std::map<int, uint64_t> responses_by_status;
  std::mt19937_64 seeds{std::random_device{}()};

  Impl(BatchEngine& e, const Tokenizer& t, ChatTemplate tmpl, ServerOptions o)
      : engine(e), tokenizer(t), chat_template(std::move(tmpl)), opts(std::move(o)) {
    ctx.model_name = opts.model_name;
    ctx.tokenizer = &tokenizer;
    ctx.max_context = engine.max_context();
    ctx.chat_template = &chat_template;
    ctx.random_seed = [this] {
      std::lock_guard lk(mu);
      return seeds();
    };
    routes();
  }

  void routes();
  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  bool pump(Relay& r, httplib::DataSink& sink);
  std::string metrics();
  json model_json() const {
    return {{"id", opts.model_name},
            {"object", "model"},
            {"created", started},
            {"owned_by", "tandem"},
            {"max_context", engine.max_context()}};
  }
};

void HttpServer::Impl::routes() {
  // Keep-alive connections hold a worker each, so size the pool for every slot and queue entry
  // plus idle connections; beyond that, connections wait in httplib's own queue.
  const int threads = opts.threads > 0 ? opts.threads : engine.max_batch() + engine.stats().max_queue + 32;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_payload_max_length(opts.max_body_bytes);
  svr.set_tcp_nodelay(true);  // one small SSE chunk per token: do not let Nagle batch them

  svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(reinterpret_cast<const char*>(kIndexHtml), kIndexHtmlSize, "text/html; charset=utf-8");
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining) return send_json(res, 503, {{"status", "shutting_down"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json()})}});
  });
  svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] == opts.model_name) return send_json(res, 200, model_json());
    send_error(res, {404, "The model '" + req.matches[1].str() + "' does not exist", "invalid_request_error", "model",
                     "model_not_found"});
  });
  svr.Post("/v1/completions",
           [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, false); });
  svr.Post("/v1/chat/completions",
           [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, true); });

  // Whatever httplib answers on its own (404 for unknown paths, 413 for oversized bodies, ...)
  // still gets an OpenAI-style error object.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = status_text(res.status);
    if (res.status == 404) msg = "Unknown endpoint: " + req.method + " " + req.path;
    const bool server = res.status >= 500;
    send_error(res, {res.status, msg, server ? "server_error" : "invalid_request_error", "", ""});
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg += std::string(": ") + e.what();
    } catch (...) {
    }
    send_error(res, {500, msg, "server_error", "", ""});
  });
  svr.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    std::lock_guard lk(mu);
    ++responses_by_status[res.status];
  });
}

void HttpServer::Impl::completions(const httplib::Request& req, httplib::Response& res, bool chat) {
  if (draining) return send_error(res, {503, "The server is shutting down", "server_error", "", "shutting_down"});
  auto parsed = parse_request(req.body, chat, ctx);
  if (auto* e = std::get_if<ApiError>(&parsed)) return send_error(res, *e);
  ParsedRequest& p = std::get<ParsedRequest>(parsed);

  auto relay = std::make_shared<Relay>();
  relay->job = std::make_shared<Job>(std::move(p.spec));
  switch (engine.submit(relay->job)) {
    case BatchEngine::Admission::queue_full:
      res.set_header("Retry-After", "1");
      return send_error(res, {503, "The server is busy (every slot and queue entry is taken); retry later",
                              "server_error", "", "server_busy"});
    case BatchEngine::Admission::shutting_down:
      return send_error(res, {503, "The server is shutting down", "server_error", "", "shutting_down"});
    case BatchEngine::Admission::accepted: break;
  }
  relay->chat = chat;
  relay->stream = p.stream;
  relay->include_usage = p.include_usage;
  relay->ids = {std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++), opts.model_name,
                static_cast<int64_t>(std::time(nullptr))};
  {
    std::lock_guard lk(mu);
    ++relays;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      p.stream ? "text/event-stream" : "application/json",
      [this, relay](size_t, httplib::DataSink& sink) { return pump(*relay, sink); },
      // Runs once the response is over, written or not: a client that went away cancels its job
      // (a no-op when the job has finished).
      [this, relay](bool) {
        relay->job->cancel();
        std::lock_guard lk(mu);
        --relays;
        relays_done.notify_all();
      });
}

// Called by httplib again and again until it returns false (abort the connection) or calls
// sink.done(); each call relays what the job produced since the last one.
bool HttpServer::Impl::pump(Relay& r, httplib::DataSink& sink) {
  Job::Update u = r.job->wait(kHeartbeat);
  std::string out;
  if (r.stream && !u.text.empty()) {
    out += sse(chunk_json(r.ids, r.chat, u.text, nullptr, r.first));
    r.first = false;
  } else {
    r.text += u.text;
  }
  if (!u.done) {
    const auto now = std::chrono::steady_clock::now();
    if (out.empty() && now - r.last_write >= kHeartbeat)
      out = r.stream ? ": keep-alive\n\n" : " ";  // before a JSON body, whitespace is still valid JSON
    if (out.empty()) return true;
    r.last_write = now;
    return sink.write(out.data(), out.size());
  }
  const bool failed = u.reason == FinishReason::cancelled || u.reason == FinishReason::error;
  if (failed) {
    // A 200 is already on the wire: a plain body can no longer become an error, so drop the
    // connection; a stream can still say why.
    if (!r.stream) return false;
    const bool shutdown = u.reason == FinishReason::cancelled;
    out += sse(ApiError{shutdown ? 503 : 500, u.error.empty() ? "the request was cancelled" : u.error, "server_error",
                        "", shutdown ? "shutting_down" : "internal_error"}
                   .body());
  } else if (r.stream) {
    out += sse(chunk_json(r.ids, r.chat, "", finish_reason_name(u.reason), r.first));
    if (r.include_usage) {
      json j = chunk_json(r.ids, r.chat, "", nullptr, false);
      j["choices"] = json::array();
      j["usage"] = usage_json(u.prompt_tokens, u.completion_tokens);
      out += sse(j);
    }
  } else {
    out += dump(completion_json(r.ids, r.chat, r.text, finish_reason_name(u.reason),
                                usage_json(u.prompt_tokens, u.completion_tokens)));
  }
  if (r.stream) out += "data: [DONE]\n\n";
  const bool ok = sink.write(out.data(), out.size());
  sink.done();
  return ok;
}

std::string HttpServer::Impl::metrics() {
  const EngineStats s = engine.stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, const auto& samples) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    for (const auto& [labels, value] : samples) {
      const bool whole = value == static_cast<double>(static_cast<int64_t>(value));
      out += std::string(name) + labels + " " + (whole ? std::to_string(static_cast<int64_t>(value)) : json(value).dump()) + "\n";
    }
  };
  using One = std::vector<std::pair<std::string, double>>;
  One by_status, by_reason;
  {
    std::lock_guard lk(mu);
    for (const auto& [code, n] : responses_by_status)
      by_status.emplace_back("{code=\"" + std::to_string(code) + "\"}", static_cast<double>(n));
  }
  for (auto r : {FinishReason::stop, FinishReason::length, FinishReason::cancelled, FinishReason::error})
    by_reason.emplace_back(std::string("{finish_reason=\"") + finish_reason_name(r) + "\"}",
                           static_cast<double>(s.finished[static_cast<int>(r)]));
  metric("tandem_http_responses_total", "counter", "HTTP responses by status code.", by_status);
  metric("tandem_completions_total", "counter", "Requests ended, by finish reason (cancelled: the client went away or the server shut down).", by_reason);
  metric("tandem_prompt_tokens_total", "counter", "Prompt tokens admitted.",
         One{{"", static_cast<double>(s.prompt_tokens)}});
  metric("tandem_generated_tokens_total", "counter", "Tokens generated.",
         One{{"", static_cast<double>(s.generated_tokens)}});
  metric("tandem_generated_tokens_per_second", "gauge", "Tokens generated per second over the last 5 s.",
         One{{"", s.tokens_per_s}});
  metric("tandem_queue_depth", "gauge", "Requests waiting for a cache slot.", One{{"", double(s.queued)}});
  metric("tandem_queue_capacity", "gauge", "Requests that may wait before new ones get 503.",
         One{{"", double(s.max_queue)}});
  metric("tandem_batch_size", "gauge", "Sequences in the running batch.", One{{"", double(s.active)}});
  metric("tandem_batch_capacity", "gauge", "Cache slots (--max-batch).", One{{"", double(s.max_batch)}});
  metric("tandem_kv_cache_tokens", "gauge", "Tokens held in the KV-cache pool.", One{{"", double(s.kv_tokens)}});
  metric("tandem_kv_cache_usage_ratio", "gauge", "KV-cache pool use: tokens held / (slots x max context).",
         One{{"", s.kv_capacity ? double(s.kv_tokens) / double(s.kv_capacity) : 0.0}});
  metric("tandem_engine_steps_total", "counter", "Engine iterations (prefill chunks + one decode step each).",
         One{{"", static_cast<double>(s.steps)}});
  return out;
}

HttpServer::HttpServer(BatchEngine& engine, const Tokenizer& tokenizer, ChatTemplate chat_template, ServerOptions opts)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(chat_template), std::move(opts))) {}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  auto& o = impl_->opts;
  if (o.port == 0) {
    const int port = impl_->svr.bind_to_any_port(o.host);
    check(port > 0, "serve: cannot listen on ", o.host, " (any port)");
    return port;
  }
  check(impl_->svr.bind_to_port(o.host, o.port), "serve: cannot listen on ", o.host, ":", o.port,
        " (in use, or not an address of this machine)");
  return o.port;
}

void HttpServer::run() { impl_->svr.listen_after_bind(); }

void HttpServer::shutdown() {
  Impl& m = *impl_;
  m.draining = true;
  m.engine.shutdown(m.opts.shutdown_grace);
  {
    std::unique_lock lk(m.mu);
    m.relays_done.wait_for(lk, kFlushGrace, [&] { return m.relays == 0; });
  }
  m.svr.stop();
}

}  // namespace tandem::serve
