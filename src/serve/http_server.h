// The HTTP front of `tandem serve`: OpenAI-compatible endpoints, server-sent events, metrics and
// the chat page, on cpp-httplib. Handler threads never touch the model: they validate, submit a
// Job to the BatchEngine and relay its output, so a bad or abandoned request costs nothing else.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "serve/batch_engine.h"
#include "serve/openai_api.h"

namespace tandem::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see bind())
  std::string model_name;
  int threads = 0;                       // HTTP worker threads; 0: enough for every slot and queue entry
  size_t max_body_bytes = 1 << 20;       // larger bodies get 413
  std::chrono::milliseconds shutdown_grace{10000};  // running jobs may finish within this on SIGTERM
};

class HttpServer {
 public:
  HttpServer(BatchEngine& engine, const Tokenizer& tokenizer, ChatTemplate chat_template, ServerOptions opts);
  ~HttpServer();
  // Binds the listening socket; returns the port. Throws Error when it cannot.
  int bind();
  // Serves until shutdown() has run (from another thread).
  void run();
  // Graceful stop: new requests get 503, running and queued jobs finish (cancelled after the
  // grace period), streams write their last event and [DONE], then the listener closes.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::serve
