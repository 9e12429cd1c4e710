// Rotary position embedding (ops/rope.h). The frequencies come from rope_inv_freq (double, as
// transformers computes them) rounded to f32 once and kept on the device; angles are formed as the
// CPU kernel does: float(position) * float(inv_freq) in f32, then cos/sin.
#include <vector>

#include "backends/opencl/kernels.h"
#include "ops/rope.h"

namespace tandem::opencl {

const char* const rope_src = R"CLC(
// cos/sin of every (position row, pair): PoCL runs cos and sin scalar (~20x an exp), so they are
// computed once per position rather than once per head. cs [rows, rot/2] as (cos, sin) * factor.
__kernel void rope_table_f32(__global const int* pos, long po, __global const float* inv, __global float2* cs, long n,
                             long hr, float af, float sign) {
  long g = get_global_id(0);
  if (g >= n) return;
  const float ang = (float)pos[po + g / hr] * inv[g % hr];
  cs[g] = (float2)(cos(ang) * af, sign * sin(ang) * af);
}
// One work-item per element of x [B, T, H, D]; the first element of each rotated pair writes both,
// so the kernel is correct even in place.
__kernel void rope_f32(__global const float* x, long xo, __global const float2* cs, __global float* o, long oo, long n,
                       long T, long H, long D, long off, long rot, long interleaved, long per_batch) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long d = g % D, row = g / D, bt = row / H, k = d - off, hr = rot / 2;
  if (k < 0 || k >= rot) {
    o[oo + g] = x[xo + g];
    return;
  }
  if (interleaved ? (k & 1) : k >= hr) return;  // the pair's second element
  const long p = interleaved ? k / 2 : k;
  const long i0 = row * D + off + (interleaved ? 2 * p : p), i1 = row * D + off + (interleaved ? 2 * p + 1 : p + hr);
  const float2 c = cs[(per_batch ? bt : bt % T) * hr + p];
  const float x0 = x[xo + i0], x1 = x[xo + i1];
  o[oo + i0] = x0 * c.x - x1 * c.y;
  o[oo + i1] = x1 * c.x + x0 * c.y;
}
)CLC";

void rope(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RopeAttrs>();
  const std::vector<double> inv64 = rope_inv_freq(a);
  const std::vector<float> inv(inv64.begin(), inv64.end());
  cl_mem freq = be.constant(inv.data(), inv.size() * sizeof(float));
  const int64_t T = in[0].shape[1], H = in[0].shape[2], D = in[0].shape[3], hr = a.rot_dim / 2, rows = in[1].numel();
  cl_mem cs = be.scratch(0, static_cast<size_t>(rows * hr) * 8);
  be.launch("rope_table_f32", static_cast<size_t>(rows * hr),
            {in[1], freq, cs, rows * hr, hr, static_cast<float>(a.attention_factor), a.inverse ? -1.0f : 1.0f});
  be.launch("rope_f32", static_cast<size_t>(out.numel()),
            {in[0], cs, out, out.numel(), T, H, D, a.rot_offset, a.rot_dim, int64_t{a.interleaved},
             int64_t{in[1].shape.size() == 2}});
}

}  // namespace tandem::opencl
