// NCCL between NVIDIA GPUs (one rank per GPU): the gradient all-reduce runs on device memory
// through NCCL; everything else (small host values, ZeRO's and the deterministic chain's host
// staging) goes through the MPI communicator it wraps, which also shares NCCL's unique id.
// Built when CMake finds CUDA, MPI and NCCL (TANDEM_HAVE_NCCL).
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace tandem {

// Joins every rank's current CUDA device (the backend's) into one NCCL communicator.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> mpi, double timeout_s);

}  // namespace tandem
