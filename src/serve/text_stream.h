// Turns a stream of token bytes into text that is safe to send: whole UTF-8 characters only, and
// never a piece that might turn out to be the start of a stop string. A stop string may span
// several tokens, so the tail that could still grow into one is held back until it cannot.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace tandem::serve {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop) : stop_(std::move(stop)) {}

  // Appends the bytes of one token; returns the text that can be sent now. After a stop string
  // is seen, stopped() is true and the returned text ends just before it (the stop string and
  // everything after it are dropped, as OpenAI does).
  std::string push(std::string_view bytes);
  // Everything still held back (the sequence ended for another reason).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_;
  std::string held_;  // received but not yet sent
  bool stopped_ = false;
};

// Length of the longest prefix of `s` that ends on a UTF-8 character boundary, treating an
// incomplete multi-byte sequence at the end as not yet complete.
size_t complete_utf8_prefix(std::string_view s);

}  // namespace tandem::serve
