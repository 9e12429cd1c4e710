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

// The input an op writes in place besides its output (the KV caches of decoding: attention_cached's
// cache, attention_latent's latent cache), or -1. A fallback node's copy of it goes back after the run.
int state_input(OpKind op) {
  return op == OpKind::attention_cached ? 1 : op == OpKind::attention_latent ? 2 : -1;
}
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
      std::vector<const Node*> in_nodes;
      for (NodeId in : nd.inputs) in_nodes.push_back(&graph.node(in));
      if (!backend.supports_node(nd, in_nodes)) {
        Backend* fb = backend.fallback();
        check(fb && fb->supports_node(nd, in_nodes), "backend ", backend.name(), " does not support op ",
              op_name(nd.op), " (", dtype_name(nd.dtype), ") at node '", nd.name, "'",
              fb ? std::string(" and neither does its fallback ") + fb->name() : std::string(""));
        fallback_ = fb;
        fallback_steps_[schedule_.size()] = {};
      }
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

  // Fallback nodes: host tensors, and which values cross between the backends each run.
  if (fallback_steps_.empty()) return;
  std::vector<int64_t> host_out(n, -1);  // root -> the schedule step whose host output holds it
  std::vector<bool> read_on_backend(n, false);
  for (size_t step = 0; step < schedule_.size(); ++step) {
    const Node& nd = graph.node(schedule_[step]);
    const bool on_fb = fallback_steps_.contains(step);
    for (NodeId in : nd.inputs)
      if (!on_fb) read_on_backend[static_cast<size_t>(root[static_cast<size_t>(in)])] = true;
  }
  for (auto& [step, f] : fallback_steps_) {
    const Node& nd = graph.node(schedule_[step]);
    for (NodeId in : nd.inputs) {
      const Node& ind = graph.node(in);
      const int64_t from = host_out[static_cast<size_t>(root[static_cast<size_t>(in)])];
      if (from >= 0) {
        f.ins.push_back(fallback_steps_.at(static_cast<size_t>(from)).out.reshaped(ind.shape));
        f.copy_in.push_back(false);
      } else {
        f.ins.push_back(Tensor::empty(*fallback_, ind.shape, ind.dtype));
        f.copy_in.push_back(true);
        ++copies_per_run_;
      }
    }
    if (const int k = state_input(nd.op); k >= 0) {
      // State written in place lives on the backend between runs: always copied in, and back.
      check(f.copy_in[static_cast<size_t>(k)], "program: the state input of node '", nd.name, "' was computed on ",
            fallback_->name(), "; it must be bound on ", backend_.name());
      ++copies_per_run_;
    }
    f.out = Tensor::empty(*fallback_, nd.shape, nd.dtype);
    const size_t r = static_cast<size_t>(nd.id);
    f.copy_out = read_on_backend[r] || last[r] == n;
    copies_per_run_ += f.copy_out;
    host_out[r] = static_cast<int64_t>(step);
  }
}

std::string Program::placement() const {
  if (fallback_steps_.empty()) return "";
  const size_t m = schedule_.size(), k = fallback_steps_.size();
  return std::to_string(m - k) + " of " + std::to_string(m) + " nodes on " + backend_.name() + ", " +
         std::to_string(k) + " on " + fallback_->name() + " (fallback), " + std::to_string(copies_per_run_) +
         " copies per step";
}

void Program::run_fallback(size_t step, FallbackStep& f, std::vector<Tensor>& ins) {
  const Node& nd = graph_.node(schedule_[step]);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < f.ins.size(); ++k)
    if (f.copy_in[k]) {
      const Tensor& src = ins[k];
      backend_.download(static_cast<char*>(f.ins[k].storage->handle) + f.ins[k].offset, src.storage->handle,
                        src.offset, src.nbytes());
    }
  const auto t1 = std::chrono::steady_clock::now();
  fallback_->execute(nd, f.ins, f.out);
  const auto t2 = std::chrono::steady_clock::now();
  if (const int k = state_input(nd.op); k >= 0) {
    const Tensor& state = ins[static_cast<size_t>(k)];
    backend_.upload(state.storage->handle, state.offset,
                    static_cast<char*>(f.ins[static_cast<size_t>(k)].storage->handle) + f.ins[static_cast<size_t>(k)].offset,
                    state.nbytes());
  }
  if (f.copy_out) {
    const Tensor& dst = tensors_[static_cast<size_t>(nd.id)];
    backend_.upload(dst.storage->handle, dst.offset, static_cast<char*>(f.out.storage->handle) + f.out.offset,
                    f.out.nbytes());
  }
  copy_seconds_ += std::chrono::duration<double>(t1 - t0).count() +
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count();
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
    if (!fallback_steps_.empty())
      if (auto f = fallback_steps_.find(step); f != fallback_steps_.end()) {
        run_fallback(step, f->second, ins);
        if (after_step) after_step(step);
        continue;
      }
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
