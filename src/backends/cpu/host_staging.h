// Running a CPU kernel for a device backend through host memory: for ops whose work is host-side
// anyway (the expert-parallel all-to-all goes through the host communicator), a device backend
// reads the inputs back, runs the CPU backend's kernel on the host copies and writes the output
// back. Only the data moves, so values arrive bit-identical to the CPU backend's.
#pragma once
#include <span>

#include "backends/cpu/kernels.h"

namespace tandem::cpu {

// out (on `device`) = k(node, host copies of in): in and out live on `device`.
void run_staged(Backend& device, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out);

}  // namespace tandem::cpu
