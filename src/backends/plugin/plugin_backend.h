// Out-of-tree backends loaded at run time through the C ABI of include/tandem/backend_abi.h.
//  - load_plugin(path) dlopens a plugin once per process (never unloaded), checks it (symbol,
//    ABI major, table size, required entries) and calls its init; every refusal is one error line
//    naming the file and what is wrong.
//  - PluginBackend is a Backend over one device of a loaded plugin. Every call into the plugin is
//    checked: a failure becomes an Error naming the plugin, the node and the op, with the plugin's
//    last_error. Optimizer kernels the plugin leaves NULL run on the CPU (copies through the host).
//  - Nodes the plugin does not support run on the CPU backend when fallback is on (Program places
//    them once and inserts the copies; see core/program.h).
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <tandem/backend_abi.h>

#include "core/backend.h"
#include "ops/op_kind.h"

namespace tandem {

struct PluginLibrary {
  std::string path;
  void* handle = nullptr;
  const tdb_backend_api* api = nullptr;
};

// Loads (once per path) and initialises a plugin; throws an Error naming the file on refusal.
const PluginLibrary& load_plugin(const std::string& path);
// The file TANDEM_BACKEND_PATH gives for a backend name (libtandem-backend-NAME.so in one of its
// colon-separated directories, or a listed file of that name), or "" when none.
std::string find_plugin(const std::string& name);
// Every libtandem-backend-*.so file in the TANDEM_BACKEND_PATH directories (and listed files).
std::vector<std::string> plugins_on_path();

class PluginBackend final : public Backend {
 public:
  PluginBackend(const PluginLibrary& lib, bool cpu_fallback);
  ~PluginBackend() override;
  std::string name() const override { return api_->name; }
  void* alloc(size_t bytes) override;
  void free(void* handle) override;
  void upload(void* dst, size_t dst_offset, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t src_offset, size_t bytes) override;
  void copy(void* dst, size_t dst_offset, const void* src, size_t src_offset, size_t bytes) override;
  void zero(void* dst, size_t offset, size_t bytes) override;
  void sync() override;
  void attach_thread() override { cpu_->attach_thread(); }  // the CPU fallback's kernels run on this thread
  bool supports(const Node& node) const override;
  bool supports_node(const Node& node, std::span<const Node* const> inputs) const override;
  // Why the plugin declines a node ("" when it accepts it).
  std::string why_unsupported(const Node& node, std::span<const Node* const> inputs) const;
  Backend* fallback() override { return cpu_fallback_ ? cpu_.get() : nullptr; }
  void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) override;
  double sum_squares(const Tensor& t) override;
  void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWStep& s) override;
  void axpy(const Tensor& y, float alpha, const Tensor& x) override;

  const PluginLibrary& library() const { return lib_; }
  // Whether the plugin has this optimizer kernel (adamw, sum_squares, axpy); if not, the host
  // runs it on the CPU.
  bool has_optimizer_kernel(const std::string& name) const {
    return name == "adamw" ? api_->adamw != nullptr : name == "sum_squares" ? api_->sum_squares != nullptr
                                                    : name == "axpy" && api_->axpy != nullptr;
  }
  std::string device_name() const;

 private:
  int32_t op_id(OpKind op) const;  // the plugin's id (op_lookup once per op), -1: no kernel
  [[noreturn]] void fail(const std::string& what) const;  // with the plugin's last_error
  const PluginLibrary& lib_;
  const tdb_backend_api* api_;
  tdb_device* device_ = nullptr;
  std::unique_ptr<Backend> cpu_;  // optimizer kernels the plugin lacks; fallback nodes
  bool cpu_fallback_;             // false: --fallback none
  mutable std::mutex ids_mutex_;
  mutable std::map<OpKind, int32_t> ids_;
};

}  // namespace tandem
