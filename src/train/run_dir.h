// Run-directory machinery shared by `tandem train` and `tandem grpo`.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

namespace tandem {

// One trainer per run directory: an exclusive flock on the directory itself (creates no file, and
// the kernel releases it when the process dies, however it dies). It is what makes removing a
// killed writer's leftovers safe.
class RunLock {
 public:
  // verb: the command holding it ("train", "grpo"), for the error a second one gets.
  RunLock(const std::filesystem::path& dir, const std::string& verb);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Keeps metrics.jsonl lines up to `step` (a resumed run rewrites what comes after).
void truncate_metrics(const std::filesystem::path& path, int64_t step);

}  // namespace tandem
