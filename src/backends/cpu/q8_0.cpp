// q8_0 weights on the CPU backend (serving with --weights q8_0; core/dtype.h has the format).
// Three ops take a q8_0 input: matmul (B, the weight), embedding (the table) and cast (dequantize).
// Weights are dequantized exactly (an fp16 scale times an int8 is exact in f32) and multiplied with
// the f32 activations by f32 FMAs. Decoding (M <= kSkinnyMaxRows rows) streams the q8_0 bytes
// through the skinny GEMM (gemv.h: 1.06 bytes per weight, a quarter of f32's traffic, and the same
// bits as the f32 skinny GEMM on the dequantized weights); larger M (prefill, eval) dequantizes B
// into f32 scratch and runs the f32 GEMM.
#include "backends/cpu/gemv.h"
#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "ops/matmul.h"

namespace tandem::cpu {
namespace {

const uint8_t* q8(const Tensor& t) { return static_cast<const uint8_t*>(t.storage->handle) + t.offset; }
size_t row_bytes(int64_t n) { return static_cast<size_t>(n / kQ8Block) * kQ8BlockBytes; }

void matmul_q8_0(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  check(in[0].dtype == DType::f32 && out.dtype == DType::f32 && !in[1].shape.empty(), "cpu backend: matmul at node '",
        node.name, "' with q8_0 weights takes f32 activations, got ", dtype_name(in[0].dtype));
  const MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  check(!d.batched && !d.trans_a, "cpu backend: matmul at node '", node.name,
        "': q8_0 weights only as the 2-D right operand of a plain (not transposed-left) matmul");
  const float* A = f32(in[0]);
  float* C = f32(out);
  if (d.m <= kSkinnyMaxRows) return skinny_gemm_q8_0(d.trans_b, d.m, d.n, d.k, A, d.a_cols, q8(in[1]), d.b_cols, C, d.n);
  float* B = scratch(2, in[1].numel());
  dequantize_q8_0(q8(in[1]), B, in[1].numel());
  gemm(false, d.trans_b, d.m, d.n, d.k, 1.0f, A, d.a_cols, B, d.b_cols, 0.0f, C, d.n);
}

void embedding_q8_0(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int32_t* ids = i32(in[0]);
  const int64_t n = in[0].numel(), C = in[1].shape[1];
  const size_t rb = row_bytes(C);
  float* o = f32(out);
#pragma omp parallel for schedule(static) if (n * C > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dequantize_q8_0(q8(in[1]) + static_cast<size_t>(ids[i]) * rb, o + i * C, C);
}

void dequantize(const Node&, std::span<const Tensor> in, const Tensor& out) {
  if (out.dtype == DType::f32) return dequantize_q8_0(q8(in[0]), f32(out), out.numel());
  float* w = scratch(0, out.numel());
  dequantize_q8_0(q8(in[0]), w, out.numel());
  to_bf16(w, bf16(out), out.numel());
}

}  // namespace

void run_q8_0(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  switch (node.op) {
    case OpKind::matmul: return matmul_q8_0(node, in, out);
    case OpKind::embedding: return embedding_q8_0(node, in, out);
    case OpKind::cast: return dequantize(node, in, out);
    default:
      throw Error(std::string("cpu backend: op ") + op_name(node.op) + " at node '" + node.name +
                  "' does not take q8_0 inputs (q8_0 weights feed matmul, embedding and cast)");
  }
}

}  // namespace tandem::cpu
