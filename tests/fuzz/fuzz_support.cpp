#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

#include "core/error.h"
#include "fuzz_target.h"

namespace fs = std::filesystem;

namespace tandem::fuzz {
namespace {

std::map<std::string, TargetFn>& registry() {
  static std::map<std::string, TargetFn> r;
  return r;
}

struct Scratch {
  fs::path dir;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = (fs::path(tmp && *tmp ? tmp : "/tmp") / "tandem-fuzz.XXXXXX").string();
    if (!::mkdtemp(templ.data())) {
      std::perror("tandem fuzz: mkdtemp");
      std::abort();
    }
    dir = templ;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

bool register_target(const char* name, TargetFn fn) {
  registry()[name] = fn;
  return true;
}

TargetFn find_target(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : it->second;
}

const fs::path& scratch_dir() {
  static Scratch s;
  return s.dir;
}

fs::path write_file(const std::string& file, std::string_view bytes) {
  const fs::path p = scratch_dir() / file;
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  require(out.good(), "cannot write the fuzz input to " + p.string());
  return p;
}

void require(bool cond, const std::string& what) {
  if (cond) return;
  std::fprintf(stderr, "tandem fuzz: FINDING: %s\n", what.c_str());
  std::abort();
}

bool expect_clean(const std::function<void()>& fn, const std::string& culprit) {
  try {
    fn();
    return true;
  } catch (const Error& e) {
    const std::string m = e.what();
    require(m.find(culprit) != std::string::npos, "the error message does not name '" + culprit + "': " + m);
    return false;
  } catch (const std::exception& e) {
    require(false, std::string("an exception other than tandem::Error escaped (") + typeid(e).name() + "): " + e.what());
  }
  return false;
}

}  // namespace tandem::fuzz
