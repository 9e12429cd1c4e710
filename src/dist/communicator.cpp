#include "dist/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "core/error.h"
#ifdef TANDEM_HAVE_MPI
#include "dist/mpi_communicator.h"
#endif

namespace tandem {

namespace {

std::optional<int> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  check(*end == '\0' && x >= 0 && x < (1 << 24), "environment variable ", name, "='", v, "' is not a rank number");
  return static_cast<int>(x);
}

// The single-process communicator: every collective over one rank is the identity.
class SingleCommunicator final : public Communicator {
 public:
  std::string name() const override { return "single"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, size_t) override {}
  void ordered_sum(float* const* terms, size_t count, size_t n) override {
    for (size_t k = 1; k < count; ++k)
      for (size_t i = 0; i < n; ++i) terms[0][i] = terms[0][i] + terms[k][i];
  }
  void reduce_scatter_sum(const float* in, float* out, size_t n) override {
    if (in != out) std::memmove(out, in, n * sizeof(float));
  }
  void all_gather(const void* in, void* out, size_t bytes) override {
    if (in != out) std::memmove(out, in, bytes);
  }
  void all_to_all(const void* send, const size_t* send_bytes, void* recv, const size_t* recv_bytes) override {
    check(send_bytes[0] == recv_bytes[0], "all_to_all: a single rank sends ", send_bytes[0], " bytes to itself but expects ",
          recv_bytes[0]);
    if (send != recv) std::memmove(recv, send, send_bytes[0]);
  }
  void broadcast(void*, size_t, int root) override { check(root == 0, "broadcast: root ", root, " of a single rank"); }
  void barrier() override {}
};

}  // namespace

WorldInfo discover_world() {
  WorldInfo w;
  if (auto size = env_int("OMPI_COMM_WORLD_SIZE")) {
    w.launcher = "openmpi";
    w.size = *size;
    w.rank = env_int("OMPI_COMM_WORLD_RANK").value_or(0);
    w.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
  } else if (auto ws = env_int("WORLD_SIZE")) {
    w.launcher = "torchrun";
    w.size = *ws;
    w.rank = env_int("RANK").value_or(0);
    w.local_rank = env_int("LOCAL_RANK").value_or(0);
  }
  check(w.size >= 1 && w.rank < w.size, "launcher environment (", w.launcher, "): rank ", w.rank, " is outside world size ",
        w.size);
  return w;
}

namespace {
struct Done final : Communicator::Pending {
  bool test() override { return true; }
  void wait() override {}
};
}  // namespace

std::unique_ptr<Communicator::Pending> Communicator::start_all_reduce_sum(float* data, size_t n) {
  all_reduce_sum(data, n);
  return std::make_unique<Done>();
}

void Communicator::all_reduce_sum_device(float*, size_t) {
  throw Error("communicator '" + name() + "' works on host memory only");
}

double Communicator::all_reduce_max(double v) {
  std::vector<double> all(static_cast<size_t>(size()));
  all_gather(&v, all.data(), sizeof v);
  double m = all[0];
  for (double x : all) m = std::max(m, x);
  return m;
}

double Communicator::all_reduce_sum(double v) {
  std::vector<double> all(static_cast<size_t>(size()));
  all_gather(&v, all.data(), sizeof v);
  double s = 0;
  for (double x : all) s += x;  // rank order: the same bits on every rank
  return s;
}

namespace {
Communicator* g_expert_comm = nullptr;
}  // namespace

void set_expert_parallel_communicator(Communicator* comm) { g_expert_comm = comm; }
Communicator* expert_parallel_communicator() { return g_expert_comm; }

bool have_mpi() {
#ifdef TANDEM_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_communicator(const std::string& kind, double timeout_s) {
  check(kind == "auto" || kind == "single" || kind == "mpi" || kind == "nccl", "unknown communicator '", kind,
        "' (auto, single, mpi, nccl)");
  check(timeout_s > 0, "collective timeout must be positive, got ", timeout_s);
  const WorldInfo w = discover_world();
  // --comm nccl in one process started without a launcher: NCCL wraps the single communicator.
  if (kind == "single" || (kind == "auto" && w.size == 1) || (kind == "nccl" && w.launcher == "none")) {
    check(w.size == 1, "this process is rank ", w.rank, " of ", w.size, " (", w.launcher,
          "), but the single-process communicator was requested");
    return std::make_unique<SingleCommunicator>();
  }
  check(have_mpi(), "this build of tandem has no MPI (install libopenmpi-dev and rebuild) but the launcher (",
        w.launcher, ") started ", w.size, " processes");
  // torchrun-style variables name the world but cannot connect MPI processes: only an MPI
  // launcher (mpirun) wires them together.
  check(w.launcher != "torchrun" || std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK"),
        "WORLD_SIZE=", w.size, " (torchrun-style) but this process was not started by an MPI launcher; tandem's "
        "collectives run on MPI: start it as `mpirun -np ", w.size, " tandem train ...`");
#ifdef TANDEM_HAVE_MPI
  return make_mpi_communicator(w, timeout_s);
#else
  throw Error("unreachable: no MPI in this build");
#endif
}

}  // namespace tandem
