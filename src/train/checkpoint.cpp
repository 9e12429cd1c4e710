#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/json_value.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

// Written in this order; manifest.json comes after all of them.
const char* kFiles[] = {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors",
                        "trainer_state.json"};

// Bytes checkpoint writes may still take before failing with ENOSPC (inject_checkpoint_write_limit).
std::optional<uint64_t> g_fault_bytes_left;

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  check(f.good(), p.string(), ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void fsync_dir(const fs::path& dir) {
  // Best effort: some filesystems cannot fsync a directory.
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Creates `path` (which must not exist), writes all of `data` and fsyncs it. No rename: the whole
// checkpoint directory is renamed into place instead.
void write_new_file(const fs::path& path, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  check(fd >= 0, "cannot create ", path.string(), ": ", std::strerror(errno));
  auto fail = [&](const char* what, int err) {
    ::close(fd);
    throw Error(std::string("cannot ") + what + " " + path.string() + ": " + std::strerror(err));
  };
  for (size_t done = 0; done < data.size();) {
    size_t chunk = data.size() - done;
    if (g_fault_bytes_left) {
      if (*g_fault_bytes_left == 0) fail("write", ENOSPC);
      chunk = std::min<uint64_t>(chunk, *g_fault_bytes_left);
    }
    const ssize_t n = ::write(fd, data.data() + done, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    if (g_fault_bytes_left) *g_fault_bytes_left -= static_cast<uint64_t>(n);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync", errno);
  check(::close(fd) == 0, "cannot close ", path.string(), ": ", std::strerror(errno));
}

// Size and XXH64 of a file, streamed (checkpoint files can be gigabytes).
std::pair<uint64_t, std::string> file_digest(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  check(f.good(), p.string(), ": cannot open");
  std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> st(XXH64_createState(), XXH64_freeState);
  XXH64_reset(st.get(), 0);
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<size_t>(f.gcount());
    XXH64_update(st.get(), buf.data(), n);
    total += n;
  }
  check(f.eof(), p.string(), ": read error");
  return {total, hex64(XXH64_digest(st.get()))};
}

bool parse_step_name(const std::string& name, int64_t& step) {
  if (!name.starts_with("step_") || name.size() == 5 || name.size() > 23) return false;
  if (!std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  step = std::stoll(name.substr(5));
  return true;
}

}  // namespace

void inject_checkpoint_write_limit(uint64_t bytes) { g_fault_bytes_left = bytes; }

nlohmann::json read_json_file(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_all(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": not valid JSON: " + e.what());
  }
}

fs::path write_checkpoint(const fs::path& run_dir, const Model& model, const ParamStore& params,
                          const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                          const fs::path& tokenizer_json, const TrainerState& state) {
  const fs::path root = run_dir / "checkpoints";
  const std::string name = "step_" + std::to_string(state.step);
  const fs::path final_dir = root / name;
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = root / (".tmp." + name + "." + pid);
  try {
    fs::create_directories(root);
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    nlohmann::json manifest = {{"format_version", 1}, {"files", nlohmann::json::object()}};
    // One file in memory at a time: the optimizer state alone is twice the model.
    for (const char* file : kFiles) {
      std::string data;
      const std::string f = file;
      if (f == "config.json") {
        data = model.hf_config().dump(2) + "\n";
      } else if (f == "model.safetensors") {
        data = params.to_safetensors(model).serialize();
      } else if (f == "tokenizer.json") {
        data = read_all(tokenizer_json);
      } else if (f == "optimizer.safetensors") {
        SafetensorsFile opt;
        for (size_t i = 0; i < params.specs.size(); ++i) {
          opt.tensors["exp_avg." + params.specs[i].name] = HostTensor::f32(params.specs[i].shape, exp_avg[i].to_host());
          opt.tensors["exp_avg_sq." + params.specs[i].name] =
              HostTensor::f32(params.specs[i].shape, exp_avg_sq[i].to_host());
        }
        data = opt.serialize();
      } else {
        nlohmann::json windows = nlohmann::json::array();
        for (auto [from, to] : state.skipped_data) windows.push_back({from, to});
        data = nlohmann::json{{"format_version", 2},
                              {"step", state.step},
                              {"seed", state.seed},
                              {"data_position", state.data_position},
                              {"guard", state.guard},
                              {"skipped_data", windows},
                              {"parallel", state.parallel},
                              {"train_config", state.train_config}}
                   .dump(2) + "\n";
      }
      write_new_file(tmp / file, data);
      manifest["files"][file] = {{"bytes", data.size()}, {"xxh64", hex64(XXH64(data.data(), data.size(), 0))}};
    }
    write_new_file(tmp / "manifest.json", manifest.dump(2) + "\n");
    fsync_dir(tmp);
    // A checkpoint of this step from an abandoned timeline (a rollback, or a corrupt one that
    // --resume skipped) is replaced; moved aside first so the name is never half-deleted.
    if (fs::exists(final_dir)) remove_checkpoint(final_dir);
    fs::rename(tmp, final_dir);
    fsync_dir(root);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw Error("checkpoint " + name + " not written: " + e.what());
  }
  try {
    set_latest_checkpoint(run_dir, final_dir);
  } catch (const std::exception& e) {
    throw Error("checkpoint " + name + " written, but " + (root / "latest").string() + " not updated: " + e.what());
  }
  return final_dir;
}

std::optional<std::string> checkpoint_problem(const fs::path& dir) {
  try {
    const fs::path mpath = dir / "manifest.json";
    if (!fs::exists(mpath)) return dir.string() + ": not a complete checkpoint (no manifest.json)";
    const nlohmann::json manifest = read_json_file(mpath);
    if (!manifest.contains("files") || !manifest["files"].is_object() || manifest["files"].empty())
      return mpath.string() + ": malformed manifest";
    for (const auto& [name, info] : manifest["files"].items()) {
      // Only the checkpoint's own files: "../x" or "/etc/passwd" must not be read (and hashed).
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
          name.find('\0') != std::string::npos)
        return mpath.string() + ": malformed manifest: " + nlohmann::json(name).dump() + " is not a file name of the checkpoint";
      const fs::path p = dir / name;
      if (!fs::exists(p)) return p.string() + ": missing (listed in the manifest)";
      // A JSON integer only: nlohmann casts 4.5e23 to uint64 (undefined behaviour; found by fuzzing).
      const auto want_bytes = json_value<uint64_t>(info.at("bytes"), mpath.string(), "file", (name + " bytes").c_str());
      const auto want = info.at("xxh64").get<std::string>();
      const auto [bytes, got] = file_digest(p);
      if (bytes != want_bytes)
        return p.string() + ": truncated or resized: expected " + std::to_string(want_bytes) + " bytes, found " +
               std::to_string(bytes);
      if (got != want) return p.string() + ": checksum mismatch: expected xxh64 " + want + ", got " + got + " (corrupted)";
    }
  } catch (const nlohmann::json::exception& e) {
    return (dir / "manifest.json").string() + ": malformed manifest: " + e.what();
  } catch (const std::exception& e) {
    return e.what();
  }
  return std::nullopt;
}

void verify_checkpoint(const fs::path& dir) {
  if (auto problem = checkpoint_problem(dir)) throw Error(*problem);
}

std::vector<fs::path> list_checkpoints(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  const fs::path root = run_dir / "checkpoints";
  if (!fs::is_directory(root)) return {};
  for (const auto& e : fs::directory_iterator(root)) {
    int64_t step = 0;
    if (!e.is_symlink() && e.is_directory() && parse_step_name(e.path().filename().string(), step))
      found.emplace_back(step, e.path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

int64_t checkpoint_step(const fs::path& dir) {
  int64_t step = 0;
  check(parse_step_name(dir.filename().string(), step), dir.string(), ": not a step_<N> checkpoint directory");
  return step;
}

uint64_t checkpoint_bytes(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) total += e.file_size();
  return total;
}

void set_latest_checkpoint(const fs::path& run_dir, const fs::path& dir) {
  const fs::path root = run_dir / "checkpoints";
  const fs::path tmp = root / (".latest.tmp." + std::to_string(::getpid()));
  fs::remove(tmp);
  fs::create_directory_symlink(dir.filename(), tmp);  // relative: the run directory can move
  fs::rename(tmp, root / "latest");
  fsync_dir(root);
}

void remove_checkpoint(const fs::path& dir) {
  const fs::path trash = dir.parent_path() / (".trash." + dir.filename().string() + "." + std::to_string(::getpid()));
  fs::remove_all(trash);
  fs::rename(dir, trash);
  fs::remove_all(trash);
}

std::vector<fs::path> prune_checkpoints(const fs::path& run_dir, int64_t current_step, int64_t keep_last,
                                        int64_t keep_every, int64_t rollback_step) {
  if (keep_last <= 0) return {};
  std::vector<fs::path> removed;
  int64_t kept = 0;
  bool rollback_target_kept = false;
  for (const fs::path& dir : list_checkpoints(run_dir)) {  // newest first
    const int64_t step = checkpoint_step(dir);
    if (step > current_step) continue;
    const bool rollback_target = !rollback_target_kept && step <= rollback_step;
    rollback_target_kept = rollback_target_kept || rollback_target;
    if (kept < keep_last) {
      ++kept;
      continue;
    }
    if ((keep_every > 0 && step % keep_every == 0) || rollback_target) continue;
    remove_checkpoint(dir);
    removed.push_back(dir);
  }
  return removed;
}

void remove_stale_checkpoint_files(const fs::path& run_dir) {
  const fs::path root = run_dir / "checkpoints";
  if (!fs::is_directory(root)) return;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (n.starts_with(".tmp.") || n.starts_with(".trash.") || n.starts_with(".latest.tmp.")) stale.push_back(e.path());
  }
  for (const auto& p : stale) fs::remove_all(p);
}

fs::path resolve_model_dir(const fs::path& path) {
  check(fs::exists(path), path.string(), ": no such model directory");
  if (fs::exists(path / "config.json")) return path;
  auto cks = list_checkpoints(path);
  check(!cks.empty(), path.string(), ": neither a model directory (config.json) nor a run directory with checkpoints");
  return cks.front();
}

TrainerState read_trainer_state(const fs::path& dir) {
  const fs::path p = dir / "trainer_state.json";
  const nlohmann::json j = read_json_file(p);
  TrainerState s;
  // nlohmann converts a float to an integer unchecked (undefined past the range): integers only.
  auto integer = [&](const nlohmann::json& v, const char* what) -> const nlohmann::json& {
    if (!v.is_number_integer()) throw Error(p.string() + ": malformed trainer state: '" + what + "' must be an integer");
    return v;
  };
  try {
    s.step = integer(j.at("step"), "step").get<int64_t>();
    s.seed = integer(j.at("seed"), "seed").get<uint64_t>();
    s.data_position = integer(j.at("data_position"), "data_position").get<uint64_t>();
    s.train_config = j.at("train_config");
    // Absent in format_version 1 (before training guards).
    s.guard = j.value("guard", nlohmann::json());
    s.parallel = j.value("parallel", nlohmann::json());
    for (const auto& w : j.value("skipped_data", nlohmann::json::array()))
      s.skipped_data.emplace_back(integer(w.at(0), "skipped_data").get<uint64_t>(),
                                  integer(w.at(1), "skipped_data").get<uint64_t>());
  } catch (const nlohmann::json::exception& e) {
    throw Error(p.string() + ": malformed trainer state: " + e.what());
  }
  return s;
}

void read_optimizer_state(const fs::path& dir, const ParamStore& params, std::vector<Tensor>& exp_avg,
                          std::vector<Tensor>& exp_avg_sq) {
  const fs::path p = dir / "optimizer.safetensors";
  const SafetensorsFile f = SafetensorsFile::load(p);
  for (size_t i = 0; i < params.specs.size(); ++i) {
    for (auto [prefix, dst] : {std::pair{"exp_avg.", &exp_avg[i]}, std::pair{"exp_avg_sq.", &exp_avg_sq[i]}}) {
      const std::string name = prefix + params.specs[i].name;
      const HostTensor& t = f.at(name, p);
      check(t.shape == params.specs[i].shape, p.string(), ": tensor '", name, "' has shape ", shape_str(t.shape));
      dst->copy_from_host(t.to_f32(p.string() + ": " + name));
    }
  }
}

}  // namespace tandem
