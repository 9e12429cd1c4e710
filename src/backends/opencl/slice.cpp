// Windows of the last dim (ops/slice.cpp): slice_last, its adjoint pad_last, concat_last. One
// work-item per output element; values are only copied.
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const slice_src = R"CLC(
__kernel void slice_last_f32(__global const float* x, long xo, __global float* o, long oo, long n, long start, long len,
                             long full) {
  long g = get_global_id(0);
  if (g < n) o[oo + g] = x[xo + (g / len) * full + start + g % len];
}
__kernel void pad_last_f32(__global const float* x, long xo, __global float* o, long oo, long n, long start, long len,
                           long full) {
  long g = get_global_id(0);
  if (g >= n) return;
  long c = g % full - start;
  o[oo + g] = c >= 0 && c < len ? x[xo + (g / full) * len + c] : 0.0f;
}
__kernel void concat_last_f32(__global const float* a, long ao, __global const float* b, long bo, __global float* o,
                              long oo, long n, long la, long lb) {
  long g = get_global_id(0);
  if (g >= n) return;
  long r = g / (la + lb), c = g % (la + lb);
  o[oo + g] = c < la ? a[ao + r * la + c] : b[bo + r * lb + c - la];
}
)CLC";

void slice_last(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<SliceAttrs>();
  be.launch("slice_last_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel(), a.start, a.len, a.full});
}
void pad_last(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<SliceAttrs>();
  be.launch("pad_last_f32", static_cast<size_t>(out.numel()), {in[0], out, out.numel(), a.start, a.len, a.full});
}
void concat_last(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  be.launch("concat_last_f32", static_cast<size_t>(out.numel()),
            {in[0], in[1], out, out.numel(), in[0].shape.back(), in[1].shape.back()});
}

}  // namespace tandem::opencl
