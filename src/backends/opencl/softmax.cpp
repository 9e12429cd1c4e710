// softmax over the last dim and its backward (ops/softmax.cpp): one work-item per row.
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const softmax_src = R"CLC(
__kernel void softmax_f32(__global const float* x, long xo, __global float* o, long oo, long R, long C) {
  long r = get_global_id(0);
  if (r >= R) return;
  __global const float* in = x + xo + r * C;
  __global float* y = o + oo + r * C;
  float mx = -INFINITY, s = 0.0f;
  for (long c = 0; c < C; ++c) mx = fmax(mx, in[c]);
  for (long c = 0; c < C; ++c) s += (y[c] = exp(in[c] - mx));
  for (long c = 0; c < C; ++c) y[c] /= s;
}
__kernel void softmax_grad_f32(__global const float* y, long yo, __global const float* dy, long dyo,
                               __global float* o, long oo, long R, long C) {
  long r = get_global_id(0);
  if (r >= R) return;
  float dot = 0.0f;
  for (long c = 0; c < C; ++c) dot += y[yo + r * C + c] * dy[dyo + r * C + c];
  for (long c = 0; c < C; ++c) o[oo + r * C + c] = y[yo + r * C + c] * (dy[dyo + r * C + c] - dot);
}
)CLC";

void softmax(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
  be.launch("softmax_f32", static_cast<size_t>(R), {in[0], out, R, C});
}
void softmax_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
  be.launch("softmax_grad_f32", static_cast<size_t>(R), {in[0], in[1], out, R, C});
}

}  // namespace tandem::opencl
