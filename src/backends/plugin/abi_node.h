// tandem graph nodes <-> the plugin ABI's C descriptors (include/tandem/backend_abi.h).
//  - The host side (PluginBackend) describes a Node, its input nodes or tensors and its output as a
//    tdb_node: tensor descriptors plus the node's attributes as named, typed values.
//  - The loopback plugin, which runs tandem's own CPU kernels behind the ABI, turns a tdb_node
//    back into a Node (node_from_abi). Both directions use the one field list below (abi_node.cpp),
//    so an attribute is named the same way on both sides.
#pragma once
#include <optional>
#include <span>
#include <vector>

#include <tandem/backend_abi.h>

#include "core/graph.h"
#include "core/tensor.h"

namespace tandem {

int32_t to_abi_dtype(DType t);
std::optional<DType> from_abi_dtype(int32_t t);  // nullopt: a dtype this tandem does not know

// Owns every array a tdb_node points to; valid while it and the described Node/Tensors live.
class AbiNode {
 public:
  // At plan time: shapes and dtypes only (buffers NULL).
  AbiNode(const Node& node, int32_t op_id, std::span<const Node* const> inputs);
  // At execution: the tensors' buffers are the plugin's (Storage::handle is a tdb_buffer*).
  AbiNode(const Node& node, int32_t op_id, std::span<const Tensor> inputs, const Tensor& output);
  AbiNode(const AbiNode&) = delete;
  AbiNode& operator=(const AbiNode&) = delete;
  const tdb_node* get() const { return &node_; }

 private:
  void finish(const Node& node, int32_t op_id);
  std::vector<tdb_tensor> tensors_;  // inputs..., output
  std::vector<const tdb_tensor*> inputs_;
  std::vector<Shape> strides_;  // plan time: contiguous strides
  std::vector<tdb_attr> attrs_;
  std::vector<const tdb_attr*> attr_ptrs_;
  tdb_node node_{};
};

// The plugin side: the Node a tdb_node describes (op, name, output shape and dtype, attributes;
// the input ids are left empty: kernels get their inputs as tensors). Throws an Error naming the
// op and the attribute when the attributes match no op parameter struct.
Node node_from_abi(const tdb_node& n, OpKind op);
// A tensor over a plugin buffer that is a host pointer (the loopback's): borrowed storage.
Tensor tensor_from_abi(const tdb_tensor& t, Backend* owner);
// The shape a tensor descriptor carries.
Shape shape_from_abi(const tdb_tensor& t);

}  // namespace tandem
