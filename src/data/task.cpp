#include "data/task.h"

#include "core/error.h"

namespace tandem {

TaskSpec make_task_spec(const std::string& name, int64_t size) {
  if (name == "parity") check(size >= 1 && size <= 48, "task parity: --bits must be in [1, 48], got ", size);
  else if (name == "addition") check(size >= 1 && size <= 18, "task addition: --digits must be in [1, 18], got ", size);
  else throw Error("task: unknown task '" + name + "' (parity or addition)");
  return TaskSpec{name, size};
}

TaskExample TaskSpec::sample(std::mt19937_64& rng) const {
  TaskExample e;
  if (name == "parity") {
    std::string trace;
    int x = 0;
    for (int64_t i = 0; i < size; ++i) {
      const int bit = static_cast<int>(rng() & 1);
      x ^= bit;
      e.prompt += static_cast<char>('0' + bit);
      trace += static_cast<char>('0' + x);
    }
    e.prompt += '?';
    e.answer = std::string(1, static_cast<char>('0' + x));
    e.thinking = std::string(1, kThinkMarker) + trace;
  } else {
    auto number = [&] {
      std::string s;
      for (int64_t i = 0; i < size; ++i) s += static_cast<char>('0' + rng() % 10);
      return s;
    };
    const std::string a = number(), b = number();
    std::string rev;  // the sum, least significant digit first
    int carry = 0;
    for (int64_t i = size - 1; i >= 0; --i) {
      const int d = (a[static_cast<size_t>(i)] - '0') + (b[static_cast<size_t>(i)] - '0') + carry;
      rev += static_cast<char>('0' + d % 10);
      carry = d / 10;
    }
    if (carry) rev += '1';
    while (rev.size() > 1 && rev.back() == '0') rev.pop_back();  // the answer has no leading zeros
    e.answer.assign(rev.rbegin(), rev.rend());
    e.prompt = a + "+" + b + "?";
    e.thinking = std::string(1, kThinkMarker) + rev;
  }
  e.direct = std::string(1, kAnswerMarker) + e.answer + kStop;
  e.thinking += std::string(1, kAnswerMarker) + e.answer + kStop;
  return e;
}

std::string extract_answer(const std::string& completion) {
  const size_t stop = completion.find(kStop);
  if (stop == std::string::npos) return "";
  const size_t marker = completion.rfind(kAnswerMarker, stop);
  if (marker == std::string::npos) return "";
  return completion.substr(marker + 1, stop - marker - 1);
}

bool uses_scratchpad(const std::string& completion) { return !completion.empty() && completion[0] == kThinkMarker; }

}  // namespace tandem
