// Collectives between the processes of one job. tandem moves no bytes itself: MPI moves them
// between CPU (and OpenCL) ranks, NCCL between NVIDIA GPUs; a single process has a no-op
// communicator, so the training loop has one code path for every world size.
//
// Buffers are host memory (float32 unless said otherwise). Every call is collective: all ranks
// make the same calls in the same order with the same sizes. Calls that do not complete within
// the communicator's timeout abort the whole job with an error naming the collective and, where
// the pattern knows it, the rank being waited on: a dead rank never leaves the others hanging.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace tandem {

// Where this process sits in the job, from the launcher's environment:
// OpenMPI's OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}, or torchrun-style RANK/WORLD_SIZE/LOCAL_RANK
// (with MASTER_ADDR/MASTER_PORT). Neither set: a single process (rank 0 of 1).
struct WorldInfo {
  int rank = 0, size = 1, local_rank = 0;
  std::string launcher = "none";  // "openmpi", "torchrun" or "none"
};
WorldInfo discover_world();

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data <- sum over ranks of data, on every rank. The reduction order is the engine's choice
  // (fast); with 2 ranks it is one addition, the same bits on both ranks.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  // A fixed-order sum: each rank holds `count` terms (n floats each) that follow the previous
  // rank's in one global sequence t_0, t_1, ...; on return terms[0] holds ((t_0 + t_1) + t_2) + ...
  // on every rank. The bits depend only on the terms and their order, never on the engine or on
  // how many ranks hold them.
  virtual void ordered_sum(float* const* terms, size_t count, size_t n) = 0;
  // out (n_per_rank) <- this rank's slice [rank*n, (rank+1)*n) of the sum of every rank's `in`
  // (size() * n_per_rank).
  virtual void reduce_scatter_sum(const float* in, float* out, size_t n_per_rank) = 0;
  // out (size() * n_per_rank) <- every rank's `in` (n_per_rank), in rank order.
  virtual void all_gather(const void* in, void* out, size_t bytes_per_rank) = 0;
  // Rank r's block j (bytes[j] bytes, at offsets in send order) goes to rank j; recv gets block r
  // of every rank j, in rank order. Counts are per destination/source rank.
  virtual void all_to_all(const void* send, const size_t* send_bytes, void* recv, const size_t* recv_bytes) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // A collective started but not finished: test() lets it progress (true once complete), wait()
  // finishes it (under the timeout). The buffer stays untouched until then.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual bool test() = 0;
    virtual void wait() = 0;
  };
  // all_reduce_sum that returns at once, so the caller computes meanwhile (the gradient buckets
  // of data-parallel training, during the backward pass). Started in the same order on every rank.
  // The default runs it to completion right away.
  virtual std::unique_ptr<Pending> start_all_reduce_sum(float* data, size_t n);
  // Whether all_reduce_sum_device works (NCCL): then gradients need not visit the host.
  virtual bool works_on_device() const { return false; }
  // data (n floats in the compute backend's device memory) <- the sum over ranks. The caller has
  // synchronised the backend; the result is complete on return.
  virtual void all_reduce_sum_device(float* data, size_t n);
  // Small helpers built on the above.
  double all_reduce_max(double v);
  double all_reduce_sum(double v);

  // Bytes this rank sent through collectives so far (what the benchmark reports per step).
  uint64_t bytes_sent() const { return bytes_sent_; }

 protected:
  uint64_t bytes_sent_ = 0;
};

// kind: "auto" (MPI when the launcher started more than one process, else single), "single",
// "mpi", "nccl" (the host communicator NCCL wraps: MPI under a launcher, else single). timeout_s bounds every collective. Errors: MPI requested but not built in, or a
// torchrun-style world size > 1 without an MPI launcher.
std::unique_ptr<Communicator> make_communicator(const std::string& kind, double timeout_s);

// The communicator the expert-parallel ops (ops/expert_parallel.h) exchange tokens through: set
// by the trainer for the life of a run (nullptr: none; those ops then work on one rank only).
void set_expert_parallel_communicator(Communicator* comm);
Communicator* expert_parallel_communicator();

// True when this build has MPI.
bool have_mpi();

}  // namespace tandem
