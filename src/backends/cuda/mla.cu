// Multi-head latent attention glue (ops/mla.cpp): mla_qkv packs the heads into attention's layout,
// mla_qkv_grad takes one input's gradient back out of it (the shared rope key sums over heads in
// head order), and attention_latent decodes on the compressed cache with kv_b absorbed into the
// query and the output, as backends/cpu/mla.cpp: per-head keys and values are never formed.
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

struct MlaDims {
  int64_t rows, H, dn, dr, dv;
  __host__ __device__ int64_t dqk() const { return dn + dr; }
  __host__ __device__ int64_t wq() const { return H * (dn + dr); }
  __host__ __device__ int64_t wkv() const { return H * (dn + dv); }
  __host__ __device__ int64_t wout() const { return 2 * wq() + H * dv; }
};

MlaDims dims_of(const Node& node, const Shape& s) {
  const auto& a = node.attr<MlaAttrs>();
  return {s[0] * s[1], a.n_head, a.d_nope, a.d_rope, a.d_v};
}

__global__ void mla_qkv_k(const float* q, const float* kv, const float* kr, float* o, MlaDims d) {
  const int64_t wo = d.wout(), wq = d.wq();
  TANDEM_GRID_LOOP(g, d.rows * wo) {
    const int64_t r = g / wo, col = g % wo;
    float v;
    if (col < wq) {
      v = q[r * wq + col];
    } else if (col < 2 * wq) {  // key h = [kv_h[0:dn] | k_rope]
      const int64_t h = (col - wq) / d.dqk(), c = (col - wq) % d.dqk();
      v = c < d.dn ? kv[r * d.wkv() + h * (d.dn + d.dv) + c] : kr[r * d.dr + c - d.dn];
    } else {  // value h = kv_h[dn:dn+dv]
      const int64_t h = (col - 2 * wq) / d.dv, c = (col - 2 * wq) % d.dv;
      v = kv[r * d.wkv() + h * (d.dn + d.dv) + d.dn + c];
    }
    o[g] = v;
  }
}

__global__ void mla_qkv_grad_k(const float* g, float* o, MlaDims d, int part) {
  const int64_t wo = d.wout(), wq = d.wq();
  const int64_t width = part == 0 ? wq : part == 1 ? d.wkv() : d.dr;
  TANDEM_GRID_LOOP(e, d.rows * width) {
    const int64_t r = e / width, col = e % width;
    const float* gr = g + r * wo;
    if (part == 0) {
      o[e] = gr[col];
    } else if (part == 1) {
      const int64_t h = col / (d.dn + d.dv), c = col % (d.dn + d.dv);
      o[e] = c < d.dn ? gr[wq + h * d.dqk() + c] : gr[2 * wq + h * d.dv + c - d.dn];
    } else {
      float acc = 0.0f;
      for (int64_t h = 0; h < d.H; ++h) acc += gr[wq + h * d.dqk() + d.dn + col];
      o[e] = acc;
    }
  }
}

// entries [B, Tn, We] -> cache rows [len_b, len_b + Tn) of sequence b.
__global__ void latent_append_k(const float* entries, float* cache, const int32_t* lens, int64_t B, int64_t Tn,
                                int64_t We, int64_t Tmax) {
  TANDEM_GRID_LOOP(g, B * Tn * We) {
    const int64_t c = g % We, t = (g / We) % Tn, b = g / (We * Tn);
    const int64_t len = lens[b];
    if (len >= 0 && len + Tn <= Tmax) cache[(b * Tmax + len + t) * We + c] = entries[g];
  }
}

constexpr int kLatentThreads = 256;  // also the key tile: one score per thread

struct LatentArgs {
  const float* q;      // [B, Tn, H*(dn+dr)]
  const float* cache;  // [B, Tmax, L+dr]
  const float* wb;     // [H*(dn+dv), L]
  const int32_t* lens;
  float* o;            // [B, Tn, H*dv]
  int64_t Tn, H, dn, dr, dv, L, Tmax;
  float scale;
  unsigned long long* status;
  uint32_t tag;
};

// One block per (query token, head, sequence). Online softmax over tiles of kLatentThreads keys:
// scores = scale (q_lat . c_t + q_rope . r_t), o_lat = sum_t p_t c_t, out = W_UV o_lat / sum_t p_t.
__global__ void attention_latent_k(LatentArgs a) {
  extern __shared__ float smem[];
  __shared__ float red[33];
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t We = a.L + a.dr, dqk = a.dn + a.dr;
  float* qh = smem;               // [dn + dr]
  float* qlat = qh + dqk;         // [L]
  float* olat = qlat + a.L;       // [L]
  float* p = olat + a.L;          // [kLatentThreads]
  float* orow = a.o + ((b * a.Tn + i) * a.H + h) * a.dv;
  const int64_t len = a.lens[b];
  if (len < 0 || len + a.Tn > a.Tmax) {  // uniform across the block
    if (threadIdx.x == 0 && i == 0 && h == 0) report_error(a.status, a.tag, len);
    for (int64_t c = threadIdx.x; c < a.dv; c += blockDim.x) orow[c] = NAN;
    return;
  }
  const float* qsrc = a.q + (b * a.Tn + i) * a.H * dqk + h * dqk;
  for (int64_t c = threadIdx.x; c < dqk; c += blockDim.x) qh[c] = qsrc[c];
  __syncthreads();
  const float* wuk = a.wb + h * (a.dn + a.dv) * a.L;  // [dn, L]
  const float* wuv = wuk + a.dn * a.L;                // [dv, L]
  for (int64_t l = threadIdx.x; l < a.L; l += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.dn; ++j) acc += qh[j] * wuk[j * a.L + l];
    qlat[l] = acc;
    olat[l] = 0.0f;
  }
  __syncthreads();
  const float* cb = a.cache + b * a.Tmax * We;
  const int64_t n = len + i + 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float m = -INFINITY, lsum = 0.0f;
  for (int64_t t0 = 0; t0 < n; t0 += kLatentThreads) {
    const int64_t cnt = min(static_cast<int64_t>(kLatentThreads), n - t0);
    for (int64_t tt = warp; tt < cnt; tt += warps) {
      const float* row = cb + (t0 + tt) * We;
      float s = 0.0f, sr = 0.0f;
      for (int64_t l = lane; l < a.L; l += 32) s = fmaf(qlat[l], row[l], s);
      for (int64_t c = lane; c < a.dr; c += 32) sr = fmaf(qh[a.dn + c], row[a.L + c], sr);
      s = warp_sum(s) + warp_sum(sr);
      if (lane == 0) p[tt] = a.scale * s;
    }
    __syncthreads();
    const float mine = threadIdx.x < cnt ? p[threadIdx.x] : -INFINITY;
    const float mn = fmaxf(m, block_max(mine, red));
    const float e = threadIdx.x < cnt ? expf(mine - mn) : 0.0f;
    const float es = block_sum(e, red);  // synchronizes: every score was read above
    if (threadIdx.x < cnt) p[threadIdx.x] = e;
    const float corr = m == -INFINITY ? 0.0f : expf(m - mn);
    lsum = lsum * corr + es;
    m = mn;
    __syncthreads();
    for (int64_t l = threadIdx.x; l < a.L; l += blockDim.x) {
      float acc = olat[l] * corr;
      for (int64_t tt = 0; tt < cnt; ++tt) acc = fmaf(p[tt], cb[(t0 + tt) * We + l], acc);
      olat[l] = acc;
    }
    __syncthreads();
  }
  for (int64_t c = warp; c < a.dv; c += warps) {
    float s = 0.0f;
    for (int64_t l = lane; l < a.L; l += 32) s = fmaf(wuv[c * a.L + l], olat[l], s);
    s = warp_sum(s);
    if (lane == 0) orow[c] = s / lsum;
  }
}

}  // namespace

void mla_qkv(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const MlaDims d = dims_of(node, in[0].shape);
  if (out.numel() == 0) return;
  mla_qkv_k<<<grid_for(out.numel()), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(in[2]), ptr(out), d);
  be.launched("mla_qkv", &node);
}

void mla_qkv_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const MlaDims d = dims_of(node, in[0].shape);
  if (out.numel() == 0) return;
  mla_qkv_grad_k<<<grid_for(out.numel()), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), d, node.attr<MlaAttrs>().part);
  be.launched("mla_qkv_grad", &node);
}

void attention_latent(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& ma = node.attr<MlaAttrs>();
  LatentArgs a{};
  const int64_t B = in[0].shape[0];
  a.Tn = in[0].shape[1];
  a.H = ma.n_head;
  a.dn = ma.d_nope;
  a.dr = ma.d_rope;
  a.dv = ma.d_v;
  const int64_t We = in[1].shape[2];
  a.L = We - a.dr;
  a.Tmax = in[2].shape[1];
  a.scale = ma.scale;
  if (B * a.Tn == 0) return;
  check(a.Tn <= 65535 && a.H <= 65535 && B <= 65535, "cuda backend: attention_latent at node '", node.name,
        "': grid dims exceed 65535");
  const size_t smem = static_cast<size_t>(a.dn + a.dr + 2 * a.L + kLatentThreads) * sizeof(float);
  check(smem <= be.max_shared_bytes(), "cuda backend: attention_latent at node '", node.name, "': kv_lora_rank ", a.L,
        " needs ", smem, " bytes of shared memory, the device has ", be.max_shared_bytes());
  if (smem > 48 * 1024)
    cuda_check(cudaFuncSetAttribute(attention_latent_k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute (attention_latent)", &node);
  a.q = ptr(in[0]);
  a.cache = ptr(in[2]);
  a.wb = ptr(in[3]);
  a.lens = ptr<int32_t>(in[4]);
  a.o = ptr(out);
  a.status = be.status_word();
  a.tag = be.error_tag(node, "a sequence's cache_len + new tokens exceeds the cache length " + std::to_string(a.Tmax) +
                                 " (or cache_len is negative)");
  latent_append_k<<<grid_for(B * a.Tn * We), kThreads, 0, be.stream()>>>(ptr(in[1]), ptr(in[2]), a.lens, B, a.Tn, We,
                                                                          a.Tmax);
  be.launched("attention_latent_append", &node);
  attention_latent_k<<<dim3(static_cast<unsigned>(a.Tn), static_cast<unsigned>(a.H), static_cast<unsigned>(B)),
                       kLatentThreads, smem, be.stream()>>>(a);
  be.launched("attention_latent", &node);
}

}  // namespace tandem::cuda
