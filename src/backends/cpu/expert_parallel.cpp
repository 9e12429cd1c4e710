// Expert-parallel token exchange on host memory (ops/expert_parallel.h): rows move between ranks
// through the expert-parallel communicator's all-to-all.
#include <cstring>

#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "dist/communicator.h"
#include "ops/expert_parallel.h"

namespace tandem::cpu {

namespace {

Communicator& comm_for(const Node& node) {
  const auto& a = node.attr<ExpertParallelAttrs>();
  Communicator* c = expert_parallel_communicator();
  if (a.ranks == 1 && (!c || c->size() == 1)) {
    static Communicator* single = make_communicator("single", 1.0).release();
    return c ? *c : *single;
  }
  check(c && c->size() == a.ranks, op_name(node.op), " at node '", node.name, "': built for ", a.ranks,
        " expert-parallel ranks but this process has ", c ? c->size() : 1);
  return *c;
}

// Counts this rank's rows per global expert, tells every owner how many rows of each of its
// experts are coming, and learns the same from every rank.
ExpertExchange plan(const Node& node, const Tensor& ids, Communicator& comm) {
  const auto& a = node.attr<ExpertParallelAttrs>();
  ExpertExchange x;
  x.ranks = a.ranks;
  x.local_experts = a.n_experts / a.ranks;
  std::vector<int64_t> count(static_cast<size_t>(a.n_experts), 0);
  const int32_t* id = i32(ids);
  for (int64_t f = 0; f < ids.numel(); ++f) {
    check(id[f] >= 0 && id[f] < a.n_experts, op_name(node.op), " at node '", node.name, "': expert id ", id[f],
          " out of range [0, ", a.n_experts, ")");
    ++count[static_cast<size_t>(id[f])];
  }
  x.send_rows.assign(static_cast<size_t>(a.ranks), 0);
  for (int64_t e = 0; e < a.n_experts; ++e) x.send_rows[static_cast<size_t>(e / x.local_experts)] += count[static_cast<size_t>(e)];
  x.recv_counts.assign(static_cast<size_t>(a.ranks * x.local_experts), 0);
  std::vector<size_t> bytes(static_cast<size_t>(a.ranks), static_cast<size_t>(x.local_experts) * sizeof(int64_t));
  comm.all_to_all(count.data(), bytes.data(), x.recv_counts.data(), bytes.data());
  for (int64_t c : x.recv_counts) x.received += c;
  return x;
}

// Row offset of (source rank j, local expert e) in the owner's layout: padding first, then
// expert-major, source-minor.
std::vector<int64_t> owner_offsets(const ExpertExchange& x, int64_t rows) {
  std::vector<int64_t> off(x.recv_counts.size());
  int64_t r = rows - x.received;
  for (int64_t e = 0; e < x.local_experts; ++e)
    for (int j = 0; j < x.ranks; ++j) {
      off[static_cast<size_t>(j * x.local_experts + e)] = r;
      r += x.recv_counts[static_cast<size_t>(j * x.local_experts + e)];
    }
  return off;
}

}  // namespace

void ep_dispatch(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  Communicator& comm = comm_for(node);
  const ExpertExchange x = plan(node, in[1], comm);
  const int64_t H = in[0].shape[1], rows = out.shape[0];
  const size_t row_bytes = static_cast<size_t>(H) * sizeof(float);
  std::vector<size_t> send(static_cast<size_t>(x.ranks)), recv(send.size());
  for (int j = 0; j < x.ranks; ++j) {
    send[static_cast<size_t>(j)] = static_cast<size_t>(x.send_rows[static_cast<size_t>(j)]) * row_bytes;
    int64_t from_j = 0;
    for (int64_t e = 0; e < x.local_experts; ++e) from_j += x.recv_counts[static_cast<size_t>(j * x.local_experts + e)];
    recv[static_cast<size_t>(j)] = static_cast<size_t>(from_j) * row_bytes;
  }
  std::vector<float> got(static_cast<size_t>(x.received * H));
  comm.all_to_all(f32(in[0]), send.data(), got.data(), recv.data());  // xs is already in owner order
  float* o = f32(out);
  std::memset(o, 0, static_cast<size_t>(rows - x.received) * row_bytes);
  const std::vector<int64_t> off = owner_offsets(x, rows);
  int64_t src = 0;  // rows of `got`: source-major, expert-minor
  for (int j = 0; j < x.ranks; ++j)
    for (int64_t e = 0; e < x.local_experts; ++e) {
      const int64_t n = x.recv_counts[static_cast<size_t>(j * x.local_experts + e)];
      std::memcpy(o + off[static_cast<size_t>(j * x.local_experts + e)] * H, got.data() + src * H, static_cast<size_t>(n) * row_bytes);
      src += n;
    }
}

void ep_combine(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  Communicator& comm = comm_for(node);
  const ExpertExchange x = plan(node, in[1], comm);
  const int64_t H = in[0].shape[1], rows = in[0].shape[0];
  const size_t row_bytes = static_cast<size_t>(H) * sizeof(float);
  const std::vector<int64_t> off = owner_offsets(x, rows);
  const float* y = f32(in[0]);
  std::vector<float> back(static_cast<size_t>(x.received * H));
  std::vector<size_t> send(static_cast<size_t>(x.ranks)), recv(send.size());
  int64_t dst = 0;
  for (int j = 0; j < x.ranks; ++j) {
    const int64_t start = dst;
    for (int64_t e = 0; e < x.local_experts; ++e) {
      const int64_t n = x.recv_counts[static_cast<size_t>(j * x.local_experts + e)];
      std::memcpy(back.data() + dst * H, y + off[static_cast<size_t>(j * x.local_experts + e)] * H, static_cast<size_t>(n) * row_bytes);
      dst += n;
    }
    send[static_cast<size_t>(j)] = static_cast<size_t>(dst - start) * row_bytes;
    recv[static_cast<size_t>(j)] = static_cast<size_t>(x.send_rows[static_cast<size_t>(j)]) * row_bytes;
  }
  comm.all_to_all(back.data(), send.data(), f32(out), recv.data());  // lands in xs order
}

void ep_ids(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  Communicator& comm = comm_for(node);
  const ExpertExchange x = plan(node, in[0], comm);
  int32_t* o = i32(out);
  const int64_t rows = out.shape[0];
  std::memset(o, 0, static_cast<size_t>(rows - x.received) * sizeof(int32_t));  // padding: local expert 0
  int64_t r = rows - x.received;
  for (int64_t e = 0; e < x.local_experts; ++e)
    for (int j = 0; j < x.ranks; ++j)
      for (int64_t c = 0; c < x.recv_counts[static_cast<size_t>(j * x.local_experts + e)]; ++c) o[r++] = static_cast<int32_t>(e);
}

}  // namespace tandem::cpu
