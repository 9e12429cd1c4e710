// Expert parallelism: the routed experts of a MoE layer are split evenly over R ranks (rank j
// owns experts [j*E/R, (j+1)*E/R)); each rank routes its own tokens, and these ops move the
// expert rows to the experts' owners and back, through the expert-parallel communicator
// (dist/communicator.h). They are the only graph ops that communicate; every rank runs the same
// graph, so they are called in the same order everywhere.
//
//   ep_dispatch(xs [N*K, H], idx [N, K]) -> [R*N*K, H]: xs is moe_dispatch's output (rows sorted
//     by global expert). Each owner receives the rows for its experts from every rank and lays
//     them out as [zero padding | local expert 0: rows from rank 0, rank 1, ... | local expert 1 ...].
//     R*N*K is the static bound (every token of every rank choosing this rank's experts); the
//     padding rows are zeros assigned to local expert 0, so grouped_matmul computes zeros for them
//     and they add nothing to any weight gradient.
//   ep_ids(idx) -> [R*N*K, 1] i32: the local expert of each row of ep_dispatch's output (the ids
//     grouped_matmul segments by).
//   ep_combine(yr [R*N*K, H], idx) -> [N*K, H]: the reverse trip: every row goes back to the rank
//     it came from, in xs's order. ep_dispatch and ep_combine are each other's adjoint (a
//     permutation plus zero padding), which makes them each other's backward rule.
// One rank (R = 1) is the identity (plus ids), and that is what the float64 reference computes.
#pragma once
#include <cstdint>
#include <vector>

namespace tandem {

// Rows per (source rank, local expert) for this rank, and what it sends to each owner.
struct ExpertExchange {
  int ranks = 1;
  int64_t local_experts = 0;
  std::vector<int64_t> send_rows;    // [R]: rows this rank sends to owner j (its xs block j)
  std::vector<int64_t> recv_counts;  // [R * local_experts]: rows from rank j for local expert e
  int64_t received = 0;              // sum of recv_counts
};

}  // namespace tandem
