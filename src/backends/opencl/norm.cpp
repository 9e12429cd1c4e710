// layernorm and rmsnorm, forward and backward (ops/norm.cpp): one work-item per row, two-pass
// statistics; the weight gradient reads per-row statistics computed by a first kernel.
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const norm_src = R"CLC(
// (mean, 1/std) of row r; mean = 0 for rmsnorm (centre = 0).
float2 row_stats(__global const float* x, long C, float eps, long centre) {
  float mean = 0.0f, var = 0.0f;
  if (centre) {
    for (long c = 0; c < C; ++c) mean += x[c];
    mean /= (float)C;
  }
  for (long c = 0; c < C; ++c) var += (x[c] - mean) * (x[c] - mean);
  var /= (float)C;
  return (float2)(mean, 1.0f / sqrt(var + eps));
}
__kernel void norm_f32(__global const float* x, long xo, __global const float* w, long wo, __global const float* b,
                       long bo, __global float* o, long oo, long R, long C, float eps, long centre) {
  long r = get_global_id(0);
  if (r >= R) return;
  __global const float* row = x + xo + r * C;
  float2 s = row_stats(row, C, eps, centre);
  for (long c = 0; c < C; ++c)
    o[oo + r * C + c] = (row[c] - s.x) * s.y * w[wo + c] + (centre ? b[bo + c] : 0.0f);
}
__kernel void norm_grad_x_f32(__global const float* x, long xo, __global const float* w, long wo,
                              __global const float* dy, long dyo, __global float* o, long oo, long R, long C,
                              float eps, long centre) {
  long r = get_global_id(0);
  if (r >= R) return;
  __global const float* row = x + xo + r * C;
  __global const float* g = dy + dyo + r * C;
  float2 s = row_stats(row, C, eps, centre);
  float m1 = 0.0f, m2 = 0.0f;
  for (long c = 0; c < C; ++c) {
    float dxh = g[c] * w[wo + c];
    m1 += dxh;
    m2 += dxh * (row[c] - s.x) * s.y;
  }
  m1 = centre ? m1 / (float)C : 0.0f;
  m2 /= (float)C;
  for (long c = 0; c < C; ++c)
    o[oo + r * C + c] = s.y * (g[c] * w[wo + c] - m1 - (row[c] - s.x) * s.y * m2);
}
__kernel void norm_stats_f32(__global const float* x, long xo, __global float2* st, long R, long C, float eps,
                             long centre) {
  long r = get_global_id(0);
  if (r < R) st[r] = row_stats(x + xo + r * C, C, eps, centre);
}
__kernel void norm_grad_w_f32(__global const float* x, long xo, __global const float* dy, long dyo,
                              __global const float2* st, __global float* o, long oo, long R, long C) {
  long c = get_global_id(0);
  if (c >= C) return;
  float acc = 0.0f;
  for (long r = 0; r < R; ++r) acc += dy[dyo + r * C + c] * (x[xo + r * C + c] - st[r].x) * st[r].y;
  o[oo + c] = acc;
}
)CLC";

namespace {
void fwd(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
  be.launch("norm_f32", static_cast<size_t>(R),
            {in[0], in[1], centre ? in[2] : in[1], out, R, C, node.attr<NormAttrs>().eps, int64_t{centre}});
}
void grad_x(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
  be.launch("norm_grad_x_f32", static_cast<size_t>(R),
            {in[0], in[1], in[2], out, R, C, node.attr<NormAttrs>().eps, int64_t{centre}});
}
void grad_w(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
  cl_mem st = be.scratch(0, static_cast<size_t>(R) * 8);
  be.launch("norm_stats_f32", static_cast<size_t>(R), {in[0], st, R, C, node.attr<NormAttrs>().eps, int64_t{centre}});
  be.launch("norm_grad_w_f32", static_cast<size_t>(C), {in[0], in[1], st, out, R, C});
}
}  // namespace

void layernorm(OpenClBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { fwd(be, n, in, o, true); }
void rmsnorm(OpenClBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { fwd(be, n, in, o, false); }
void layernorm_grad_x(OpenClBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_x(be, n, in, o, true); }
void rmsnorm_grad_x(OpenClBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_x(be, n, in, o, false); }
void layernorm_grad_w(OpenClBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_w(be, n, in, o, true); }
void rmsnorm_grad_w(OpenClBackend& be, const Node& n, std::span<const Tensor> in, const Tensor& o) { grad_w(be, n, in, o, false); }

}  // namespace tandem::opencl
