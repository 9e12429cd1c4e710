#include "train/rewards.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/task.h"

namespace tandem {

RewardFn::RewardFn(const std::string& spec, double timeout_s, const std::string& where)
    : spec_(spec), timeout_s_(timeout_s) {
  if (spec == "exact") return;
  check(spec.starts_with("exec:") && spec.size() > 5, where, " '", spec, "': expected exact or exec:CMD");
  command_ = spec.substr(5);
  check(timeout_s > 0, where, ": the reward timeout must be > 0");
}

namespace {

struct Outcome {
  std::string out, err;
  int status = 0;
  bool timed_out = false;
};

// Runs /bin/sh -c cmd with `input` on stdin; collects stdout and stderr until it exits or the
// deadline passes (then it is killed, with its process group).
Outcome run_program(const std::string& cmd, const std::string& input, double timeout_s) {
  // A program that exits without reading all of its input must not kill us with SIGPIPE: the
  // write fails with EPIPE instead.
  signal(SIGPIPE, SIG_IGN);
  int in[2], out[2], err[2];
  check(pipe(in) == 0 && pipe(out) == 0 && pipe(err) == 0, "reward program: pipe: ", std::strerror(errno));
  const pid_t pid = fork();
  check(pid >= 0, "reward program: fork: ", std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) close(fd);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  for (int fd : {in[1], out[0], err[0]}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  Outcome o;
  size_t written = 0;
  int to_child = in[1];
  if (input.empty()) {
    close(to_child);
    to_child = -1;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      o.timed_out = true;
      break;
    }
    pollfd fds[3];
    nfds_t n = 0;
    if (out_open) fds[n++] = {out[0], POLLIN, 0};
    if (err_open) fds[n++] = {err[0], POLLIN, 0};
    if (to_child >= 0) fds[n++] = {to_child, POLLOUT, 0};
    if (poll(fds, n, static_cast<int>(std::min<int64_t>(left.count(), 1000))) < 0 && errno != EINTR) break;
    for (nfds_t i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == to_child) {
        const ssize_t w = write(to_child, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = input.size();  // the program closed stdin: stop feeding it
        if (written == input.size()) {
          close(to_child);
          to_child = -1;
        }
        continue;
      }
      char buf[4096];
      const ssize_t r = read(fds[i].fd, buf, sizeof buf);
      if (r > 0) {
        (fds[i].fd == out[0] ? o.out : o.err).append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EAGAIN) {
        (fds[i].fd == out[0] ? out_open : err_open) = false;
      }
    }
  }
  if (to_child >= 0) close(to_child);
  close(out[0]);
  close(err[0]);
  if (o.timed_out) kill(-pid, SIGKILL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  o.status = st;
  return o;
}

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  const size_t nl = t.rfind('\n');
  t = nl == std::string::npos ? t : t.substr(nl + 1);
  return t.size() > 200 ? t.substr(0, 200) + "..." : t;
}

}  // namespace

std::vector<double> RewardFn::operator()(const std::vector<RewardItem>& items) const {
  std::vector<double> r;
  r.reserve(items.size());
  if (command_.empty()) {
    for (const auto& it : items) {
      const std::string a = extract_answer(it.completion);
      r.push_back(!a.empty() && a == it.answer ? 1.0 : 0.0);
    }
    return r;
  }
  std::string input;
  for (const auto& it : items)
    input += nlohmann::json{{"prompt", it.prompt}, {"completion", it.completion}, {"answer", it.answer}}.dump() + "\n";
  const Outcome o = run_program(command_, input, timeout_s_);
  const std::string who = "reward program '" + command_ + "'";
  const std::string said = o.err.empty() ? "" : " (stderr: " + last_line(o.err) + ")";
  char secs[32];
  std::snprintf(secs, sizeof secs, "%g", timeout_s_);
  check(!o.timed_out, who, " did not finish within ", secs, " s (killed)");
  if (WIFSIGNALED(o.status)) throw Error(who + " was killed by signal " + std::to_string(WTERMSIG(o.status)) + said);
  check(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0, who, " exited with status ", WEXITSTATUS(o.status), said);
  std::istringstream lines(o.out);
  std::string line;
  size_t k = 0;
  while (std::getline(lines, line)) {
    ++k;
    const char* b = line.c_str();
    char* e = nullptr;
    const double v = std::strtod(b, &e);
    while (e && *e && std::isspace(static_cast<unsigned char>(*e))) ++e;
    check(e != b && e && *e == '\0' && std::isfinite(v), who, " printed '", line.size() > 80 ? line.substr(0, 80) + "..." : line,
          "' on line ", k, ": expected one finite number per line");
    r.push_back(v);
  }
  check(r.size() == items.size(), who, " printed ", r.size(), " numbers for ", items.size(), " completions");
  return r;
}

}  // namespace tandem
