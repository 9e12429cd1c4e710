// The MPI communicator (OpenMPI): CPU and OpenCL ranks exchange host buffers through it, and it
// shares the NCCL unique id between GPU ranks. Built when CMake finds MPI (TANDEM_HAVE_MPI).
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace tandem {

// Initialises MPI (once per process; finalised at exit) and returns MPI_COMM_WORLD's
// communicator. Checks that MPI's view of the world matches the launcher's environment.
std::unique_ptr<Communicator> make_mpi_communicator(const WorldInfo& world, double timeout_s);

// Ends the job from any rank after an error on this one: prints nothing, tears every rank down.
[[noreturn]] void mpi_abort_job(int code);

}  // namespace tandem
