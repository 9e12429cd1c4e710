// Synthetic tasks with verifiable answers, for SFT then RL (`tandem task make`, `tandem grpo`).
// Each example is one line: prompt + completion, the completion ending in '\n'. A completion is
// either direct ("=ANSWER\n") or thinks first (":SCRATCHPAD=ANSWER\n"); the answer is the text
// between the last '=' and the newline.
#pragma once
#include <cstdint>
#include <random>
#include <string>

namespace tandem {

struct TaskExample {
  std::string prompt, answer, direct, thinking;  // direct / thinking: the two completions
};

struct TaskSpec {
  std::string name;    // "parity" or "addition"
  int64_t size = 16;   // parity: bits; addition: digits per operand
  // One random example. parity: "0110...1?" -> "=p\n" or ":c1c2...cd=p\n" with c_i the running
  // XOR of the first i bits. addition: "123+456?" -> "=579\n" or ":975=579\n" (the sum written least
  // significant digit first: the order in which carries are computed).
  TaskExample sample(std::mt19937_64& rng) const;
};

// "parity" / "addition" with a size; errors name the option.
TaskSpec make_task_spec(const std::string& name, int64_t size);

constexpr char kThinkMarker = ':';   // a completion that starts with it uses the scratchpad
constexpr char kAnswerMarker = '=';  // the answer follows the last one
constexpr char kStop = '\n';         // ends every completion

// The answer in a completion ("" when there is none: no marker or no newline), and whether the
// completion thinks first.
std::string extract_answer(const std::string& completion);
bool uses_scratchpad(const std::string& completion);

}  // namespace tandem
