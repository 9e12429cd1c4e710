// Verifiable rewards for `tandem grpo`, one number per completion:
//   exact     1 when the completion's answer (data/task.h: between the last '=' and the newline)
//             equals the prompt's answer, else 0 (a malformed completion has no answer: 0);
//   exec:CMD  a user's program, run once per batch by /bin/sh -c CMD: it reads JSON lines
//             {"prompt", "completion", "answer"} on stdin and writes one number per line. A program
//             that fails (exit status, signal), runs past the timeout or prints anything but one
//             finite number per completion is an Error naming it and saying what it did.
#pragma once
#include <string>
#include <vector>

namespace tandem {

struct RewardItem {
  std::string prompt, completion, answer;
};

class RewardFn {
 public:
  // "exact" or "exec:CMD"; errors name `where`.
  RewardFn(const std::string& spec, double timeout_s, const std::string& where);
  std::vector<double> operator()(const std::vector<RewardItem>& items) const;
  const std::string& spec() const { return spec_; }

 private:
  std::string spec_, command_;  // command_ empty: exact
  double timeout_s_;
};

}  // namespace tandem
