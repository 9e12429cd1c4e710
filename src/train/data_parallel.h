// Data-parallel training over a Communicator: how a global batch is split across ranks, how the
// ranks' gradients become one, and AdamW with optionally sharded state (ZeRO-1).
//
// The global batch (batch_size rows per micro-batch, grad_accum micro-batches per step) is cut
// into P equal pieces of rows; rank r computes pieces [r*P/N, (r+1)*P/N), each as a whole batch
// of batch_size/P rows, and sums their gradients locally in piece order.
//  - fast mode: P = N, and the ranks' sums are added by the engine's all-reduce. One process
//    with batch B and N processes with B/N rows each differ by float rounding only (the order in
//    which the B rows' contributions are added).
//  - deterministic mode: P = dp_shards (default: the world size of the run that started it),
//    and the ranks' sums are added in a fixed left-to-right chain over the pieces. Any N that
//    divides P gives bit-identical losses and weights, because every piece is computed the same
//    way whoever computes it (the CPU kernels' results do not depend on the thread count) and
//    the additions happen in the same order.
// The step's gradient is the mean over the P*grad_accum pieces, which equals the mean over every
// token of the global batch since the pieces are equal.
//
// ZeRO-1 (--zero 1): rank r owns the r-th 1/N of the flattened trainable parameters and keeps
// AdamW moments only for it. Fast mode reduce-scatters the gradients (each rank receives the sum
// for its slice), updates its slice and all-gathers the parameters; deterministic mode sums the
// full gradients in the fixed chain (so the clipping norm has the same bits as without ZeRO),
// updates its slice and all-gathers. Checkpoints always hold full moments: they are gathered for
// writing and sliced again on loading, so a checkpoint does not depend on N.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "models/params.h"
#include "train/config.h"

namespace tandem {

enum class ReduceMode { fast, deterministic };

struct ParallelOptions {
  ReduceMode reduce = ReduceMode::fast;
  int64_t dp_shards = 0;  // deterministic mode's P (0: the world size)
  int zero = 0;           // 0 or 1
};

// Runs one process's part of a data-parallel job (`train`, `grpo`): under a launcher with several
// ranks, an error on one rank is printed with its rank and ends the whole job, since the others
// would otherwise wait in a collective until the timeout.
void run_as_rank(const std::function<void()>& body);

ReduceMode parse_reduce_mode(const std::string& s);
const char* reduce_mode_name(ReduceMode m);

// Expert parallelism: this rank's share of a full parameter set for `local_model` (tensors whose
// shape differs are split evenly along dim 0, rank r taking the r-th part), and the reverse,
// an all-gather back to the full shapes (tensors that are not split are returned as they are).
ParamStore shard_params(const ParamStore& full, const Model& local_model, Backend& backend, int rank);
std::vector<Tensor> gather_params(const std::vector<Tensor>& local, const std::vector<ParamSpec>& full_specs,
                                  Communicator& comm, Backend& backend);

class DataParallel {
 public:
  // rank_local[i]: parameter i is this rank's own share (expert parallelism), not a replica:
  // its gradient is complete already (the experts' owner saw every rank's tokens) and is not
  // added over ranks.
  DataParallel(Communicator& comm, const ParallelOptions& opts, const ParamStore& params, Backend& backend,
               int64_t batch_size, std::vector<bool> rank_local = {});

  int64_t pieces() const { return pieces_; }                // P
  int64_t rows_per_piece() const { return rows_; }          // batch_size / P
  int64_t first_piece() const { return first_; }            // this rank's pieces: [first, first + local)
  int64_t local_pieces() const { return local_; }
  Communicator& comm() const { return comm_; }
  const ParallelOptions& options() const { return opts_; }

  // The step's loss: the mean of every rank's piece losses (local: this rank's, in piece-major
  // order), added in one fixed order on every rank.
  double mean_loss(const std::vector<double>& local) const;

  // Deterministic mode with several pieces per rank: stages one piece's gradient (its sum over
  // the micro-batches), in piece order, for reduce() to add in the global order.
  void add_piece(const std::vector<const Tensor*>& grads);
  void discard_pieces() { staged_ = 0; }

  // Overlap (fast mode without ZeRO, one piece per rank, no gradient accumulation): the reduction
  // of each bucket of gradients (~4 MB, in the order the backward pass finishes them, the same on
  // every rank) starts as soon as its last gradient is written, while the backward pass goes on.
  // grads: the program's gradient tensors; final_at[i]: the schedule step after which grads[i] is
  // final (Program::npos: parameter not trained). reduce() then only waits and unpacks.
  void plan_overlap(const std::vector<const Tensor*>& grads, const std::vector<size_t>& final_at);
  bool overlapping() const { return !buckets_.empty(); }
  void after_step(size_t step);  // the executor's hook

  // Sums this rank's local gradient sums (one per parameter; nullptr-free, in place) over the
  // ranks, then returns the global L2 norm of the mean gradient (sum * inv_count).
  // With ZeRO in fast mode only this rank's slice is reduced (into its own buffer).
  double reduce(const std::vector<const Tensor*>& grads, double inv_count);

  // AdamW on what this rank owns (everything without ZeRO), then, with ZeRO, all-gathers the
  // parameters so every rank holds the same weights. `grads` are the ones given to reduce().
  void step(ParamStore& params, const std::vector<const Tensor*>& grads, const TrainConfig& c, double lr,
            int64_t step_number, float grad_scale);

  // Full-shaped moments for a checkpoint (collective with ZeRO; every rank gets them).
  void full_moments(std::vector<Tensor>& exp_avg, std::vector<Tensor>& exp_avg_sq);
  // Sets the moments from full-shaped tensors (a checkpoint), or to zero.
  void load_moments(const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq);
  void zero_moments();
  // Bytes of AdamW state held by this rank.
  uint64_t state_bytes() const;

 private:
  struct Part {  // the piece of parameter `param`, elements [begin, begin+len), that this rank owns
    size_t param;
    int64_t begin, len;
    int64_t flat;  // its offset in this rank's slice
  };
  void pack(const std::vector<const Tensor*>& ts, std::vector<float>& flat) const;
  void unpack(const std::vector<float>& flat, const std::vector<const Tensor*>& ts) const;
  static Tensor view(const Tensor& t, int64_t begin, int64_t len);

  Communicator& comm_;
  ParallelOptions opts_;
  Backend& backend_;
  std::vector<ParamSpec> specs_;
  std::vector<int64_t> offsets_;  // flat offset of each replicated trainable parameter (-1: none)
  std::vector<bool> rank_local_;
  int64_t total_ = 0;             // trainable elements
  int64_t pieces_ = 1, rows_ = 0, first_ = 0, local_ = 1;
  // ZeRO-1: this rank's slice [slice_begin_, slice_begin_ + slice_len_) of the flat parameters,
  // padded to slice_ elements per rank.
  int64_t slice_ = 0, slice_begin_ = 0, slice_len_ = 0;
  std::vector<Part> parts_;
  Tensor m_, v_, grad_slice_;        // ZeRO: flat [slice_] moments and (fast) reduced gradient slice
  std::vector<Tensor> full_m_, full_v_;  // without ZeRO: full moments
  std::vector<float> host_;          // staging
  Tensor device_flat_;               // staging on the device, for communicators that work there
  std::vector<std::vector<float>> terms_;  // deterministic: staged pieces
  struct Bucket {
    std::vector<size_t> params;
    size_t ready = 0;  // schedule step after which all its gradients are final
    std::vector<float> host;
    std::unique_ptr<Communicator::Pending> pending;
  };
  std::vector<Bucket> buckets_;
  std::vector<const Tensor*> overlap_grads_;
  size_t next_bucket_ = 0;
  size_t staged_ = 0;
};

}  // namespace tandem
