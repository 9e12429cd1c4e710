// Training parity and the divergence finder: the same model, init and batches on two backends.
//  - parity: N training steps on each; the verdict has three parts, each with its bound:
//    |loss_A - loss_B| at every step, the gradient norm's relative difference |n_A - n_B| / n_A at
//    every step (the norm the step clips with: every gradient, before the update), and the final
//    parameters' relative error max over tensors ||p_A - p_B|| / ||p_A||. Loss alone misses faults
//    that move the weights without moving the loss yet (a layernorm off by 1e-4: |dloss| ~1e-6).
//  - diff: one forward + backward on each with every node kept; walks the graph in execution
//    order and reports the first node whose output differs by more than the bounds (NMSE and the
//    per-element max_rel, A taken as the reference), with the errors of that node's inputs: if they are small, the op itself
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
  std::string precision_a, precision_b;  // diff: each side's precision (f32|bf16; empty: the config's)
};

// The defaults hold fp32 backends over 200 baby-gpt steps (README: measured cpu vs opencl).
struct ParityBounds {
  double loss = 1e-4;       // |loss_A - loss_B| at every step
  double grad_norm = 1e-5;  // |n_A - n_B| / n_A at every step (cpu vs opencl: 3.7e-6 at worst over 200 steps)
  double param = 1e-4;      // final max over parameter tensors of ||p_A - p_B|| / ||p_A||
};

struct ParityResult {
  std::vector<double> loss_a, loss_b, grad_norm_a, grad_norm_b;
  double max_dloss = 0;
  int64_t worst_step = 0, first_bad_step = 0;  // 1-based; 0: none (loss)
  double max_dgrad_norm = 0;                   // max over steps of |n_A - n_B| / n_A
  int64_t worst_grad_step = 0, first_bad_grad_step = 0;
  double param_rel_err = 0;         // every parameter as one vector: ||A - B|| / ||A||
  double param_rel_err_tensor = 0;  // the worst tensor's ||a - b|| / ||a|| (informs, see ParityBounds)
  std::string worst_param;
  bool loss_ok = true, grad_norm_ok = true, param_ok = true;
  bool pass = true;  // all three
  std::string fault_report;  // for a faulty:<B>: how often its fault fired ("" otherwise)
};
ParityResult run_parity(const TwoBackendOptions& o, int64_t steps, const ParityBounds& bounds,
                        bool verbose);  // verbose: one line per step on stdout

struct NodeDiff {
  std::string name, op;
  double nmse = 0;
  double max_rel = 0;  // max |b - a| / max |a| (compare.h): one bad element, lane or tile
  bool finite = true;
  bool matched = false;     // the node exists on both sides (a cast exists in a bf16 graph only)
  double class_bound = 0;   // two precisions: the NMSE bound of the node's op class in bf16 (tolerance.h)
  bool within(double nmse_bound, double max_rel_bound) const {
    return nmse <= nmse_bound && max_rel <= max_rel_bound;
  }
};
struct DiffResult {
  std::vector<NodeDiff> nodes;  // every op node, execution order
  int first_bad = -1;           // index into nodes, -1 when all are within the bound
  std::vector<NodeDiff> first_bad_inputs;
  double loss_a = 0, loss_b = 0;
  std::string fault_report;
  bool mixed = false;  // the sides ran in different precisions: a report, no first divergence
};
// A node diverges when its NMSE exceeds nmse_bound or its max_rel exceeds max_rel_bound.
DiffResult run_diff(const TwoBackendOptions& o, double nmse_bound, double max_rel_bound);

}  // namespace tandem::qualify
