// NCCL between NVIDIA GPUs (one rank per GPU): the gradient all-reduce runs on device memory
// through NCCL; everything else (small host values, ZeRO's and the deterministic chain's host
// staging) goes through the host communicator it wraps (MPI, which also shares NCCL's unique id;
// or, for one process started without a launcher, the single communicator: a one-rank NCCL
// communicator). Built when CMake finds CUDA and NCCL (TANDEM_HAVE_NCCL), with or without MPI.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace tandem {

// Joins every rank's current CUDA device (the backend's) into one NCCL communicator.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, double timeout_s);

}  // namespace tandem
