#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: train, qualify and serve DeepSeek-style language models on any backend"};
  app.require_subcommand(1);
  tandem::cli::register_prepare(app);
  tandem::cli::register_tokenize(app);
  tandem::cli::register_train(app);
  tandem::cli::register_checkpoints(app);
  tandem::cli::register_generate(app);
  tandem::cli::register_serve(app);
  tandem::cli::register_eval(app);
  tandem::cli::register_grad(app);
  tandem::cli::register_import(app);
  tandem::cli::register_export(app);
  tandem::cli::register_backends(app);
  tandem::cli::register_conform(app);
  tandem::cli::register_parity(app);
  tandem::cli::register_diff(app);
  tandem::cli::register_report(app);
  tandem::cli::register_grpo_loss(app);
  tandem::cli::register_task(app);
  tandem::cli::register_grpo(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, like every other error: what is wrong, and where to look.
    std::fprintf(stderr, "tandem: error: %s (see tandem%s --help)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (" " + app.get_subcommands()[0]->get_name()).c_str());
    return e.get_exit_code() ? e.get_exit_code() : 2;
  } catch (const tandem::Error& e) {
    // Messages quote names and values from the input files, which may hold line breaks: escaped,
    // so that every error stays one line.
    std::string line;
    for (const char c : std::string_view(e.what()))
      line += c == '\n' ? std::string("\\n") : c == '\r' ? std::string("\\r") : std::string(1, c);
    std::fprintf(stderr, "tandem: error: %s\n", line.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
