#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/error.h"

namespace tandem {

void write_file_atomic(const std::filesystem::path& path, std::string_view data) {
  write_file_atomic(path, [&](const ChunkWriter& write) { write(data); });
}

void write_file_atomic(const std::filesystem::path& path, const std::function<void(const ChunkWriter& write)>& produce) {
  // The pid in the name keeps two concurrent writers from sharing one temporary file.
  const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check(fd >= 0, "cannot create ", tmp.string(), ": ", std::strerror(errno));
  auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error("cannot " + std::string(what) + " " + tmp.string() + ": " + reason);
  };
  try {
    produce([&](std::string_view data) {
      for (size_t done = 0; done < data.size();) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
          if (errno == EINTR) continue;
          fail("write");
        }
        done += static_cast<size_t>(n);
      }
    });
  } catch (...) {
    ::close(fd);  // a no-op error if fail() closed it already
    ::unlink(tmp.c_str());
    throw;
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error("cannot close " + tmp.string() + ": " + reason);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp.string() + " to " + path.string() + ": " + reason);
  }
  // Persist the rename itself; best effort, since some filesystems cannot fsync a directory.
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace tandem
