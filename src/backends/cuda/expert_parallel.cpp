// Expert-parallel token exchange (ops/expert_parallel.h): ep_dispatch, ep_combine, ep_ids. The
// exchange is an all-to-all through the host communicator (dist/communicator.h), so these ops
// stage through host memory, as the OpenCL backend's do: inputs are read back, the CPU backend's
// kernels (the same plan, layout and communication calls) run on the host copies, and the output
// is written back. Only rows and ids move; values arrive bit-identical.
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/kernels.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

Backend& host() {
  static CpuBackend cpu;
  return cpu;
}

Tensor to_host_tensor(const Tensor& t) {
  if (t.dtype == DType::i32) return Tensor::from_host_i32(host(), t.shape, t.to_host_i32());
  return Tensor::from_host(host(), t.shape, t.to_host());
}

void staged(CudaBackend& be, cpu::Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  std::vector<Tensor> ins;
  for (const Tensor& t : in) ins.push_back(to_host_tensor(t));
  const Tensor o = Tensor::zeros(host(), out.shape, out.dtype);
  k(node, ins, o);
  be.upload(out.storage->handle, out.offset, o.storage->handle, out.nbytes());
}

}  // namespace

void ep_dispatch(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  staged(be, cpu::ep_dispatch, node, in, out);
}
void ep_combine(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  staged(be, cpu::ep_combine, node, in, out);
}
void ep_ids(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  staged(be, cpu::ep_ids, node, in, out);
}

}  // namespace tandem::cuda
