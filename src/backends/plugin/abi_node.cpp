#include "backends/plugin/abi_node.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"
#include "ops/op_kind.h"

namespace tandem {

int32_t to_abi_dtype(DType t) {
  switch (t) {
    case DType::f32: return TDB_F32;
    case DType::bf16: return TDB_BF16;
    case DType::i32: return TDB_I32;
    case DType::q8_0: return TDB_Q8_0;
  }
  return 0;
}

std::optional<DType> from_abi_dtype(int32_t t) {
  switch (t) {
    case TDB_F32: return DType::f32;
    case TDB_BF16: return DType::bf16;
    case TDB_I32: return DType::i32;
    case TDB_Q8_0: return DType::q8_0;
    default: return std::nullopt;
  }
}

namespace {

// The one list of every op parameter struct's fields, by the name they have in the ABI. A visitor
// is called as v(name, field&) for each field.
template <class V> void fields(NoAttrs&, V&) {}
template <class V> void fields(MatmulAttrs& a, V& v) { v("trans_a", a.trans_a), v("trans_b", a.trans_b); }
template <class V> void fields(ScaleAttrs& a, V& v) { v("scale", a.scale); }
template <class V> void fields(NormAttrs& a, V& v) { v("eps", a.eps); }
template <class V> void fields(AttentionAttrs& a, V& v) {
  v("n_head", a.n_head), v("d_qk", a.d_qk), v("d_v", a.d_v), v("scale", a.scale);
}
template <class V> void fields(ShapeAttrs& a, V& v) { v("shape", a.shape); }
template <class V> void fields(SliceAttrs& a, V& v) { v("start", a.start), v("len", a.len), v("full", a.full); }
template <class V> void fields(RopeAttrs& a, V& v) {
  v("rot_offset", a.rot_offset), v("rot_dim", a.rot_dim), v("theta", a.theta), v("interleaved", a.interleaved);
  v("yarn_factor", a.yarn_factor), v("yarn_beta_fast", a.yarn_beta_fast), v("yarn_beta_slow", a.yarn_beta_slow);
  v("yarn_original_max_position", a.yarn_original_max_position), v("attention_factor", a.attention_factor);
  v("inverse", a.inverse);
}
template <class V> void fields(MlaAttrs& a, V& v) {
  v("n_head", a.n_head), v("d_nope", a.d_nope), v("d_rope", a.d_rope), v("d_v", a.d_v), v("scale", a.scale);
  v("part", a.part);
}
template <class V> void fields(RouteAttrs& a, V& v) {
  v("n_experts", a.n_experts), v("top_k", a.top_k), v("n_group", a.n_group), v("topk_group", a.topk_group);
  v("norm_topk_prob", a.norm_topk_prob), v("routed_scaling_factor", a.routed_scaling_factor);
}
template <class V> void fields(GroupedMatmulAttrs& a, V& v) { v("transpose_w", a.transpose_w); }
template <class V> void fields(ShiftAttrs& a, V& v) { v("shift", a.shift), v("fill", a.fill); }
template <class V> void fields(ExpertParallelAttrs& a, V& v) { v("ranks", a.ranks), v("n_experts", a.n_experts), v("top_k", a.top_k); }
template <class V> void fields(CastAttrs& a, V& v) { v("to", a.to); }

struct Encoder {
  std::vector<tdb_attr>& out;
  tdb_attr make(const char* name, int32_t type) {
    tdb_attr a{};
    a.struct_size = sizeof(tdb_attr);
    a.name = name;
    a.type = type;
    return a;
  }
  void operator()(const char* name, bool& b) { auto a = make(name, TDB_ATTR_I64); a.i = b; out.push_back(a); }
  void operator()(const char* name, int& i) { auto a = make(name, TDB_ATTR_I64); a.i = i; out.push_back(a); }
  void operator()(const char* name, int64_t& i) { auto a = make(name, TDB_ATTR_I64); a.i = i; out.push_back(a); }
  void operator()(const char* name, float& f) { auto a = make(name, TDB_ATTR_F64); a.f = f; out.push_back(a); }
  void operator()(const char* name, double& f) { auto a = make(name, TDB_ATTR_F64); a.f = f; out.push_back(a); }
  void operator()(const char* name, DType& t) { auto a = make(name, TDB_ATTR_I64); a.i = to_abi_dtype(t); out.push_back(a); }
  void operator()(const char* name, Shape& s) {
    auto a = make(name, TDB_ATTR_I64S);
    a.count = static_cast<int32_t>(s.size());
    a.ints = s.data();
    out.push_back(a);
  }
};

// Whether a struct's fields are exactly the node's attributes (no allocation: this runs per node
// executed in the loopback plugin).
struct NameMatcher {
  const tdb_node& n;
  int32_t fields = 0;
  bool all_found = true;
  template <class T> void operator()(const char* name, T&) {
    ++fields;
    bool found = false;
    for (int32_t i = 0; i < n.n_attrs && !found; ++i) found = std::strcmp(n.attrs[i]->name, name) == 0;
    all_found = all_found && found;
  }
};

// Reads each field from the node's attributes (all present: the struct was chosen by its names).
struct Decoder {
  const tdb_node& n;
  const tdb_attr& find(const char* name, int32_t type) {
    for (int32_t i = 0; i < n.n_attrs; ++i)
      if (std::strcmp(n.attrs[i]->name, name) == 0) {
        check(n.attrs[i]->type == type, "op ", n.op, " at node '", n.name, "': attribute ", name, " has type ",
              n.attrs[i]->type, ", expected ", type);
        return *n.attrs[i];
      }
    throw Error(std::string("op ") + n.op + " at node '" + n.name + "': attribute " + name + " missing");
  }
  void operator()(const char* name, bool& b) { b = find(name, TDB_ATTR_I64).i != 0; }
  void operator()(const char* name, int& i) { i = static_cast<int>(find(name, TDB_ATTR_I64).i); }
  void operator()(const char* name, int64_t& i) { i = find(name, TDB_ATTR_I64).i; }
  void operator()(const char* name, float& f) { f = static_cast<float>(find(name, TDB_ATTR_F64).f); }
  void operator()(const char* name, double& f) { f = find(name, TDB_ATTR_F64).f; }
  void operator()(const char* name, DType& t) {
    const auto d = from_abi_dtype(static_cast<int32_t>(find(name, TDB_ATTR_I64).i));
    check(d.has_value(), "op ", n.op, " at node '", n.name, "': attribute ", name, " is not a known dtype");
    t = *d;
  }
  void operator()(const char* name, Shape& s) {
    const tdb_attr& a = find(name, TDB_ATTR_I64S);
    s.assign(a.ints, a.ints + a.count);
  }
};

// The Attrs alternative whose field names are exactly the node's attribute names.
template <size_t I = 0> bool decode_attrs(const tdb_node& n, Attrs& out) {
  if constexpr (I == std::variant_size_v<Attrs>) {
    return false;
  } else {
    std::variant_alternative_t<I, Attrs> a{};
    NameMatcher m{n};
    fields(a, m);
    if (m.all_found && m.fields == n.n_attrs) {
      Decoder d{n};
      fields(a, d);
      out = a;
      return true;
    }
    return decode_attrs<I + 1>(n, out);
  }
}

tdb_tensor describe(const Shape& shape, const Shape& strides, DType dt, tdb_buffer* buffer, uint64_t offset) {
  tdb_tensor t{};
  t.struct_size = sizeof(tdb_tensor);
  t.buffer = buffer;
  t.offset = offset;
  t.dtype = to_abi_dtype(dt);
  t.ndim = static_cast<int32_t>(shape.size());
  t.shape = shape.data();
  t.strides = strides.data();
  return t;
}

}  // namespace

AbiNode::AbiNode(const Node& node, int32_t op_id, std::span<const Node* const> inputs) {
  strides_.reserve(inputs.size() + 1);
  for (const Node* in : inputs) {
    strides_.push_back(contiguous_strides(in->shape));
    tensors_.push_back(describe(in->shape, strides_.back(), in->dtype, nullptr, 0));
  }
  strides_.push_back(contiguous_strides(node.shape));
  tensors_.push_back(describe(node.shape, strides_.back(), node.dtype, nullptr, 0));
  finish(node, op_id);
}

AbiNode::AbiNode(const Node& node, int32_t op_id, std::span<const Tensor> inputs, const Tensor& output) {
  for (const Tensor& t : inputs)
    tensors_.push_back(describe(t.shape, t.strides, t.dtype, static_cast<tdb_buffer*>(t.storage->handle), t.offset));
  tensors_.push_back(
      describe(output.shape, output.strides, output.dtype, static_cast<tdb_buffer*>(output.storage->handle), output.offset));
  finish(node, op_id);
}

void AbiNode::finish(const Node& node, int32_t op_id) {
  for (size_t i = 0; i + 1 < tensors_.size(); ++i) inputs_.push_back(&tensors_[i]);
  // The encoder reads the fields through a non-const reference (one list serves both directions);
  // it never writes, and the ints it points to stay the node's own.
  std::visit([&](auto& a) { Encoder e{attrs_}; fields(const_cast<std::remove_const_t<std::remove_reference_t<decltype(a)>>&>(a), e); },
             node.attrs);
  std::sort(attrs_.begin(), attrs_.end(), [](const tdb_attr& a, const tdb_attr& b) { return std::strcmp(a.name, b.name) < 0; });
  for (const tdb_attr& a : attrs_) attr_ptrs_.push_back(&a);
  node_.struct_size = sizeof(tdb_node);
  node_.op = op_name(node.op);
  node_.op_version = 1;
  node_.op_id = op_id;
  node_.name = node.name.c_str();
  node_.n_inputs = static_cast<int32_t>(inputs_.size());
  node_.inputs = inputs_.data();
  node_.output = &tensors_.back();
  node_.n_attrs = static_cast<int32_t>(attr_ptrs_.size());
  node_.attrs = attr_ptrs_.data();
}

Shape shape_from_abi(const tdb_tensor& t) { return Shape(t.shape, t.shape + t.ndim); }

Node node_from_abi(const tdb_node& n, OpKind op) {
  Node node;
  node.op = op;
  node.name = n.name ? n.name : "";
  node.shape = shape_from_abi(*n.output);
  const auto dt = from_abi_dtype(n.output->dtype);
  check(dt.has_value(), "op ", n.op, " at node '", node.name, "': unknown output dtype ", n.output->dtype);
  node.dtype = *dt;
  check(decode_attrs(n, node.attrs), "op ", n.op, " at node '", node.name,
        "': its attributes match no op parameter struct of this tandem");
  return node;
}

Tensor tensor_from_abi(const tdb_tensor& t, Backend* owner) {
  Tensor r;
  r.shape = shape_from_abi(t);
  r.strides = Shape(t.strides, t.strides + t.ndim);
  const auto dt = from_abi_dtype(t.dtype);
  check(dt.has_value(), "unknown tensor dtype ", t.dtype);
  r.dtype = *dt;
  r.offset = static_cast<size_t>(t.offset);
  r.storage = std::make_shared<Storage>(owner, static_cast<void*>(t.buffer), r.offset + r.nbytes());
  return r;
}

}  // namespace tandem
