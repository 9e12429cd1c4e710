#include "dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#ifdef TANDEM_HAVE_MPI
#include "dist/mpi_communicator.h"
#endif

namespace tandem {

namespace {

using Clock = std::chrono::steady_clock;

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, double timeout_s) : host_(std::move(host)), timeout_(timeout_s) {
    cuda_ok(cudaGetDevice(&device_), "cudaGetDevice");
    // Rank 0 makes the id and the host communicator shares it (with one process, MPI or not, the
    // broadcast moves nothing: a one-rank NCCL communicator).
    ncclUniqueId id{};
    if (host_->rank() == 0) nccl_ok(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host_->broadcast(&id, sizeof id, 0);
    // Non-blocking: every NCCL call returns at once and completion is polled, so a lost rank
    // meets the timeout instead of hanging the job.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    nccl_ok(ncclCommInitRankConfig(&comm_, host_->size(), id, host_->rank(), &config), "ncclCommInitRank");
    wait_comm("ncclCommInitRank");
    cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclCommunicator() override {
    if (stream_) cudaStreamDestroy(stream_);
    if (comm_) ncclCommDestroy(comm_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }

  bool works_on_device() const override { return true; }
  void all_reduce_sum_device(float* data, size_t n) override {
    nccl_ok(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce");
    wait_stream("all_reduce (NCCL)");
    bytes_sent_ += 2 * (size() - 1) * n * sizeof(float) / size();
  }

  // Host memory: the wrapped communicator (MPI, or the single process's).
  void all_reduce_sum(float* data, size_t n) override { forward([&] { host_->all_reduce_sum(data, n); }); }
  void ordered_sum(float* const* terms, size_t count, size_t n) override {
    forward([&] { host_->ordered_sum(terms, count, n); });
  }
  void reduce_scatter_sum(const float* in, float* out, size_t n) override {
    forward([&] { host_->reduce_scatter_sum(in, out, n); });
  }
  void all_gather(const void* in, void* out, size_t bytes) override { forward([&] { host_->all_gather(in, out, bytes); }); }
  void all_to_all(const void* s, const size_t* sb, void* r, const size_t* rb) override {
    forward([&] { host_->all_to_all(s, sb, r, rb); });
  }
  void broadcast(void* data, size_t bytes, int root) override { forward([&] { host_->broadcast(data, bytes, root); }); }
  void barrier() override { host_->barrier(); }

 private:
  template <typename F>
  void forward(F&& f) {
    const uint64_t before = host_->bytes_sent();
    f();
    bytes_sent_ += host_->bytes_sent() - before;
  }

  void cuda_ok(cudaError_t e, const char* what) const {
    if (e != cudaSuccess) throw Error(std::string("NCCL communicator: ") + what + ": " + cudaGetErrorString(e));
  }
  void nccl_ok(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess && r != ncclInProgress)
      throw Error(std::string(what) + " failed on rank " + std::to_string(host_->rank()) + ": " + ncclGetErrorString(r));
  }

  // Past the timeout: abort the NCCL communicator (unblocking the GPU) and end the job, naming
  // the call; with two ranks the lost one is the other.
  [[noreturn]] void timed_out(const char* what) {
    std::fprintf(stderr,
                 "error: rank %d: collective %s did not complete within %.0f s (--collective-timeout): %s; ending the job\n",
                 rank(), what, timeout_,
                 size() == 1   ? "a one-rank communicator: the GPU or NCCL itself is stuck"
                 : size() == 2 ? ("rank " + std::to_string(1 - rank()) + " is lost or stuck").c_str()
                               : "another rank is lost or stuck");
    std::fflush(stderr);
    ncclCommAbort(comm_);
    comm_ = nullptr;
#ifdef TANDEM_HAVE_MPI
    mpi_abort_job(3);
#else
    std::_Exit(3);
#endif
  }

  void wait_comm(const char* what) {
    const auto start = Clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      nccl_ok(ncclCommGetAsyncError(comm_, &state), what);
      if (state == ncclSuccess) return;
      nccl_ok(state, what);
      if (std::chrono::duration<double>(Clock::now() - start).count() > timeout_) timed_out(what);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void wait_stream(const char* what) {
    const auto start = Clock::now();
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) cuda_ok(q, what);
      ncclResult_t state = ncclSuccess;
      nccl_ok(ncclCommGetAsyncError(comm_, &state), what);
      if (state != ncclSuccess && state != ncclInProgress) nccl_ok(state, what);
      if (std::chrono::duration<double>(Clock::now() - start).count() > timeout_) timed_out(what);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  std::unique_ptr<Communicator> host_;
  double timeout_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, double timeout_s) {
  return std::make_unique<NcclCommunicator>(std::move(host), timeout_s);
}

}  // namespace tandem
