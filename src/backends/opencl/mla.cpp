// Multi-head latent attention glue (ops/mla.cpp): mla_qkv packs heads into attention's layout,
// mla_qkv_grad unpacks a gradient, attention_latent decodes on the compressed cache.
#include <vector>

#include "backends/opencl/kernels.h"
#include "core/error.h"

namespace tandem::opencl {

const char* const mla_src = R"CLC(
// Output row = [q (H*dqk) | keys: per head kv_h[0:dn] ++ k_rope (H*dqk) | values: per head kv_h[dn:] (H*dv)].
__kernel void mla_qkv_f32(__global const float* q, long qo, __global const float* kv, long kvo, __global const float* kr,
                          long kro, __global float* o, long oo, long n, long H, long dn, long dr, long dv) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long dqk = dn + dr, wq = H * dqk, wkv = H * (dn + dv), wo = 2 * wq + H * dv, r = g / wo, c = g % wo;
  float v;
  if (c < wq) {
    v = q[qo + r * wq + c];
  } else if (c < 2 * wq) {
    const long h = (c - wq) / dqk, j = (c - wq) % dqk;
    v = j < dn ? kv[kvo + r * wkv + h * (dn + dv) + j] : kr[kro + r * dr + j - dn];
  } else {
    const long h = (c - 2 * wq) / dv, j = (c - 2 * wq) % dv;
    v = kv[kvo + r * wkv + h * (dn + dv) + dn + j];
  }
  o[oo + g] = v;
}
// The gradient of input `part` (0: q, 1: kv, 2: k_rope, summed over heads in order).
__kernel void mla_qkv_grad_f32(__global const float* gr, long go, __global float* o, long oo, long n, long H, long dn,
                               long dr, long dv, long part) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long dqk = dn + dr, wq = H * dqk, wo = 2 * wq + H * dv;
  if (part == 0) {
    o[oo + g] = gr[go + (g / wq) * wo + g % wq];
  } else if (part == 1) {
    const long wkv = H * (dn + dv), r = g / wkv, c = g % wkv, h = c / (dn + dv), j = c % (dn + dv);
    o[oo + g] = gr[go + r * wo + (j < dn ? wq + h * dqk + j : 2 * wq + h * dv + j - dn)];
  } else {
    const long r = g / dr, c = g % dr;
    float acc = 0.0f;
    for (long h = 0; h < H; ++h) acc += gr[go + r * wo + wq + h * dqk + dn + c];
    o[oo + g] = acc;
  }
}

// attention_latent. The new entries go into the cache at cache_len[b]; then per head, with
// W_UK_h = kv_b rows [h*(dn+dv), h*(dn+dv)+dn) and W_UV_h the next dv rows (each [., L]):
// q_lat = W_UK_h^T q_nope, s_t = scale (q_lat . c_t + q_rope . r_t), o_lat = softmax(s) . c,
// out_h = W_UV_h o_lat.
__kernel void latent_append_f32(__global const float* e, long eo, __global float* cache, long co,
                                __global const int* lens, long lo, long n, long Tn, long Tmax, long We) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long c = g % We, t = (g / We) % Tn, b = g / (We * Tn);
  cache[co + (b * Tmax + lens[lo + b] + t) * We + c] = e[eo + g];
}
// One work-item per (b, i, h, l): q_lat [B*Tn*H, L].
__kernel void latent_qlat_f32(__global const float* q, long qo, __global const float* wb, long wbo, __global float* qlat,
                              long n, long H, long dn, long dr, long dv, long L) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long l = g % L, h = (g / L) % H, bi = g / (L * H);
  __global const float* qh = q + qo + bi * H * (dn + dr) + h * (dn + dr);
  __global const float* wuk = wb + wbo + h * (dn + dv) * L;
  float acc = 0.0f;
  for (long j = 0; j < dn; ++j) acc += qh[j] * wuk[j * L + l];
  qlat[g] = acc;
}
float latent_score(__global const float* ql, __global const float* qr, __global const float* row, long L, long dr,
                   float scale) {
  float s = 0.0f;
  for (long l = 0; l < L; ++l) s += ql[l] * row[l];
  for (long c = 0; c < dr; ++c) s += qr[c] * row[L + c];
  return scale * s;
}
// One work-item per (b, i, h): softmax over the sequence's n = cache_len[b] + i + 1 rows, o_lat [B*Tn*H, L].
__kernel void latent_attend_f32(__global const float* q, long qo, __global const float* cache, long co,
                                __global const int* lens, long lo, __global const float* qlat, __global float* olat,
                                long n, long Tn, long H, long dn, long dr, long L, long Tmax, float scale) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long h = g % H, bi = g / H, i = bi % Tn, b = bi / Tn, We = L + dr, len = lens[lo + b] + i + 1;
  __global const float* ql = qlat + g * L;
  __global const float* qr = q + qo + bi * H * (dn + dr) + h * (dn + dr) + dn;
  __global const float* cb = cache + co + b * Tmax * We;
  __global float* ol = olat + g * L;
  float mx = -INFINITY, sum = 0.0f;
  for (long t = 0; t < len; ++t) mx = fmax(mx, latent_score(ql, qr, cb + t * We, L, dr, scale));
  for (long t = 0; t < len; ++t) sum += exp(latent_score(ql, qr, cb + t * We, L, dr, scale) - mx);
  const float inv = 1.0f / sum;
  for (long l = 0; l < L; ++l) ol[l] = 0.0f;
  for (long t = 0; t < len; ++t) {
    __global const float* row = cb + t * We;
    const float p = exp(latent_score(ql, qr, row, L, dr, scale) - mx) * inv;
    for (long l = 0; l < L; ++l) ol[l] += p * row[l];
  }
}
// One work-item per (b, i, h, c): out [B, Tn, H*dv].
__kernel void latent_out_f32(__global const float* olat, __global const float* wb, long wbo, __global float* o, long oo,
                             long n, long H, long dn, long dv, long L) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long c = g % dv, hb = g / dv;  // hb = (b*Tn + i)*H + h
  __global const float* wuv = wb + wbo + ((hb % H) * (dn + dv) + dn + c) * L;
  __global const float* ol = olat + hb * L;
  float acc = 0.0f;
  for (long l = 0; l < L; ++l) acc += wuv[l] * ol[l];
  o[oo + g] = acc;
}
)CLC";

void mla_qkv(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<MlaAttrs>();
  be.launch("mla_qkv_f32", static_cast<size_t>(out.numel()),
            {in[0], in[1], in[2], out, out.numel(), a.n_head, a.d_nope, a.d_rope, a.d_v});
}

void mla_qkv_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<MlaAttrs>();
  be.launch("mla_qkv_grad_f32", static_cast<size_t>(out.numel()),
            {in[0], out, out.numel(), a.n_head, a.d_nope, a.d_rope, a.d_v, int64_t{a.part}});
}

void attention_latent(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<MlaAttrs>();
  const int64_t B = in[0].shape[0], Tn = in[0].shape[1], H = a.n_head, dn = a.d_nope, dr = a.d_rope, dv = a.d_v;
  const int64_t We = in[1].shape[2], L = We - dr, Tmax = in[2].shape[1];
  std::vector<int32_t> lens(static_cast<size_t>(B));
  be.download(lens.data(), in[4].storage->handle, in[4].offset, lens.size() * 4);
  for (int64_t b = 0; b < B; ++b)
    check(lens[static_cast<size_t>(b)] >= 0 && lens[static_cast<size_t>(b)] + Tn <= Tmax, "attention_latent at node '",
          node.name, "': sequence ", b, " needs ", lens[static_cast<size_t>(b)] + Tn, " cache positions, the cache holds ",
          Tmax);
  const int64_t heads = B * Tn * H;
  cl_mem qlat = be.scratch(0, static_cast<size_t>(heads * L) * 4), olat = be.scratch(1, static_cast<size_t>(heads * L) * 4);
  be.launch("latent_append_f32", static_cast<size_t>(B * Tn * We), {in[1], in[2], in[4], B * Tn * We, Tn, Tmax, We});
  be.launch("latent_qlat_f32", static_cast<size_t>(heads * L), {in[0], in[3], qlat, heads * L, H, dn, dr, dv, L});
  be.launch("latent_attend_f32", static_cast<size_t>(heads),
            {in[0], in[2], in[4], qlat, olat, heads, Tn, H, dn, dr, L, Tmax, a.scale});
  be.launch("latent_out_f32", static_cast<size_t>(heads * dv), {olat, in[3], out, heads * dv, H, dn, dv, L});
}

}  // namespace tandem::opencl
