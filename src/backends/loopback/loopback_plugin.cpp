// The loopback plugin: tandem's CPU kernels behind the plugin ABI (include/tandem/backend_abi.h).
// Buffers are host memory; each node's descriptors are turned back into a Node and Tensors
// (backends/plugin/abi_node.h) and run by this plugin's own copy of the CPU backend, so a run
// through it must be bit-identical to --backend cpu: any difference is the ABI's (an attribute
// lost or rounded, a tensor mis-described). Everything the host calls is wrapped: no exception
// leaves the plugin; a failure is a status and a thread-local message.
#include <tandem/backend_abi.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include "backends/cpu/cpu_backend.h"
#include "backends/plugin/abi_node.h"
#include "ops/op_kind.h"

namespace {

using namespace tandem;

thread_local std::string g_error;
CpuBackend* g_cpu = nullptr;
struct tdb_device_s {};
tdb_device_s g_device;

template <class F> tdb_status guarded(F&& f) {
  try {
    g_error.clear();
    f();
    return TDB_OK;
  } catch (const std::exception& e) {
    g_error = e.what();
  } catch (...) {
    g_error = "unknown exception";
  }
  return TDB_INTERNAL;
}

constexpr OpKind kOps[] = {
#define TANDEM_LIST(name) OpKind::name,
    TANDEM_OPS(TANDEM_LIST)
#undef TANDEM_LIST
};

Node decode(const tdb_node* n) { return node_from_abi(*n, static_cast<OpKind>(n->op_id)); }

tdb_status lb_init(const tdb_host*, const char*) {
  return guarded([] {
    if (!g_cpu) g_cpu = new CpuBackend();  // lives until exit, like the plugin
  });
}
void lb_shutdown() {}
const char* lb_last_error() { return g_error.c_str(); }
int32_t lb_device_count() { return 1; }
tdb_status lb_device_open(int32_t index, tdb_device** out) {
  if (index != 0) {
    g_error = "loopback has one device (0), not " + std::to_string(index);
    return TDB_INVALID_ARGUMENT;
  }
  *out = reinterpret_cast<tdb_device*>(&g_device);
  return TDB_OK;
}
void lb_device_close(tdb_device*) {}
tdb_status lb_device_info(tdb_device*, tdb_device_info* out) {
  if (out->struct_size < TDB_STRUCT_SIZE(tdb_device_info, flags)) {
    g_error = "device_info: struct too small";
    return TDB_INVALID_ARGUMENT;
  }
  out->name = "host CPU through the plugin ABI (tandem's CPU kernels)";
  out->vendor = "tandem";
  out->mem_total = out->mem_free = 0;
  out->alignment = 64;
  out->flags = TDB_DEVICE_DETERMINISTIC;
  return TDB_OK;
}

tdb_status lb_buffer_alloc(tdb_device*, uint64_t bytes, tdb_buffer** out) {
  return guarded([&] { *out = static_cast<tdb_buffer*>(g_cpu->alloc(bytes)); });
}
void lb_buffer_free(tdb_device*, tdb_buffer* b) { g_cpu->free(b); }
tdb_status lb_buffer_write(tdb_device*, tdb_buffer* dst, uint64_t off, const void* src, uint64_t n) {
  std::memcpy(reinterpret_cast<char*>(dst) + off, src, n);
  return TDB_OK;
}
tdb_status lb_buffer_read(tdb_device*, const tdb_buffer* src, uint64_t off, void* dst, uint64_t n) {
  std::memcpy(dst, reinterpret_cast<const char*>(src) + off, n);
  return TDB_OK;
}
tdb_status lb_buffer_copy(tdb_device*, tdb_buffer* dst, uint64_t doff, const tdb_buffer* src, uint64_t soff, uint64_t n) {
  std::memmove(reinterpret_cast<char*>(dst) + doff, reinterpret_cast<const char*>(src) + soff, n);
  return TDB_OK;
}
tdb_status lb_buffer_zero(tdb_device*, tdb_buffer* dst, uint64_t off, uint64_t n) {
  std::memset(reinterpret_cast<char*>(dst) + off, 0, n);
  return TDB_OK;
}

// The op's id is tandem's OpKind: this plugin is tandem's own CPU kernels.
int32_t lb_op_lookup(const char* op, uint32_t version) {
  if (version != 1 || !g_cpu) return -1;
  for (OpKind k : kOps)
    if (std::strcmp(op_name(k), op) == 0) {
      Node probe;
      probe.op = k;
      return g_cpu->supports(probe) ? static_cast<int32_t>(k) : -1;
    }
  return -1;
}

int32_t lb_supports(tdb_device*, const tdb_node* n, char* why, size_t why_len) {
  try {
    const Node node = decode(n);
    // Expert parallelism across ranks needs the host's communicator, which no plugin sees.
    if (node.op == OpKind::ep_dispatch || node.op == OpKind::ep_combine || node.op == OpKind::ep_ids)
      if (node.attr<ExpertParallelAttrs>().ranks != 1) {
        std::snprintf(why, why_len, "expert parallelism over %d ranks", node.attr<ExpertParallelAttrs>().ranks);
        return 0;
      }
    for (int32_t i = 0; i < n->n_inputs; ++i)
      if (!from_abi_dtype(n->inputs[i]->dtype)) {
        std::snprintf(why, why_len, "input %d has unknown dtype %d", i, n->inputs[i]->dtype);
        return 0;
      }
    return g_cpu->supports(node) ? 1 : 0;
  } catch (const std::exception& e) {
    std::snprintf(why, why_len, "%s", e.what());
    return 0;
  }
}

tdb_status lb_execute(tdb_device*, const tdb_node* n) {
  return guarded([&] {
    const Node node = decode(n);
    Tensor ins[8];
    const int32_t k = n->n_inputs;
    if (k > 8) throw std::runtime_error("more than 8 inputs");
    for (int32_t i = 0; i < k; ++i) ins[i] = tensor_from_abi(*n->inputs[i], g_cpu);
    g_cpu->execute(node, std::span<const Tensor>(ins, static_cast<size_t>(k)), tensor_from_abi(*n->output, g_cpu));
  });
}
tdb_status lb_synchronize(tdb_device*) { return TDB_OK; }

tdb_status lb_sum_squares(tdb_device*, const tdb_tensor* t, double* out) {
  return guarded([&] { *out = g_cpu->sum_squares(tensor_from_abi(*t, g_cpu)); });
}
tdb_status lb_adamw(tdb_device*, const tdb_tensor* p, const tdb_tensor* g, const tdb_tensor* m, const tdb_tensor* v,
                    const tdb_adamw_args* a) {
  return guarded([&] {
    AdamWStep s{a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, a->step, a->grad_scale};
    g_cpu->adamw(tensor_from_abi(*p, g_cpu), tensor_from_abi(*g, g_cpu), tensor_from_abi(*m, g_cpu),
                 tensor_from_abi(*v, g_cpu), s);
  });
}
tdb_status lb_axpy(tdb_device*, const tdb_tensor* y, float alpha, const tdb_tensor* x) {
  return guarded([&] { g_cpu->axpy(tensor_from_abi(*y, g_cpu), alpha, tensor_from_abi(*x, g_cpu)); });
}

tdb_backend_api make_api() {
  tdb_backend_api a{};
  a.struct_size = sizeof a;
  a.abi_major = TDB_ABI_MAJOR;
  a.abi_minor = TDB_ABI_MINOR;
  a.name = "loopback";
  a.version = "1.0";
  a.init = lb_init;
  a.shutdown = lb_shutdown;
  a.last_error = lb_last_error;
  a.device_count = lb_device_count;
  a.device_open = lb_device_open;
  a.device_close = lb_device_close;
  a.device_info = lb_device_info;
  a.buffer_alloc = lb_buffer_alloc;
  a.buffer_free = lb_buffer_free;
  a.buffer_write = lb_buffer_write;
  a.buffer_read = lb_buffer_read;
  a.buffer_copy = lb_buffer_copy;
  a.buffer_zero = lb_buffer_zero;
  a.op_lookup = lb_op_lookup;
  a.supports = lb_supports;
  a.execute = lb_execute;
  a.synchronize = lb_synchronize;
  a.sum_squares = lb_sum_squares;
  a.adamw = lb_adamw;
  a.axpy = lb_axpy;
  return a;
}

}  // namespace

// The table whatever the host's version: a host of another major refuses it by its abi_major (kept
// at the same place by every major), naming both versions.
extern "C" TDB_EXPORT const tdb_backend_api* tandem_backend_get_api(uint32_t, uint32_t) {
  static const tdb_backend_api api = make_api();
  return &api;
}
