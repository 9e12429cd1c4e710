// q8_0 weights on the CPU backend (serving with --weights q8_0; core/dtype.h has the format).
// Three ops take a q8_0 input: matmul (B, the weight), embedding (the table) and cast (dequantize).
// Weights are dequantized exactly (an fp16 scale times an int8 is exact in f32) as they stream, and
// multiplied with the f32 activations by f32 FMAs, so the result is the f32 matmul of the
// dequantized weights up to summation order. Decoding (M <= kSkinnyMaxRows rows) reads the weights
// once at 1.06 bytes per value, a quarter of f32's traffic; larger M (prefill, eval) dequantizes B
// into f32 scratch and runs the f32 GEMM. Deterministic: every element's sum runs in a fixed order
// on one thread, whatever the thread count.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backends/cpu/gemv.h"
#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "ops/matmul.h"

#ifdef __AVX512F__
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu {
namespace {

const uint8_t* q8(const Tensor& t) { return static_cast<const uint8_t*>(t.storage->handle) + t.offset; }
size_t row_bytes(int64_t n) { return static_cast<size_t>(n / kQ8Block) * kQ8BlockBytes; }
inline float block_scale(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
#ifdef __AVX512F__
  return _cvtsh_ss(h);  // F16C (every AVX-512 CPU has it): one instruction, no libgcc call
#else
  _Float16 f;
  std::memcpy(&f, &h, 2);
  return static_cast<float>(f);
#endif
}

#ifdef __AVX512F__
constexpr int64_t kPrefetchRows = 8;

// The 32 values of one block as two vectors of f32 (exact).
inline void load_block(const uint8_t* blk, __m512& lo, __m512& hi) {
  const __m512 d = _mm512_set1_ps(block_scale(blk));
  lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)))));
  hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)))));
}
#endif

// C[m, n] = A[m, :] . W[n, :], W [N, K] in q8_0 rows (trans_b: a linear layer's [out, in] weight, a
// tied lm_head). Rows of W are split between the threads.
void skinny_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint8_t* W, float* C, int64_t ldc) {
  const int64_t nb = K / kQ8Block;
  const size_t rb = row_bytes(K);
  const bool par = !omp_in_parallel() && N * K > (int64_t{1} << 15);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* row = W + static_cast<size_t>(n) * rb;
#ifdef __AVX512F__
    __m512 acc[kSkinnyMaxRows];
    for (int64_t m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m512 lo, hi;
      load_block(row + b * kQ8BlockBytes, lo, hi);
      for (int64_t m = 0; m < M; ++m) {
        const float* a = A + m * lda + b * kQ8Block;
        acc[m] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(a), acc[m]);
        acc[m] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(a + 16), acc[m]);
      }
    }
    for (int64_t m = 0; m < M; ++m) C[m * ldc + n] = _mm512_reduce_add_ps(acc[m]);
#else
    float w[kQ8Block];
    float acc[kSkinnyMaxRows] = {};
    for (int64_t b = 0; b < nb; ++b) {
      dequantize_q8_0(row + b * kQ8BlockBytes, w, kQ8Block);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < kQ8Block; ++i) acc[m] += w[i] * A[m * lda + b * kQ8Block + i];
    }
    for (int64_t m = 0; m < M; ++m) C[m * ldc + n] = acc[m];
#endif
  }
}

// C[m, :] = sum_k A[m, k] W[k, :], W [K, N] in q8_0 rows (no trans_b: GPT-2's Conv1D weights).
// Threads own ranges of column blocks; each element's chain runs over k ascending.
void skinny_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint8_t* W, float* C, int64_t ldc) {
  const int64_t nb = N / kQ8Block;
  const size_t rb = row_bytes(N);
  const bool par = !omp_in_parallel() && N * K > (int64_t{1} << 15);
  const int64_t threads = par ? omp_get_max_threads() : 1;
  const int64_t chunk = std::max<int64_t>(1, (nb + 2 * threads - 1) / (2 * threads));
#pragma omp parallel for schedule(dynamic, 1) if (par)
  for (int64_t b0 = 0; b0 < nb; b0 += chunk) {
    const int64_t b1 = std::min(nb, b0 + chunk);
    for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc + b0 * kQ8Block, C + m * ldc + b1 * kQ8Block, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const uint8_t* row = W + static_cast<size_t>(k) * rb;
      for (int64_t b = b0; b < b1; ++b) {
#ifdef __AVX512F__
        // This thread reads a short run of every row: the hardware prefetchers do not follow it,
        // so ask for the same run kPrefetchRows rows ahead (harmless past the end of W).
        _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchRows * rb + b * kQ8BlockBytes), _MM_HINT_T0);
        __m512 lo, hi;
        load_block(row + b * kQ8BlockBytes, lo, hi);
        for (int64_t m = 0; m < M; ++m) {
          float* c = C + m * ldc + b * kQ8Block;
          const __m512 a = _mm512_set1_ps(A[m * lda + k]);
          _mm512_storeu_ps(c, _mm512_fmadd_ps(a, lo, _mm512_loadu_ps(c)));
          _mm512_storeu_ps(c + 16, _mm512_fmadd_ps(a, hi, _mm512_loadu_ps(c + 16)));
        }
#else
        float w[kQ8Block];
        dequantize_q8_0(row + b * kQ8BlockBytes, w, kQ8Block);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t i = 0; i < kQ8Block; ++i) C[m * ldc + b * kQ8Block + i] += A[m * lda + k] * w[i];
#endif
      }
    }
  }
}

void matmul_q8_0(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  check(in[0].dtype == DType::f32 && out.dtype == DType::f32 && !in[1].shape.empty(), "cpu backend: matmul at node '",
        node.name, "' with q8_0 weights takes f32 activations, got ", dtype_name(in[0].dtype));
  const MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  check(!d.batched && !d.trans_a, "cpu backend: matmul at node '", node.name,
        "': q8_0 weights only as the 2-D right operand of a plain (not transposed-left) matmul");
  const float* A = f32(in[0]);
  float* C = f32(out);
  if (d.m <= kSkinnyMaxRows) {
    if (d.trans_b) skinny_nt(d.m, d.n, d.k, A, d.a_cols, q8(in[1]), C, d.n);
    else skinny_nn(d.m, d.n, d.k, A, d.a_cols, q8(in[1]), C, d.n);
    return;
  }
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
