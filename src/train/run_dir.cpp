#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"

namespace tandem {

RunLock::RunLock(const std::filesystem::path& dir, const std::string& verb) {
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  check(fd_ >= 0, dir.string(), ": cannot open run directory: ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw Error(dir.string() + ": another `tandem " + verb + "` is running in this run directory");
  }
}

RunLock::~RunLock() { ::close(fd_); }

void truncate_metrics(const std::filesystem::path& path, int64_t step) {
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      break;  // a torn last line from a killed process
    }
  }
  write_file_atomic(path, kept);
}

}  // namespace tandem
