#include <pthread.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "serve/batch_engine.h"
#include "serve/http_server.h"

namespace fs = std::filesystem;

namespace tandem::cli {

void register_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server (streaming, continuous batching) with a chat page at /");
  struct Opts {
    std::string weights;
    std::string model, backend = "cpu", host = "127.0.0.1", name;
    int port = 8080, max_batch = 8, max_queue = 64;
    int64_t max_context = 0;
    double grace_s = 10;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  add_fallback_option(cmd);
  add_weights_option(cmd, o->weights);
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--max-batch", o->max_batch, "KV-cache slots: sequences decoded together")->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--max-context", o->max_context, "Prompt + completion tokens per request (0: the model's context)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-queue", o->max_queue, "Requests waiting for a slot before new ones get 503")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--model-name", o->name, "Model id clients must send (default: the --model directory's name)");
  cmd->add_option("--shutdown-grace", o->grace_s, "Seconds running requests may take to finish after SIGTERM")->capture_default_str()->check(CLI::Range(0.0, 3600.0));
  cmd->callback([o] {
    // SIGTERM/SIGINT are blocked in every thread (threads created from here on inherit the mask)
    // and taken by one waiter thread, which can then shut down in an orderly way: a signal handler
    // could not. A client that vanishes mid-write must not kill the server with SIGPIPE either.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    LoadedModel m = load_model(o->model, o->backend, o->weights);
    const Tokenizer& tok = require_tokenizer(m);
    serve::ChatTemplate tmpl = serve::ChatTemplate::load(m.dir);
    serve::BatchEngine engine(*m.model, *m.backend, *m.params, tok, {o->max_batch, o->max_context, o->max_queue});

    serve::ServerOptions so;
    so.host = o->host;
    so.port = o->port;
    so.shutdown_grace = std::chrono::milliseconds(static_cast<int64_t>(o->grace_s * 1000));
    so.model_name = o->name;
    if (so.model_name.empty()) {
      fs::path p = fs::absolute(o->model).lexically_normal();
      if (p.filename().empty()) p = p.parent_path();  // "runs/baby/"
      so.model_name = p.filename().string();
    }
    serve::HttpServer server(engine, tok, std::move(tmpl), so);
    const int port = server.bind();
    const std::string host = o->host.find(':') != std::string::npos ? "[" + o->host + "]" : o->host;
    std::printf("tandem serve: model '%s' (%s, backend %s, max-batch %d, max-context %lld) at http://%s:%d/\n",
                so.model_name.c_str(), m.dir.string().c_str(), o->backend.c_str(), engine.max_batch(),
                static_cast<long long>(engine.max_context()), host.c_str(), port);
    std::fflush(stdout);

    std::atomic<bool> stopped{false};
    std::thread waiter([&] {
      const timespec poll{0, 200'000'000};
      while (!stopped) {
        const int sig = sigtimedwait(&stop_signals, nullptr, &poll);
        if (sig == SIGTERM || sig == SIGINT) {
          std::fprintf(stderr, "tandem serve: %s received, finishing running requests\n",
                       sig == SIGTERM ? "SIGTERM" : "SIGINT");
          server.shutdown();
          return;
        }
      }
    });
    server.run();
    stopped = true;
    waiter.join();
    std::printf("tandem serve: stopped\n");
  });
}

}  // namespace tandem::cli
