#include "qualify/conform.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "backends/plugin/plugin_backend.h"
#include "core/reference.h"
#include "qualify/compare.h"
#include "qualify/op_cases.h"
#include "qualify/optimizer_conform.h"
#include "qualify/tolerance.h"

namespace tandem::qualify {

const char* status_name(Status s) {
  switch (s) {
    case Status::pass: return "PASS";
    case Status::fail: return "FAIL";
    case Status::unsupported: return "UNSUPPORTED";
    case Status::fallback: return "FALLBACK";
  }
  return "?";
}

namespace {

constexpr size_t kGuard = 64;           // bytes before and after every buffer
constexpr unsigned char kSentinel = 0xCD;  // 0xCDCDCDCD is -4.3e8 as f32: loud if left unwritten

// The reference rounded to what the backend receives (q8_0: quantized, then dequantized exactly).
RefTensor rounded(const RefTensor& t, DType dt) {
  RefTensor r = t;
  if (dt == DType::q8_0) {
    std::vector<float> f(r.data.begin(), r.data.end());
    std::vector<unsigned char> q(storage_bytes(DType::q8_0, r.numel()));
    quantize_q8_0(f.data(), q.data(), r.numel());
    dequantize_q8_0(q.data(), f.data(), r.numel());
    std::copy(f.begin(), f.end(), r.data.begin());
    return r;
  }
  for (double& v : r.data) {
    if (dt == DType::f32) v = static_cast<float>(v);
    else if (dt == DType::bf16) v = bf16_to_f32(f32_to_bf16(static_cast<float>(v)));
  }
  return r;
}

std::vector<unsigned char> encode(const RefTensor& t, DType dt) {
  std::vector<unsigned char> bytes(storage_bytes(dt, t.numel()));
  if (dt == DType::q8_0) {
    std::vector<float> f(t.data.begin(), t.data.end());
    quantize_q8_0(f.data(), bytes.data(), t.numel());
    return bytes;
  }
  for (size_t i = 0; i < t.data.size(); ++i) {
    if (dt == DType::f32) {
      const float f = static_cast<float>(t.data[i]);
      std::memcpy(bytes.data() + 4 * i, &f, 4);
    } else if (dt == DType::bf16) {
      const uint16_t h = f32_to_bf16(static_cast<float>(t.data[i]));
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else {
      const auto v = static_cast<int32_t>(t.data[i]);
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    }
  }
  return bytes;
}

// A tensor at byte offset kGuard of a buffer with kGuard spare bytes after it.
Tensor guarded(Backend& be, const Shape& shape, DType dt) {
  Tensor t;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dt;
  t.offset = kGuard;
  t.storage = std::make_shared<Storage>(&be, t.nbytes() + 2 * kGuard);
  return t;
}

// The input a q8_0 row quantizes: the weight of a matmul (the plain, 2-D right operand) or the
// table of an embedding, whole q8_0 blocks along its last dimension; -1 when the node has none.
// q8_0 is a serving format: only forward nodes are q8_0 rows.
int q8_0_operand(const CaseGraph& cg, const Node& n) {
  if (n.id > cg.out || (n.op != OpKind::matmul && n.op != OpKind::embedding)) return -1;
  const Node& w = cg.graph.node(n.inputs[1]);
  if (w.shape.size() != 2 || w.shape[1] % kQ8Block != 0 || !is_float(w.dtype)) return -1;
  if (n.op == OpKind::matmul && n.attr<MatmulAttrs>().trans_a) return -1;
  return 1;
}

// Which nodes of a case graph are rows: the case's own op nodes and everything their backward
// rules added (intermediate nodes' too); the harness around it (weighted sum, its gradients) is not.
bool is_case_node(const CaseGraph& cg, const Node& n) {
  if (n.op == OpKind::input || n.op == OpKind::param || n.op == OpKind::reshape) return false;
  if (n.id <= cg.out) return true;
  return n.name != "weighted" && n.name != "loss" && !n.name.starts_with("weighted.bwd.") && !n.name.starts_with("loss.bwd.");
}



ConformRow run_node(Backend& be, const CaseGraph& cg, const std::vector<RefTensor>& ref, const Node& graph_node,
                    DType dt, const std::string& case_name) {
  Node node = graph_node;
  // Index-producing ops (expert ids, shifted tokens) keep their i32 output. A node's dtype is its
  // output's, so a backend cannot be asked about their float inputs in another dtype: they run in
  // the f32 rows only.
  const bool ids_out = graph_node.dtype == DType::i32;
  // A cast's dtypes are what it is about: its node runs as built (in the bf16 rows).
  const bool fixed = graph_node.op == OpKind::cast;
  // A q8_0 row: one input (the weight) in q8_0, the others and the output f32 (tolerance.h).
  const int q8 = dt == DType::q8_0 ? q8_0_operand(cg, graph_node) : -1;
  if (!ids_out && !fixed) node.dtype = q8 >= 0 ? DType::f32 : dt;
  const Tolerance tol = tolerance_for(node.op, dt);
  ConformRow row;
  row.op = op_name(node.op);
  row.dtype = dtype_name(dt);
  row.case_name = case_name;
  row.node = node.name;
  row.metric = tol.nmse == 0 ? "exact" : "nmse";
  row.tolerance = tol.nmse;
  row.max_rel_tolerance = tol.max_rel;
  row.klass = tol.klass;
  row.detail = tol.klass;
  if (ids_out && dt != DType::f32) {
    row.status = Status::unsupported;
    row.detail = "integer output: f32 rows only";
    return row;
  }
  // The dtype input i is fed in, and the input nodes as this row feeds them (for supports_node).
  auto input_dtype = [&](size_t i) {
    const Node& in = cg.graph.node(node.inputs[i]);
    return in.dtype == DType::i32 ? DType::i32
           : fixed                ? in.dtype
           : q8 >= 0              ? (static_cast<int>(i) == q8 ? DType::q8_0 : DType::f32)
                                  : dt;
  };
  std::vector<Node> in_nodes;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    in_nodes.push_back(cg.graph.node(node.inputs[i]));
    in_nodes.back().dtype = input_dtype(i);
  }
  std::vector<const Node*> in_ptrs;
  for (const Node& in : in_nodes) in_ptrs.push_back(&in);
  if (!be.supports_node(node, in_ptrs)) {
    const Backend* fb = be.fallback();
    row.status = fb ? Status::fallback : Status::unsupported;
    row.detail = fb ? "runs on " + fb->name() + " (fallback)" : "backend says unsupported";
    return row;
  }
  try {
    std::vector<RefTensor> ins_ref;
    std::vector<Tensor> ins;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const NodeId id = node.inputs[i];
      const Node& in = cg.graph.node(id);
      const DType in_dt = input_dtype(i);
      ins_ref.push_back(rounded(ref[static_cast<size_t>(id)], in_dt));
      Tensor t = guarded(be, in.shape, in_dt);
      const auto bytes = encode(ins_ref.back(), in_dt);
      be.upload(t.storage->handle, t.offset, bytes.data(), bytes.size());
      ins.push_back(std::move(t));
    }
    std::vector<const RefTensor*> ptrs;
    for (const RefTensor& r : ins_ref) ptrs.push_back(&r);
    RefTensor want(node.shape), want_format(node.shape);
    op_def(node.op).reference(node, ptrs, want);
    std::vector<const RefTensor*> original;
    for (NodeId id : node.inputs) original.push_back(&ref[static_cast<size_t>(id)]);
    op_def(node.op).reference(node, original, want_format);

    Tensor out = guarded(be, node.shape, node.dtype);
    const size_t total = out.storage->bytes;
    std::vector<unsigned char> buf(total, kSentinel);
    be.upload(out.storage->handle, 0, buf.data(), total);
    be.execute(node, ins, out);
    be.sync();
    be.download(buf.data(), out.storage->handle, 0, total);
    for (size_t i = 0; i < total; ++i)
      if ((i < kGuard || i >= kGuard + out.nbytes()) && buf[i] != kSentinel) {
        row.status = Status::fail;
        row.error = INFINITY;
        row.detail = "wrote outside its output (byte " + std::to_string(static_cast<long>(i) - static_cast<long>(kGuard)) +
                     " of " + std::to_string(out.nbytes()) + ")";
        return row;
      }
    std::vector<float> got(static_cast<size_t>(out.numel()));
    for (size_t i = 0; i < got.size(); ++i) {
      if (ids_out) {
        int32_t v;
        std::memcpy(&v, buf.data() + kGuard + 4 * i, 4);
        got[i] = static_cast<float>(v);
      } else if (node.dtype == DType::bf16) {
        uint16_t h;
        std::memcpy(&h, buf.data() + kGuard + 2 * i, 2);
        got[i] = bf16_to_f32(h);
      } else {
        std::memcpy(&got[i], buf.data() + kGuard + 4 * i, 4);
      }
    }
    const ErrorStats s = compare(got, want.data);
    const ErrorStats f = compare(got, want_format.data);
    row.format_error = f.nan || f.inf_mismatch ? INFINITY : f.nmse;
    judge(row, s);
  } catch (const std::exception& e) {
    row.status = Status::fail;
    row.error = INFINITY;
    row.detail = e.what();
  }
  return row;
}

}  // namespace

void judge(ConformRow& row, const ErrorStats& s) {
  row.error = s.finite() ? s.nmse : INFINITY;
  row.max_rel = s.finite() ? s.max_rel : INFINITY;
  if (s.ok(row.tolerance, row.max_rel_tolerance)) return;
  row.status = Status::fail;
  char buf[160];
  if (!s.finite()) std::snprintf(buf, sizeof buf, "%s", s.describe().c_str());
  else
    std::snprintf(buf, sizeof buf, "%s%s%s (max |err| %.3g at element %ld, max |ref| %.3g)",
                  s.nmse > row.tolerance ? "nmse over bound" : "",
                  s.nmse > row.tolerance && s.max_rel > row.max_rel_tolerance ? ", " : "",
                  s.max_rel > row.max_rel_tolerance ? "max_rel over bound" : "", s.max_abs, s.worst, s.max_ref);
  row.detail = buf;
}

std::vector<ConformRow> conform(Backend& backend, const ConformOptions& opts) {
  std::vector<ConformRow> rows;
  for (const OpCase& c : op_cases()) {
    CaseGraph cg = build_case(c);
    bool selected = !opts.op || op_name(c.op) == *opts.op;
    if (!selected)
      for (const Node& n : cg.graph.nodes()) selected = selected || (is_case_node(cg, n) && op_name(n.op) == *opts.op);
    if (!selected) continue;
    const std::vector<RefTensor> ref = run_reference(cg.graph, cg.leaves);
    for (DType dt : opts.dtypes)
      for (const Node& n : cg.graph.nodes()) {
        if (!is_case_node(cg, n)) continue;
        if (n.op == OpKind::cast && dt != DType::bf16) continue;  // a cast row is a bf16 row
        if (dt == DType::q8_0 && q8_0_operand(cg, n) < 0) continue;  // q8_0 rows: weights of matmuls, embeddings
        if (opts.op && op_name(c.op) != *opts.op && op_name(n.op) != *opts.op) continue;
        rows.push_back(run_node(backend, cg, ref, n, dt, c.name));
      }
  }
  // The optimizer kernels' rows (optimizer_conform.h): f32 state, so f32 rows only.
  const bool f32 = std::find(opts.dtypes.begin(), opts.dtypes.end(), DType::f32) != opts.dtypes.end();
  if (f32 && (!opts.op || is_optimizer_kernel(*opts.op))) {
    std::vector<ConformRow> opt = conform_optimizer(backend, opts.op);
    // A plugin without an optimizer kernel has it run on the CPU: those rows qualify the CPU.
    if (const auto* plugin = dynamic_cast<const PluginBackend*>(&backend))
      for (ConformRow& r : opt)
        if (!plugin->has_optimizer_kernel(r.op)) {
          r.status = Status::fallback;
          r.detail = "runs on cpu (fallback)";
        }
    rows.insert(rows.end(), opt.begin(), opt.end());
  }
  return rows;
}

}  // namespace tandem::qualify
