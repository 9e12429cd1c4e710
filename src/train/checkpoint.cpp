#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

const char* kFiles[] = {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors",
                        "trainer_state.json"};

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
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

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
  fs::create_directories(root);
  const fs::path final_dir = root / ("step_" + std::to_string(state.step));
  const fs::path tmp = root / (".tmp.step_" + std::to_string(state.step) + "." + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  std::map<std::string, std::string> blobs;
  blobs["config.json"] = model.hf_config().dump(2) + "\n";
  blobs["tokenizer.json"] = read_all(tokenizer_json);
  blobs["trainer_state.json"] = nlohmann::json{{"format_version", 1},
                                               {"step", state.step},
                                               {"seed", state.seed},
                                               {"data_position", state.data_position},
                                               {"train_config", state.train_config}}
                                    .dump(2) + "\n";
  for (const auto& [name, data] : blobs) write_file_atomic(tmp / name, data);
  params.to_safetensors().save(tmp / "model.safetensors");
  SafetensorsFile opt;
  for (size_t i = 0; i < params.specs.size(); ++i) {
    opt.tensors["exp_avg." + params.specs[i].name] = HostTensor::f32(params.specs[i].shape, exp_avg[i].to_host());
    opt.tensors["exp_avg_sq." + params.specs[i].name] = HostTensor::f32(params.specs[i].shape, exp_avg_sq[i].to_host());
  }
  opt.save(tmp / "optimizer.safetensors");

  nlohmann::json manifest = {{"format_version", 1}, {"files", nlohmann::json::object()}};
  for (const char* name : kFiles) {
    std::string data = read_all(tmp / name);
    manifest["files"][name] = {{"bytes", data.size()}, {"xxh64", hex64(XXH64(data.data(), data.size(), 0))}};
  }
  write_file_atomic(tmp / "manifest.json", manifest.dump(2) + "\n");
  fsync_dir(tmp);
  if (fs::exists(final_dir)) fs::remove_all(final_dir);  // re-written after a resume
  fs::rename(tmp, final_dir);
  fsync_dir(root);
  return final_dir;
}

void verify_checkpoint(const fs::path& dir) {
  const fs::path mpath = dir / "manifest.json";
  check(fs::exists(mpath), dir.string(), ": not a complete checkpoint (no manifest.json)");
  const nlohmann::json manifest = read_json_file(mpath);
  check(manifest.contains("files") && manifest["files"].is_object(), mpath.string(), ": malformed manifest");
  for (const auto& [name, info] : manifest["files"].items()) {
    const fs::path p = dir / name;
    check(fs::exists(p), p.string(), ": missing (listed in the manifest)");
    std::string data = read_all(p);
    const auto want_bytes = info.at("bytes").get<uint64_t>();
    check(data.size() == want_bytes, p.string(), ": truncated or resized: expected ", want_bytes, " bytes, found ",
          data.size());
    const std::string got = hex64(XXH64(data.data(), data.size(), 0));
    const auto want = info.at("xxh64").get<std::string>();
    check(got == want, p.string(), ": checksum mismatch: expected xxh64 ", want, ", got ", got, " (corrupted)");
  }
}

std::vector<fs::path> list_checkpoints(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  const fs::path root = run_dir / "checkpoints";
  if (!fs::is_directory(root)) return {};
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory() || !n.starts_with("step_")) continue;
    try {
      found.emplace_back(std::stoll(n.substr(5)), e.path());
    } catch (const std::exception&) {
    }
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
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
  try {
    s.step = j.at("step").get<int64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.data_position = j.at("data_position").get<uint64_t>();
    s.train_config = j.at("train_config");
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
