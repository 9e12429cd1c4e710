// Element-wise ops and reductions (ops/elementwise.cpp, ops/reduce.cpp), sigmoid and swiglu.
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const elementwise_src = R"CLC(
// b broadcast over a's leading dims: a 2-D range (column, row) of [n / nb, nb], no division.
__kernel void add_f32(__global const float* a, long ao, __global const float* b, long bo,
                      __global float* o, long oo, long rows, long nb) {
  const long c = get_global_id(0), r = get_global_id(1);
  if (c < nb && r < rows) o[oo + r * nb + c] = a[ao + r * nb + c] + b[bo + c];
}
__kernel void mul_f32(__global const float* a, long ao, __global const float* b, long bo,
                      __global float* o, long oo, long rows, long nb) {
  const long c = get_global_id(0), r = get_global_id(1);
  if (c < nb && r < rows) o[oo + r * nb + c] = a[ao + r * nb + c] * b[bo + c];
}
__kernel void scale_f32(__global const float* x, long xo, __global float* o, long oo, long n, float s) {
  long i = get_global_id(0);
  if (i < n) o[oo + i] = x[xo + i] * s;
}
__kernel void broadcast_f32(__global const float* x, long xo, __global float* o, long oo, long n, long nx) {
  long i = get_global_id(0);
  if (i < n) o[oo + i] = x[xo + i % nx];
}
// out[j] = sum over rows r of x[r, j], rows in order.
__kernel void sum_to_f32(__global const float* x, long xo, __global float* o, long oo, long rows, long n) {
  long j = get_global_id(0);
  if (j >= n) return;
  float acc = 0.0f;
  for (long r = 0; r < rows; ++r) acc += x[xo + r * n + j];
  o[oo + j] = acc;
}
// One work-group of 256: strided partial sums, then a fixed tree.
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void sum_f32(__global const float* x, long xo, __global float* o, long oo, long n) {
  __local float part[256];
  int l = get_local_id(0);
  float acc = 0.0f;
  for (long i = l; i < n; i += 256) acc += x[xo + i];
  part[l] = acc;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = 128; s > 0; s >>= 1) {
    if (l < s) part[l] += part[l + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (l == 0) o[oo] = part[0];
}
#define GELU_C 0.7978845608028654f
__kernel void gelu_f32(__global const float* x, long xo, __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i >= n) return;
  float v = x[xo + i];
  o[oo + i] = 0.5f * v * (1.0f + tanh(GELU_C * (v + 0.044715f * v * v * v)));
}
__kernel void gelu_grad_f32(__global const float* x, long xo, __global const float* dy, long dyo,
                            __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i >= n) return;
  float v = x[xo + i];
  // tanh(u) = (1 - e) / (1 + e) and 1 - tanh^2(u) = 4e / (1 + e)^2 from one e = exp(-2|u|): no
  // cancellation where tanh saturates (1 - t*t from a tanh one ulp short of 1 would leave 1.2e-7
  // and, times x^3's derivative, an error of 0.1 at x = 300, conform's @x100 case). exp, not cosh
  // or expm1: PoCL vectorises exp across work-items, the others run scalar at ~17x the cost.
  float u = GELU_C * (v + 0.044715f * v * v * v), e = exp(-2.0f * fabs(u));
  float t = copysign((1.0f - e) / (1.0f + e), u), sech2 = 4.0f * e / ((1.0f + e) * (1.0f + e));
  float dt = GELU_C * (1.0f + 3.0f * 0.044715f * v * v) * sech2;
  o[oo + i] = dy[dyo + i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
}
__kernel void silu_f32(__global const float* x, long xo, __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i >= n) return;
  float v = x[xo + i];
  o[oo + i] = v / (1.0f + exp(-v));
}
__kernel void silu_grad_f32(__global const float* x, long xo, __global const float* dy, long dyo,
                            __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i >= n) return;
  float v = x[xo + i];
  float s = 1.0f / (1.0f + exp(-v));
  o[oo + i] = dy[dyo + i] * (s * (1.0f + v * (1.0f - s)));
}
__kernel void sigmoid_f32(__global const float* x, long xo, __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i < n) o[oo + i] = 1.0f / (1.0f + exp(-x[xo + i]));
}
__kernel void sigmoid_grad_f32(__global const float* y, long yo, __global const float* dy, long dyo,
                               __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i < n) o[oo + i] = dy[dyo + i] * y[yo + i] * (1.0f - y[yo + i]);
}
// swiglu(x [..., 2I]) = silu(gate) * up, gate = x[..., :I], up = x[..., I:].
__kernel void swiglu_f32(__global const float* x, long xo, __global float* o, long oo, long n, long I) {
  long i = get_global_id(0);
  if (i >= n) return;
  __global const float* gate = x + xo + (i / I) * 2 * I + i % I;
  float g = gate[0];
  o[oo + i] = g / (1.0f + exp(-g)) * gate[I];
}
// One work-item per (row, c) writes d gate and d up.
__kernel void swiglu_grad_f32(__global const float* x, long xo, __global const float* dy, long dyo,
                              __global float* o, long oo, long n, long I) {
  long i = get_global_id(0);
  if (i >= n) return;
  const long at = (i / I) * 2 * I + i % I;
  const float g = x[xo + at], u = x[xo + at + I], d = dy[dyo + i];
  const float s = 1.0f / (1.0f + exp(-g));
  o[oo + at] = d * u * s * (1.0f + g * (1.0f - s));
  o[oo + at + I] = d * g * s;
}
)CLC";

namespace {
void binary(OpenClBackend& be, const char* kernel, std::span<const Tensor> in, const Tensor& out) {
  const int64_t nb = in[1].numel(), rows = nb ? out.numel() / nb : 0;
  be.launch3d(kernel, {static_cast<size_t>(nb), static_cast<size_t>(rows), 1}, {0, 0, 0}, {in[0], in[1], out, rows, nb});
}
}  // namespace
void add(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) { binary(be, "add_f32", in, out); }
void mul(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) { binary(be, "mul_f32", in, out); }
void scale(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  be.launch("scale_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel(), node.attr<ScaleAttrs>().scale});
}
void broadcast(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("broadcast_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel(), in[0].numel()});
}
void sum_to(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = out.numel();
  be.launch("sum_to_f32", static_cast<size_t>(n), {in[0], out, in[0].numel() / n, n});
}
void sum(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("sum_f32", 256, {in[0], out, in[0].numel()}, 256);
}
void gelu(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("gelu_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel()});
}
void gelu_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("gelu_grad_f32", static_cast<size_t>(out.numel()), {in[0], in[1], out, out.numel()});
}
void silu(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("silu_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel()});
}
void silu_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("silu_grad_f32", static_cast<size_t>(out.numel()), {in[0], in[1], out, out.numel()});
}

void sigmoid(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("sigmoid_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel()});
}
void sigmoid_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("sigmoid_grad_f32", static_cast<size_t>(out.numel()), {in[0], in[1], out, out.numel()});
}
void swiglu(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("swiglu_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel(), out.shape.back()});
}
void swiglu_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("swiglu_grad_f32", static_cast<size_t>(in[1].numel()), {in[0], in[1], out, in[1].numel(), in[1].shape.back()});
}

}  // namespace tandem::opencl
