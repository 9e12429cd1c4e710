// A served model's chat_template.json (serve/openai_api.cpp ChatTemplate::load) and its rendering.
#include "fuzz_target.h"
#include "serve/openai_api.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(chat_template) {
  const auto path = fuzz::write_file("model/chat_template.json", fuzz::as_text(data, size));
  serve::ChatTemplate t;
  if (!fuzz::expect_clean([&] { t = serve::ChatTemplate::load(path.parent_path()); }, path.string())) return;
  const std::string out = t.render({{"system", "be brief"}, {"user", "{role} {content} hi"}});
  fuzz::require(out.size() >= t.generation_prompt.size(), "render dropped the generation prompt");
}
