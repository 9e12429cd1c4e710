// Expert-parallel token exchange (ops/expert_parallel.h): ep_dispatch, ep_combine, ep_ids. The
// exchange is an all-to-all through the host communicator (dist/communicator.h), so these ops run
// the CPU backend's kernels on host copies (backends/cpu/host_staging.h): the same plan, layout
// and communication calls; only rows and ids move, and values arrive bit-identical.
#include "backends/cpu/host_staging.h"
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

void ep_dispatch(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  cpu::run_staged(be, cpu::ep_dispatch, node, in, out);
}
void ep_combine(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  cpu::run_staged(be, cpu::ep_combine, node, in, out);
}
void ep_ids(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  cpu::run_staged(be, cpu::ep_ids, node, in, out);
}

}  // namespace tandem::opencl
