#include "dist/mpi_communicator.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/error.h"

namespace tandem {

namespace {

using Clock = std::chrono::steady_clock;

// Float chunks of the ordered chain: small enough to pipeline through the ranks, large enough to
// amortise a message.
constexpr size_t kChainChunk = size_t{1} << 20;

int as_count(size_t n, const char* what) {
  check(n <= static_cast<size_t>(INT_MAX), what, ": ", n, " elements exceed one MPI message (", INT_MAX, ")");
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const WorldInfo& w, double timeout_s) : timeout_(timeout_s) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // OpenMP threads compute; only the main thread talks to MPI.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      std::atexit([] {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
      });
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    check(rank_ == w.rank && size_ == w.size, "MPI says rank ", rank_, " of ", size_, " but the launcher environment (",
          w.launcher, ") says rank ", w.rank, " of ", w.size);
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* data, size_t n) override {
    MPI_Request r;
    ok(MPI_Iallreduce(MPI_IN_PLACE, data, as_count(n, "all_reduce"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r),
       "all_reduce");
    wait(r, "all_reduce", -1);
    bytes_sent_ += 2 * (size_ - 1) * n * sizeof(float) / size_;  // a ring's bus volume
  }

  std::unique_ptr<Pending> start_all_reduce_sum(float* data, size_t n) override {
    auto p = std::make_unique<MpiPending>(*this);
    ok(MPI_Iallreduce(MPI_IN_PLACE, data, as_count(n, "all_reduce"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &p->request),
       "all_reduce");
    bytes_sent_ += 2 * (size_ - 1) * n * sizeof(float) / size_;
    return p;
  }

  void ordered_sum(float* const* terms, size_t count, size_t n) override {
    // A chain: rank r receives the sum of every earlier rank's terms, adds its own one by one and
    // passes it on; the last rank holds the total and broadcasts it. Chunked, so the ranks work
    // on different chunks at once.
    std::vector<float> in(std::min(n, kChainChunk));
    for (size_t off = 0; off < n; off += kChainChunk) {
      const size_t len = std::min(kChainChunk, n - off);
      float* acc = terms[0] + off;
      if (rank_ > 0) {
        MPI_Request r;
        ok(MPI_Irecv(in.data(), as_count(len, "ordered_sum"), MPI_FLOAT, rank_ - 1, 7, MPI_COMM_WORLD, &r),
           "ordered_sum");
        wait(r, "ordered_sum (receiving the partial sum)", rank_ - 1);
        for (size_t i = 0; i < len; ++i) acc[i] = in[i] + acc[i];
      }
      for (size_t k = 1; k < count; ++k)
        for (size_t i = 0; i < len; ++i) acc[i] = acc[i] + terms[k][off + i];
      if (rank_ < size_ - 1) {
        MPI_Request r;
        ok(MPI_Isend(acc, as_count(len, "ordered_sum"), MPI_FLOAT, rank_ + 1, 7, MPI_COMM_WORLD, &r), "ordered_sum");
        wait(r, "ordered_sum (passing the partial sum on)", rank_ + 1);
        bytes_sent_ += len * sizeof(float);
      }
    }
    broadcast(terms[0], n * sizeof(float), size_ - 1);
  }

  void reduce_scatter_sum(const float* in, float* out, size_t n_per_rank) override {
    MPI_Request r;
    ok(MPI_Ireduce_scatter_block(in, out, as_count(n_per_rank, "reduce_scatter"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r),
       "reduce_scatter");
    wait(r, "reduce_scatter", -1);
    bytes_sent_ += (size_ - 1) * n_per_rank * sizeof(float);
  }

  void all_gather(const void* in, void* out, size_t bytes_per_rank) override {
    MPI_Request r;
    ok(MPI_Iallgather(in, as_count(bytes_per_rank, "all_gather"), MPI_BYTE, out, as_count(bytes_per_rank, "all_gather"),
                      MPI_BYTE, MPI_COMM_WORLD, &r),
       "all_gather");
    wait(r, "all_gather", -1);
    bytes_sent_ += (size_ - 1) * bytes_per_rank;
  }

  void all_to_all(const void* send, const size_t* send_bytes, void* recv, const size_t* recv_bytes) override {
    std::vector<int> sc(static_cast<size_t>(size_)), sd(sc.size()), rc(sc.size()), rd(sc.size());
    size_t so = 0, ro = 0;
    for (int j = 0; j < size_; ++j) {
      sc[j] = as_count(send_bytes[j], "all_to_all");
      rc[j] = as_count(recv_bytes[j], "all_to_all");
      sd[j] = as_count(so, "all_to_all");
      rd[j] = as_count(ro, "all_to_all");
      so += send_bytes[j];
      ro += recv_bytes[j];
      if (j != rank_) bytes_sent_ += send_bytes[j];
    }
    MPI_Request r;
    ok(MPI_Ialltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, MPI_COMM_WORLD, &r),
       "all_to_all");
    wait(r, "all_to_all", -1);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    MPI_Request r;
    ok(MPI_Ibcast(data, as_count(bytes, "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD, &r), "broadcast");
    wait(r, "broadcast", rank_ == root ? -1 : root);
    if (rank_ == root) bytes_sent_ += bytes;  // at least once; trees forward the rest
  }

  void barrier() override {
    MPI_Request r;
    ok(MPI_Ibarrier(MPI_COMM_WORLD, &r), "barrier");
    wait(r, "barrier", -1);
  }

 private:
  struct MpiPending final : Pending {
    explicit MpiPending(MpiCommunicator& c) : comm(c) {}
    bool test() override {
      if (request == MPI_REQUEST_NULL) return true;
      int done = 0;
      comm.ok(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "all_reduce (bucket)");
      return done != 0;
    }
    void wait() override {
      if (request != MPI_REQUEST_NULL) comm.wait(request, "all_reduce (bucket)", -1);
    }
    MpiCommunicator& comm;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  void ok(int code, const char* what) const {
    if (code == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    throw Error(std::string("MPI ") + what + " failed on rank " + std::to_string(rank_) + ": " + std::string(msg, len));
  }

  // Waits for a non-blocking call; past the timeout the job ends here, naming the call and the
  // rank this one waits on (peer -1: any of them, for an all-to-all pattern).
  void wait(MPI_Request& r, const char* what, int peer) {
    if (peer < 0 && size_ == 2) peer = 1 - rank_;  // the only other rank
    const auto start = Clock::now();
    int spins = 0;
    for (;;) {
      int done = 0;
      ok(MPI_Test(&r, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (++spins < 2000) {
        sched_yield();
        continue;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      if (waited > timeout_) {
        std::fprintf(stderr,
                     "error: rank %d: collective %s did not complete within %.0f s (--collective-timeout): %s; "
                     "ending the job\n",
                     rank_, what, timeout_,
                     peer >= 0 ? ("rank " + std::to_string(peer) + " is lost or stuck").c_str()
                               : "another rank is lost or stuck");
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
        std::_Exit(3);
      }
    }
  }

  double timeout_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const WorldInfo& world, double timeout_s) {
  return std::make_unique<MpiCommunicator>(world, timeout_s);
}

void mpi_abort_job(int code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace tandem
