#include "backends/plugin/plugin_backend.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "backends/cpu/cpu_backend.h"
#include "backends/plugin/abi_node.h"
#include "core/error.h"
#include "ops/op_kind.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

std::vector<std::string> split_path(const char* s) {
  std::vector<std::string> out;
  if (!s) return out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ':');)
    if (!part.empty()) out.push_back(part);
  return out;
}

void host_log(void*, int level, const char* message) {
  std::fprintf(stderr, "plugin%s: %s\n", level >= 2 ? " error" : "", message ? message : "");
}

// The entries a 1.0 plugin must fill; the optimizer kernels may be NULL.
std::string missing_entries(const tdb_backend_api& a) {
  std::string m;
  auto need = [&](const void* p, const char* name) {
    if (!p) m += (m.empty() ? "" : ", ") + std::string(name);
  };
  need(reinterpret_cast<const void*>(a.init), "init");
  need(reinterpret_cast<const void*>(a.last_error), "last_error");
  need(reinterpret_cast<const void*>(a.device_count), "device_count");
  need(reinterpret_cast<const void*>(a.device_open), "device_open");
  need(reinterpret_cast<const void*>(a.device_info), "device_info");
  need(reinterpret_cast<const void*>(a.buffer_alloc), "buffer_alloc");
  need(reinterpret_cast<const void*>(a.buffer_free), "buffer_free");
  need(reinterpret_cast<const void*>(a.buffer_write), "buffer_write");
  need(reinterpret_cast<const void*>(a.buffer_read), "buffer_read");
  need(reinterpret_cast<const void*>(a.buffer_copy), "buffer_copy");
  need(reinterpret_cast<const void*>(a.op_lookup), "op_lookup");
  need(reinterpret_cast<const void*>(a.supports), "supports");
  need(reinterpret_cast<const void*>(a.execute), "execute");
  need(reinterpret_cast<const void*>(a.synchronize), "synchronize");
  if (!a.name) m += (m.empty() ? "" : ", ") + std::string("name");
  return m;
}

std::string last_error_of(const tdb_backend_api* api) {
  const char* e = api->last_error ? api->last_error() : nullptr;
  return e && *e ? e : "(the plugin set no last_error)";
}

}  // namespace

const PluginLibrary& load_plugin(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<PluginLibrary>> loaded;
  std::lock_guard lock(mu);
  std::error_code ec;
  const std::string key = fs::weakly_canonical(path, ec).string();
  if (auto it = loaded.find(key); it != loaded.end()) return *it->second;

  check(fs::exists(path), "plugin ", path, ": no such file");
  // RTLD_LOCAL: the plugin's own symbols (its copy of a runtime library) never interpose the host's.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw Error("plugin " + path + ": cannot load it: " + dlerror());
  dlerror();
  auto get = reinterpret_cast<tdb_get_api_fn>(dlsym(h, "tandem_backend_get_api"));
  if (!get) {
    dlclose(h);
    throw Error("plugin " + path + ": not a tandem backend plugin (it exports no tandem_backend_get_api)");
  }
  const tdb_backend_api* api = get(TDB_ABI_MAJOR, TDB_ABI_MINOR);
  check(api != nullptr, "plugin ", path, ": tandem_backend_get_api refused this tandem's backend ABI ", TDB_ABI_MAJOR,
        ".", TDB_ABI_MINOR);
  // struct_size and the versions are where every ABI major puts them: read them before anything else.
  check(api->abi_major == TDB_ABI_MAJOR, "plugin ", path, ": built for tandem backend ABI ", api->abi_major, ".",
        api->abi_minor, ", this tandem has ABI ", TDB_ABI_MAJOR, ".", TDB_ABI_MINOR,
        " (the major versions must match: rebuild the plugin against this tandem's include/tandem/backend_abi.h)");
  check(api->struct_size >= TDB_STRUCT_SIZE(tdb_backend_api, axpy), "plugin ", path, ": its function table is ",
        api->struct_size, " bytes, ABI ", TDB_ABI_MAJOR, ".0 needs at least ", TDB_STRUCT_SIZE(tdb_backend_api, axpy));
  const std::string missing = missing_entries(*api);
  check(missing.empty(), "plugin ", path, ": required ABI entries are NULL: ", missing);
  tdb_host host{};
  host.struct_size = sizeof host;
  host.abi_major = TDB_ABI_MAJOR;
  host.abi_minor = TDB_ABI_MINOR;
  host.log = host_log;
  const tdb_status st = api->init(&host, "");
  check(st == TDB_OK, "plugin ", path, " (", api->name, "): init failed (status ", static_cast<int>(st), "): ",
        last_error_of(api));
  auto lib = std::make_unique<PluginLibrary>(PluginLibrary{path, h, api});
  return *loaded.emplace(key, std::move(lib)).first->second;
}

std::string find_plugin(const std::string& name) {
  const std::string file = "libtandem-backend-" + name + ".so";
  for (const std::string& p : split_path(std::getenv("TANDEM_BACKEND_PATH"))) {
    if (fs::is_directory(p) && fs::exists(fs::path(p) / file)) return (fs::path(p) / file).string();
    if (fs::path(p).filename() == file && fs::exists(p)) return p;
  }
  return "";
}

std::vector<std::string> plugins_on_path() {
  std::vector<std::string> out;
  for (const std::string& p : split_path(std::getenv("TANDEM_BACKEND_PATH"))) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> here;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        const std::string f = e.path().filename().string();
        if (f.starts_with("libtandem-backend-") && f.ends_with(".so")) here.push_back(e.path().string());
      }
      std::sort(here.begin(), here.end());
      out.insert(out.end(), here.begin(), here.end());
    } else if (fs::exists(p, ec)) {
      out.push_back(p);
    }
  }
  return out;
}

PluginBackend::PluginBackend(const PluginLibrary& lib, bool cpu_fallback)
    : lib_(lib), api_(lib.api), cpu_(std::make_unique<CpuBackend>()), cpu_fallback_(cpu_fallback) {
  check(api_->device_count() > 0, "plugin ", lib_.path, " (", api_->name, "): no device");
  if (api_->device_open(0, &device_) != TDB_OK || !device_) fail("device_open(0) failed");
}

PluginBackend::~PluginBackend() {
  if (device_ && api_->device_close) api_->device_close(device_);
}

void PluginBackend::fail(const std::string& what) const {
  throw Error("plugin " + std::string(api_->name) + ": " + what + ": " + last_error_of(api_));
}

std::string PluginBackend::device_name() const {
  tdb_device_info info{};
  info.struct_size = sizeof info;
  if (api_->device_info(device_, &info) != TDB_OK) fail("device_info failed");
  std::string s = info.name ? info.name : "?";
  if (info.vendor && *info.vendor) s += " (" + std::string(info.vendor) + ")";
  return s;
}

void* PluginBackend::alloc(size_t bytes) {
  tdb_buffer* b = nullptr;
  if (api_->buffer_alloc(device_, bytes, &b) != TDB_OK || !b) fail("buffer_alloc of " + std::to_string(bytes) + " bytes failed");
  return b;
}
void PluginBackend::free(void* handle) { api_->buffer_free(device_, static_cast<tdb_buffer*>(handle)); }
void PluginBackend::upload(void* dst, size_t off, const void* src, size_t bytes) {
  if (api_->buffer_write(device_, static_cast<tdb_buffer*>(dst), off, src, bytes) != TDB_OK)
    fail("buffer_write of " + std::to_string(bytes) + " bytes failed");
}
void PluginBackend::download(void* dst, const void* src, size_t off, size_t bytes) {
  if (api_->buffer_read(device_, static_cast<const tdb_buffer*>(src), off, dst, bytes) != TDB_OK)
    fail("buffer_read of " + std::to_string(bytes) + " bytes failed");
}
void PluginBackend::copy(void* dst, size_t doff, const void* src, size_t soff, size_t bytes) {
  if (api_->buffer_copy(device_, static_cast<tdb_buffer*>(dst), doff, static_cast<const tdb_buffer*>(src), soff, bytes) != TDB_OK)
    fail("buffer_copy of " + std::to_string(bytes) + " bytes failed");
}
void PluginBackend::zero(void* dst, size_t off, size_t bytes) {
  if (api_->buffer_zero) {
    if (api_->buffer_zero(device_, static_cast<tdb_buffer*>(dst), off, bytes) != TDB_OK) fail("buffer_zero failed");
    return;
  }
  const std::vector<unsigned char> zeros(bytes, 0);
  upload(dst, off, zeros.data(), bytes);
}
void PluginBackend::sync() {
  if (api_->synchronize(device_) != TDB_OK) fail("synchronize failed (an earlier asynchronous execute)");
}

int32_t PluginBackend::op_id(OpKind op) const {
  std::lock_guard lock(ids_mutex_);
  auto it = ids_.find(op);
  if (it == ids_.end()) it = ids_.emplace(op, api_->op_lookup(op_name(op), 1)).first;
  return it->second;
}

bool PluginBackend::supports(const Node& node) const {
  throw Error(std::string("plugin ") + api_->name + ": supports() needs the input nodes of node '" + node.name +
              "' (internal: call supports_node)");
}

std::string PluginBackend::why_unsupported(const Node& node, std::span<const Node* const> inputs) const {
  const int32_t id = op_id(node.op);
  if (id < 0) return std::string("no kernel for op ") + op_name(node.op);
  AbiNode n(node, id, inputs);
  char why[256] = "";
  if (api_->supports(device_, n.get(), why, sizeof why)) return "";
  why[sizeof why - 1] = 0;
  return why[0] ? why : "declined (no reason given)";
}

bool PluginBackend::supports_node(const Node& node, std::span<const Node* const> inputs) const {
  return why_unsupported(node, inputs).empty();
}

void PluginBackend::execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) {
  const int32_t id = op_id(node.op);
  check(id >= 0, "plugin ", api_->name, ": no kernel for op ", op_name(node.op), " at node '", node.name, "'");
  AbiNode n(node, id, inputs, output);
  if (api_->execute(device_, n.get()) != TDB_OK)
    fail(std::string("execute of op ") + op_name(node.op) + " at node '" + node.name + "' failed");
}

namespace {
// A host (CPU backend) copy of a plugin tensor, and back.
Tensor to_cpu(Backend& plugin, Backend& cpu, const Tensor& t) {
  Tensor c = Tensor::empty(cpu, t.shape, t.dtype);
  plugin.download(c.storage->handle, t.storage->handle, t.offset, t.nbytes());
  return c;
}
void from_cpu(Backend& plugin, const Tensor& dst, const Tensor& c) {
  plugin.upload(dst.storage->handle, dst.offset, c.storage->handle, c.nbytes());
}
tdb_tensor describe(const Tensor& t) {
  tdb_tensor d{};
  d.struct_size = sizeof d;
  d.buffer = static_cast<tdb_buffer*>(t.storage->handle);
  d.offset = t.offset;
  d.dtype = to_abi_dtype(t.dtype);
  d.ndim = static_cast<int32_t>(t.shape.size());
  d.shape = t.shape.data();
  d.strides = t.strides.data();
  return d;
}
}  // namespace

double PluginBackend::sum_squares(const Tensor& t) {
  if (!api_->sum_squares) return cpu_->sum_squares(to_cpu(*this, *cpu_, t));
  const tdb_tensor d = describe(t);
  double out = 0;
  if (api_->sum_squares(device_, &d, &out) != TDB_OK) fail("sum_squares failed");
  return out;
}

void PluginBackend::adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  if (!api_->adamw) {
    Tensor cp = to_cpu(*this, *cpu_, p), cg = to_cpu(*this, *cpu_, g), cm = to_cpu(*this, *cpu_, m),
           cv = to_cpu(*this, *cpu_, v);
    cpu_->adamw(cp, cg, cm, cv, s);
    from_cpu(*this, p, cp), from_cpu(*this, m, cm), from_cpu(*this, v, cv);
    return;
  }
  const tdb_tensor dp = describe(p), dg = describe(g), dm = describe(m), dv = describe(v);
  tdb_adamw_args a{};
  a.struct_size = sizeof a;
  a.lr = s.lr, a.beta1 = s.beta1, a.beta2 = s.beta2, a.eps = s.eps, a.weight_decay = s.weight_decay;
  a.grad_scale = s.grad_scale;
  a.step = s.step;
  if (api_->adamw(device_, &dp, &dg, &dm, &dv, &a) != TDB_OK) fail("adamw failed");
}

void PluginBackend::axpy(const Tensor& y, float alpha, const Tensor& x) {
  if (!api_->axpy) {
    Tensor cy = to_cpu(*this, *cpu_, y), cx = to_cpu(*this, *cpu_, x);
    cpu_->axpy(cy, alpha, cx);
    from_cpu(*this, y, cy);
    return;
  }
  const tdb_tensor dy = describe(y), dx = describe(x);
  if (api_->axpy(device_, &dy, alpha, &dx) != TDB_OK) fail("axpy failed");
}

}  // namespace tandem
