#include "backends/cpu/host_staging.h"

#include <vector>

#include "backends/cpu/cpu_backend.h"

namespace tandem::cpu {

namespace {

Backend& host() {
  static CpuBackend cpu;
  return cpu;
}

Tensor to_host_tensor(const Tensor& t) {
  if (t.dtype == DType::i32) return Tensor::from_host_i32(host(), t.shape, t.to_host_i32());
  return Tensor::from_host(host(), t.shape, t.to_host());
}

}  // namespace

void run_staged(Backend& device, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  std::vector<Tensor> ins;
  for (const Tensor& t : in) ins.push_back(to_host_tensor(t));
  const Tensor o = Tensor::zeros(host(), out.shape, out.dtype);
  k(node, ins, o);
  device.upload(out.storage->handle, out.offset, o.storage->handle, out.nbytes());
}

}  // namespace tandem::cpu
