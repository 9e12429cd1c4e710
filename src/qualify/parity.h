// Training parity and the divergence finder: the same model, init and batches on two backends.
//  - parity: N training steps on each; per-step loss difference, final parameter relative error,
//    verdict |loss_A - loss_B| <= tol at every step.
//  - diff: one forward + backward on each with every node kept; walks the graph in execution
//    order and reports the first node whose output differs by more than the bound (NMSE, A taken
//    as the reference), with the errors of that node's inputs: if they are small, the op itself
//    is wrong; if not, what fed it is.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace tandem::qualify {

struct TwoBackendOptions {
  std::string config = "baby-gpt";
  std::vector<std::string> sets;
  std::filesystem::path data_dir;
  std::string backend_a = "cpu", backend_b;
  std::string fault;  // for whichever of the two is faulty:<B>
  uint64_t seed = 1337;
};

struct ParityResult {
  std::vector<double> loss_a, loss_b;
  double max_dloss = 0;
  int64_t worst_step = 0, first_bad_step = 0;  // 1-based; 0: none
  double param_rel_err = 0;                    // max over parameters of ||a - b|| / ||a||
  std::string worst_param;
  bool pass = true;
};
ParityResult run_parity(const TwoBackendOptions& o, int64_t steps, double tol,
                        bool verbose);  // verbose: one line per step on stdout

struct NodeDiff {
  std::string name, op;
  double nmse = 0;
  bool finite = true;
};
struct DiffResult {
  std::vector<NodeDiff> nodes;  // every op node, execution order
  int first_bad = -1;           // index into nodes, -1 when all are within the bound
  std::vector<NodeDiff> first_bad_inputs;
  double loss_a = 0, loss_b = 0;
};
DiffResult run_diff(const TwoBackendOptions& o, double bound);

}  // namespace tandem::qualify
