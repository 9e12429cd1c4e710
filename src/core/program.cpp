#include "core/program.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "ops/op.h"

namespace tandem {

namespace {
constexpr size_t kAlign = 64;

// TANDEM_PROFILE=1: time per op kind (and matmul shape), printed to stderr at exit.
struct OpProfile {
  std::map<std::string, std::pair<double, int64_t>> by_key;
  void add(const Node& n, double s) {
    std::string key = op_name(n.op);
    if (n.op == OpKind::matmul) key.append(" ").append(shape_str(n.shape));
    auto& e = by_key[key];
    e.first += s;
    e.second += 1;
  }
  ~OpProfile() {
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (auto& [k, v] : by_key) {
      rows.emplace_back(v.first, k);
      total += v.first;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "op profile (%.3f s total):\n", total);
    for (auto& [t, k] : rows)
      std::fprintf(stderr, "  %8.3f s %5.1f%%  %6lld calls  %s\n", t, 100 * t / total,
                   static_cast<long long>(by_key[k].second), k.c_str());
  }
};
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Program::Program(const Graph& graph, Backend& backend, const std::set<NodeId>& keep)
    : graph_(graph), backend_(backend), keep_(keep) {
  const size_t n = graph.size();
  live_.assign(n, false);
  for (NodeId k : keep) live_.at(static_cast<size_t>(k)) = true;
  for (size_t i = n; i-- > 0;)
    if (live_[i])
      for (NodeId in : graph.node(static_cast<NodeId>(i)).inputs) live_[static_cast<size_t>(in)] = true;

  // Storage root of each node: reshape views share their input's buffer.
  std::vector<NodeId>& root = root_;
  root.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Node& nd = graph.node(static_cast<NodeId>(i));
    root[i] = nd.op == OpKind::reshape ? root[static_cast<size_t>(nd.inputs[0])] : static_cast<NodeId>(i);
  }
  // Lifetime of each root buffer: [defining node, last reader]; kept nodes live forever.
  std::vector<size_t> first(n, 0), last(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (!live_[i]) continue;
    const Node& nd = graph.node(static_cast<NodeId>(i));
    if (nd.op != OpKind::input && nd.op != OpKind::param && nd.op != OpKind::reshape) {
      check(backend.supports(nd), "backend ", backend.name(), " does not support op ", op_name(nd.op),
            " (", dtype_name(nd.dtype), ") at node '", nd.name, "'");
      schedule_.push_back(nd.id);
    }
    size_t r = static_cast<size_t>(root[i]);
    if (r == i) first[r] = last[r] = i;
    last[r] = std::max(last[r], i);
    for (NodeId in : nd.inputs) {
      size_t ri = static_cast<size_t>(root[static_cast<size_t>(in)]);
      last[ri] = std::max(last[ri], i);
    }
  }
  for (NodeId k : keep) last[static_cast<size_t>(root[static_cast<size_t>(k)])] = n;

  // Greedy placement, largest first, at the lowest offset that does not overlap a placed buffer
  // whose lifetime intersects. Buffers whose lives do not overlap share memory.
  struct Block { size_t node, size, offset; };
  std::vector<Block> blocks;
  for (size_t i = 0; i < n; ++i) {
    const Node& nd = graph.node(static_cast<NodeId>(i));
    if (!live_[i] || root[i] != static_cast<NodeId>(i) || nd.op == OpKind::input || nd.op == OpKind::param) continue;
    blocks.push_back({i, align_up(storage_bytes(nd.dtype, nd.numel())), 0});
  }
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) {
    return a.size != b.size ? a.size > b.size : a.node < b.node;
  });
  std::vector<const Block*> placed;
  size_t total = 0;
  for (Block& b : blocks) {
    std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of conflicting buffers
    for (const Block* p : placed)
      if (!(last[p->node] < first[b.node] || last[b.node] < first[p->node]))
        busy.emplace_back(p->offset, p->offset + p->size);
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (auto [s, e] : busy) {
      if (off + b.size <= s) break;
      off = std::max(off, e);
    }
    b.offset = off;
    total = std::max(total, off + b.size);
    placed.push_back(&b);
  }
  if (total) arena_ = std::make_shared<Storage>(&backend, total);

  tensors_.resize(n);
  for (const Block& b : blocks) {
    const Node& nd = graph.node(static_cast<NodeId>(b.node));
    Tensor& t = tensors_[b.node];
    t.storage = arena_;
    t.offset = b.offset;
    t.shape = nd.shape;
    t.strides = contiguous_strides(nd.shape);
    t.dtype = nd.dtype;
  }
  // Views are resolved at bind/run time (their root may be a leaf bound later).
}

void Program::bind(NodeId leaf, const Tensor& t) {
  const Node& nd = graph_.node(leaf);
  check(nd.op == OpKind::input || nd.op == OpKind::param, "bind: node '", nd.name, "' is not an input or param");
  check(t.shape == nd.shape && t.dtype == nd.dtype, "bind: node '", nd.name, "' expects ", shape_str(nd.shape), " ",
        dtype_name(nd.dtype), ", got ", shape_str(t.shape), " ", dtype_name(t.dtype));
  check(&t.backend() == &backend_, "bind: tensor for '", nd.name, "' lives on backend ", t.backend().name(),
        ", the program runs on ", backend_.name());
  tensors_[static_cast<size_t>(leaf)] = t;
}

size_t Program::written_at(NodeId id) const {
  const NodeId r = root_.at(static_cast<size_t>(id));
  const auto it = std::find(schedule_.begin(), schedule_.end(), r);
  return it == schedule_.end() ? npos : static_cast<size_t>(it - schedule_.begin());
}

void Program::run(const std::function<void(size_t)>& after_step) {
  for (size_t i = 0; i < graph_.size(); ++i) {
    const Node& nd = graph_.node(static_cast<NodeId>(i));
    if (!live_[i]) continue;
    if (nd.op == OpKind::input || nd.op == OpKind::param)
      check(tensors_[i].defined(), "run: input '", nd.name, "' was not bound");
    else if (nd.op == OpKind::reshape)
      tensors_[i] = tensors_[static_cast<size_t>(nd.inputs[0])].reshaped(nd.shape);
  }
  std::vector<Tensor> ins;
  static std::unique_ptr<OpProfile> profile_owner(std::getenv("TANDEM_PROFILE") ? new OpProfile : nullptr);
  OpProfile* profile = profile_owner.get();
  for (size_t step = 0; step < schedule_.size(); ++step) {
    const NodeId id = schedule_[step];
    const Node& nd = graph_.node(id);
    ins.clear();
    for (NodeId in : nd.inputs) ins.push_back(tensors_[static_cast<size_t>(in)]);
    if (!profile) {
      backend_.execute(nd, ins, tensors_[static_cast<size_t>(id)]);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      backend_.execute(nd, ins, tensors_[static_cast<size_t>(id)]);
      backend_.sync();
      profile->add(nd, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    if (after_step) after_step(step);
  }
}

const Tensor& Program::get(NodeId id) const {
  const Tensor& t = tensors_.at(static_cast<size_t>(id));
  check(t.defined() && (keep_.contains(id) || graph_.node(id).op == OpKind::input || graph_.node(id).op == OpKind::param),
        "program: node '", graph_.node(id).name, "' was not kept; list it in `keep` to capture it");
  return t;
}

}  // namespace tandem
