// DeepSeekMoE (ops/moe.h): routing, dispatch, grouped GEMMs and combine, with their backward
// kernels. Rows are grouped by expert on the device with the same stable order as expert_order
// (order.cu), so no op reads the ids back to the host. Sums run in the CPU kernels' order (over k,
// over heads); the grouped GEMMs are tiled kernels whose every output is one FMA chain in k order.
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"
#include "ops/moe.h"

namespace tandem::cuda {

namespace {

// ---- routing

// (value, index) pairs ordered as ops/moe.h's `better`: larger value first, ties to the lower
// index; index -1 is "none", worse than anything.
struct Pick {
  float v;
  int i;
};
__device__ __forceinline__ bool better(Pick a, Pick b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}
__device__ __forceinline__ Pick warp_best(Pick p) {
  for (int o = 16; o > 0; o >>= 1) {
    Pick q{__shfl_xor_sync(0xffffffffu, p.v, o), __shfl_xor_sync(0xffffffffu, p.i, o)};
    if (better(q, p)) p = q;
  }
  return p;
}

constexpr int kRouteWarps = 4;

// One warp per row, the row's choice scores and group state in shared memory. Same selection as
// route_row: groups rated by the sum of their top-2 choice scores, the best topk_group kept, then
// the top_k experts among them, best first (the order is total, so the warp's reduction order
// cannot change the result).
__global__ void topk_route_k(const float* scores, const float* bias, int32_t* out, int64_t N, int E, int K, int G,
                             int topk_group) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* choice = smem + warp * (E + G);
  float* gscore = choice + E;
  int* flags = reinterpret_cast<int*>(smem + kRouteWarps * (E + G)) + warp * (E + G);  // [E] chosen, [G] kept
  int* gkept = flags + E;
  const int per = E / G;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp; r < N; r += static_cast<int64_t>(gridDim.x) * kRouteWarps) {
    for (int e = lane; e < E; e += 32) {
      choice[e] = scores[r * E + e] + bias[e];
      flags[e] = 0;
    }
    __syncwarp();
    for (int g = lane; g < G; g += 32) {
      float best = -INFINITY, second = -INFINITY;
      for (int e = g * per; e < (g + 1) * per; ++e) {
        const float v = choice[e];
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) {
          second = v;
        }
      }
      gscore[g] = per >= 2 ? best + second : best;
      gkept[g] = 0;
    }
    __syncwarp();
    for (int t = 0; t < topk_group; ++t) {
      Pick p{0.0f, -1};
      for (int g = lane; g < G; g += 32)
        if (!gkept[g] && better(Pick{gscore[g], g}, p)) p = Pick{gscore[g], g};
      p = warp_best(p);
      if (lane == 0 && p.i >= 0) gkept[p.i] = 1;
      __syncwarp();
    }
    for (int k = 0; k < K; ++k) {
      Pick p{0.0f, -1};
      for (int e = lane; e < E; e += 32)
        if (gkept[e / per] && !flags[e] && better(Pick{choice[e], e}, p)) p = Pick{choice[e], e};
      p = warp_best(p);
      if (lane == 0) {
        out[r * K + k] = p.i;
        if (p.i >= 0) flags[p.i] = 1;
      }
      __syncwarp();
    }
  }
}

__global__ void route_weights_k(const float* s, const int32_t* id, float* w, int64_t N, int K, int E, bool norm,
                                float scaling, unsigned long long* status, uint32_t tag) {
  TANDEM_GRID_LOOP(r, N) {
    float sum = 0.0f;
    for (int k = 0; k < K; ++k) {
      const int32_t e = id[r * K + k];
      if (!(e >= 0 && e < E)) report_error(status, tag, e);
      const float v = e >= 0 && e < E ? s[r * E + e] : NAN;
      w[r * K + k] = v;
      sum += v;
    }
    const float f = scaling / (norm ? sum + 1e-20f : 1.0f);
    for (int k = 0; k < K; ++k) w[r * K + k] *= f;
  }
}

// d scores (zeroed first): += c (g_k / S - sum_j g_j s_j / S^2) at each chosen expert, in k order.
__global__ void route_weights_grad_k(const float* s, const int32_t* id, const float* g, float* o, int64_t N, int K, int E,
                                     bool norm, float scaling, unsigned long long* status, uint32_t tag) {
  TANDEM_GRID_LOOP(r, N) {
    float S = 0.0f, gs = 0.0f;
    bool ok = true;
    for (int k = 0; k < K; ++k) {
      const int32_t e = id[r * K + k];
      if (!(e >= 0 && e < E)) {
        ok = false;
        report_error(status, tag, e);
        continue;
      }
      const float sk = s[r * E + e];
      S += sk;
      gs += g[r * K + k] * sk;
    }
    if (!ok) {
      for (int e = 0; e < E; ++e) o[r * E + e] = NAN;
      continue;
    }
    S += 1e-20f;
    for (int k = 0; k < K; ++k) {
      const float gk = g[r * K + k];
      o[r * E + id[r * K + k]] += scaling * (norm ? gk / S - gs / (S * S) : gk);
    }
  }
}

// ---- dispatch and combine (pos from bucket_order; -1 marks an id out of range, reported there)

__global__ void dispatch_k(const float* x, const int32_t* pos, float* o, int64_t NK, int K, int64_t H) {
  TANDEM_GRID_LOOP(g, NK * H) {
    const int64_t f = g / H, c = g % H;
    const int32_t p = pos[f];
    if (p >= 0) o[static_cast<int64_t>(p) * H + c] = x[(f / K) * H + c];
  }
}
__global__ void dispatch_grad_k(const float* g, const int32_t* pos, float* o, int64_t N, int K, int64_t H) {
  TANDEM_GRID_LOOP(e, N * H) {
    const int64_t n = e / H, c = e % H;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
      const int32_t p = pos[n * K + k];
      acc += p >= 0 ? g[static_cast<int64_t>(p) * H + c] : NAN;
    }
    o[e] = acc;
  }
}
__global__ void combine_k(const float* ys, const float* w, const int32_t* pos, float* o, int64_t N, int K, int64_t H) {
  TANDEM_GRID_LOOP(e, N * H) {
    const int64_t n = e / H, c = e % H;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
      const int32_t p = pos[n * K + k];
      acc += p >= 0 ? w[n * K + k] * ys[static_cast<int64_t>(p) * H + c] : NAN;
    }
    o[e] = acc;
  }
}
__global__ void combine_grad_y_k(const float* g, const float* w, const int32_t* pos, float* o, int64_t NK, int K, int64_t H) {
  TANDEM_GRID_LOOP(e, NK * H) {
    const int64_t f = e / H, c = e % H;
    const int32_t p = pos[f];
    if (p >= 0) o[static_cast<int64_t>(p) * H + c] = w[f] * g[(f / K) * H + c];
  }
}
// One warp per (n, k): g[n] . ys[pos(n, k)].
__global__ void combine_grad_w_k(const float* g, const float* ys, const int32_t* pos, float* o, int64_t NK, int K, int64_t H) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t f = global_id() >> 5; f < NK; f += warps) {
    const int32_t p = pos[f];
    float s = 0.0f;
    if (p >= 0)
      for (int64_t c = lane; c < H; c += 32) s = fmaf(g[(f / K) * H + c], ys[static_cast<int64_t>(p) * H + c], s);
    s = warp_sum(s);
    if (lane == 0) o[f] = p >= 0 ? s : NAN;
  }
}

// ---- grouped GEMMs: 64x64 output tiles, 16-deep k slices, 256 threads with 4x4 outputs each.
// Every output is a single fmaf chain over k in increasing order (zero padding adds exact zeros),
// so results do not depend on the tiling or the launch.
constexpr int kTM = 64, kTN = 64, kTK = 16, kGemmThreads = 256;

// y[r, j] = sum_c x[r, c] W_e(c, j) for rows r of expert e's segment. transpose_w = false:
// W_e(c, j) = W[e, j, c] (y = x W_e^T, x [M, I], y [M, O]); true: W_e(c, j) = W[e, c, j] (x [M, O], y [M, I]).
// Blocks walk row tiles of all experts: tiles[e]..tiles[e+1] are expert e's.
template <bool TW>
__global__ void grouped_gemm_k(const float* x, const float* W, float* y, const int32_t* starts, const int32_t* tiles, int E,
                               int64_t O, int64_t I, int64_t xin, int64_t yout) {
  __shared__ float As[kTK][kTM + 1];
  __shared__ float Bs[kTK][kTN + 1];
  const int t = blockIdx.x;
  if (t >= tiles[E]) return;
  int lo = 0, hi = E - 1;  // the expert e with tiles[e] <= t < tiles[e + 1]
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tiles[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  const int e = lo;
  const int64_t r0 = starts[e] + static_cast<int64_t>(t - tiles[e]) * kTM, rend = starts[e + 1];
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTN;
  const float* We = W + static_cast<int64_t>(e) * O * I;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < xin; k0 += kTK) {
    for (int q = threadIdx.x; q < kTM * kTK; q += kGemmThreads) {
      const int m = q / kTK, kk = q % kTK;
      const int64_t r = r0 + m, k = k0 + kk;
      As[kk][m] = r < rend && k < xin ? x[r * xin + k] : 0.0f;
    }
    for (int q = threadIdx.x; q < kTN * kTK; q += kGemmThreads) {
      int nn, kk;
      if (TW) {  // W_e(k, j) = We[k * I + j]: consecutive j are contiguous
        kk = q / kTN;
        nn = q % kTN;
      } else {  // W_e(k, j) = We[j * I + k]: consecutive k are contiguous
        nn = q / kTK;
        kk = q % kTK;
      }
      const int64_t j = n0 + nn, k = k0 + kk;
      Bs[kk][nn] = j < yout && k < xin ? (TW ? We[k * I + j] : We[j * I + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        a[u] = As[kk][ty * 4 + u];
        b[u] = Bs[kk][tx * 4 + u];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = fmaf(a[u], b[v], acc[u][v]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int64_t r = r0 + ty * 4 + u;
    if (r >= rend) continue;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int64_t j = n0 + tx * 4 + v;
      if (j < yout) y[r * yout + j] = acc[u][v];
    }
  }
}

// dW[e, o, i] = sum over rows r of expert e's segment of g[r, o] a[r, i] (zeros without rows).
__global__ void grouped_gemm_grad_w_k(const float* a, const float* g, float* dW, const int32_t* starts, int64_t O,
                                      int64_t I) {
  __shared__ float As[kTK][kTM + 1];  // g rows x o
  __shared__ float Bs[kTK][kTN + 1];  // a rows x i
  const int e = blockIdx.z;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTN, o0 = static_cast<int64_t>(blockIdx.y) * kTM;
  const int64_t rbeg = starts[e], rend = starts[e + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t k0 = rbeg; k0 < rend; k0 += kTK) {
    for (int q = threadIdx.x; q < kTM * kTK; q += kGemmThreads) {
      const int kk = q / kTM, m = q % kTM;
      const int64_t r = k0 + kk, o = o0 + m;
      As[kk][m] = r < rend && o < O ? g[r * O + o] : 0.0f;
    }
    for (int q = threadIdx.x; q < kTN * kTK; q += kGemmThreads) {
      const int kk = q / kTN, nn = q % kTN;
      const int64_t r = k0 + kk, i = i0 + nn;
      Bs[kk][nn] = r < rend && i < I ? a[r * I + i] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        av[u] = As[kk][ty * 4 + u];
        bv[u] = Bs[kk][tx * 4 + u];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = fmaf(av[u], bv[v], acc[u][v]);
    }
    __syncthreads();
  }
  float* out = dW + static_cast<int64_t>(e) * O * I;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int64_t o = o0 + ty * 4 + u;
    if (o >= O) continue;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int64_t i = i0 + tx * 4 + v;
      if (i < I) out[o * I + i] = acc[u][v];
    }
  }
}

// ---- sequence-wise balance loss (ops/moe.cpp): per sequence b, f_i = E / (K T) x (times expert i
// was chosen), L_b = 1/T sum_t (sum_i f_i s_ti) / S_t, in double as the CPU kernel. One block per
// sequence; f is built by repeated addition of E / (K T) like the CPU's (identical terms, so the
// same bits in any order), each row's S and sum f s in expert order.
constexpr int kBalanceThreads = 256;

__device__ void balance_fractions(const int32_t* id, int64_t T, int K, int E, int* count, double* f,
                                  unsigned long long* status, uint32_t tag) {
  for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int64_t j = threadIdx.x; j < T * K; j += blockDim.x) {
    const int32_t e = id[j];
    if (e >= 0 && e < E) atomicAdd(&count[e], 1);
    else report_error(status, tag, e);
  }
  __syncthreads();
  const double unit = static_cast<double>(E) / static_cast<double>(K * T);
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    double acc = 0;
    for (int c = 0; c < count[e]; ++c) acc += unit;
    f[e] = acc;
  }
  __syncthreads();
}

__global__ void seq_balance_loss_k(const float* s, const int32_t* id, float* o, int64_t T, int K, int E,
                                   unsigned long long* status, uint32_t tag) {
  extern __shared__ double fsm[];  // f [E], then counts [E]
  __shared__ double red[33];
  const int64_t b = blockIdx.x;
  double* f = fsm;
  int* count = reinterpret_cast<int*>(fsm + E);
  balance_fractions(id + b * T * K, T, K, E, count, f, status, tag);
  double L = 0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const float* row = s + (b * T + t) * E;
    double S = 0, fs = 0;
    for (int j = 0; j < E; ++j) {
      S += row[j];
      fs += f[j] * row[j];
    }
    L += fs / S;
  }
  L = block_sum(L, red);
  if (threadIdx.x == 0) o[b] = static_cast<float>(L / static_cast<double>(T));
}

__global__ void seq_balance_loss_grad_k(const float* s, const int32_t* id, const float* g, float* o, int64_t T, int K,
                                        int E, unsigned long long* status, uint32_t tag) {
  extern __shared__ double fsm[];
  const int64_t b = blockIdx.x;
  double* f = fsm;
  int* count = reinterpret_cast<int*>(fsm + E);
  balance_fractions(id + b * T * K, T, K, E, count, f, status, tag);
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const float* row = s + (b * T + t) * E;
    double S = 0, fs = 0;
    for (int j = 0; j < E; ++j) {
      S += row[j];
      fs += f[j] * row[j];
    }
    const double c = static_cast<double>(g[b]) / (static_cast<double>(T) * S), mean = fs / S;
    for (int j = 0; j < E; ++j) o[(b * T + t) * E + j] = static_cast<float>(c * (f[j] - mean));
  }
}

__global__ void shift_tokens_k(const int32_t* x, int32_t* o, int64_t B, int64_t T, int64_t shift, int32_t fill) {
  TANDEM_GRID_LOOP(g, B * T) {
    const int64_t t = g % T;
    o[g] = t + shift < T && t + shift >= 0 ? x[g + shift] : fill;
  }
}

BucketOrder experts(CudaBackend& be, const Node& node, const Tensor& ids, int64_t E, int tile_rows = 0) {
  return bucket_order(be, node, ptr<int32_t>(ids), ids.numel(), E, "an expert id is", false, tile_rows);
}

}  // namespace

void topk_route(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[0].shape[0];
  if (N == 0) return;
  const size_t smem = static_cast<size_t>(kRouteWarps) * static_cast<size_t>(a.n_experts + a.n_group) * 8;
  check(smem <= be.max_shared_bytes(), "cuda backend: topk_route at node '", node.name, "': ", a.n_experts,
        " experts need more shared memory than the device has");
  if (smem > 48 * 1024)
    cuda_check(cudaFuncSetAttribute(topk_route_k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute (topk_route)", &node);
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((N + kRouteWarps - 1) / kRouteWarps, int64_t{1} << 20));
  topk_route_k<<<blocks, kRouteWarps * 32, smem, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr<int32_t>(out), N,
                                                                 static_cast<int>(a.n_experts), static_cast<int>(a.top_k),
                                                                 static_cast<int>(a.n_group), static_cast<int>(a.topk_group));
  be.launched("topk_route", &node);
}

void route_weights(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[0].shape[0];
  if (N == 0) return;
  const uint32_t tag = be.error_tag(node, "an expert id is out of range [0, " + std::to_string(a.n_experts) + ")");
  route_weights_k<<<grid_for(N), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), ptr(out), N,
                                                             static_cast<int>(a.top_k), static_cast<int>(a.n_experts),
                                                             a.norm_topk_prob, a.routed_scaling_factor, be.status_word(), tag);
  be.launched("route_weights", &node);
}

void route_weights_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[0].shape[0];
  if (N == 0) return;
  be.zero(out.storage->handle, out.offset, out.nbytes());
  const uint32_t tag = be.error_tag(node, "an expert id is out of range [0, " + std::to_string(a.n_experts) + ")");
  route_weights_grad_k<<<grid_for(N), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), ptr(in[2]), ptr(out), N,
                                                                  static_cast<int>(a.top_k), static_cast<int>(a.n_experts),
                                                                  a.norm_topk_prob, a.routed_scaling_factor,
                                                                  be.status_word(), tag);
  be.launched("route_weights_grad", &node);
}

void moe_dispatch(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t NK = in[1].numel(), H = in[0].shape[1];
  const BucketOrder ord = experts(be, node, in[1], a.n_experts);
  if (NK * H == 0) return;
  dispatch_k<<<grid_for(NK * H), kThreads, 0, be.stream()>>>(ptr(in[0]), ord.pos, ptr(out), NK, static_cast<int>(a.top_k), H);
  be.launched("moe_dispatch", &node);
}

void moe_dispatch_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[1].shape[0], H = in[0].shape[1];
  const BucketOrder ord = experts(be, node, in[1], a.n_experts);
  if (N * H == 0) return;
  dispatch_grad_k<<<grid_for(N * H), kThreads, 0, be.stream()>>>(ptr(in[0]), ord.pos, ptr(out), N, static_cast<int>(a.top_k), H);
  be.launched("moe_dispatch_grad", &node);
}

void grouped_matmul(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const bool tw = node.attr<GroupedMatmulAttrs>().transpose_w;
  const int64_t E = in[1].shape[0], O = in[1].shape[1], I = in[1].shape[2];
  const int64_t M = in[0].shape[0], xin = in[0].shape[1], yout = out.shape[1];
  const BucketOrder ord = experts(be, node, in[2], E, kTM);
  if (M * yout == 0) return;
  // Row tiles: at most one partial tile per expert beyond M / kTM full ones.
  const int64_t row_tiles = (M + kTM - 1) / kTM + E, col_tiles = (yout + kTN - 1) / kTN;
  check(row_tiles < (int64_t{1} << 31) && col_tiles <= 65535, "cuda backend: grouped_matmul at node '", node.name,
        "': too many tiles");
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
  if (tw)
    grouped_gemm_k<true><<<grid, kGemmThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), ord.starts, ord.tiles,
                                                                 static_cast<int>(E), O, I, xin, yout);
  else
    grouped_gemm_k<false><<<grid, kGemmThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), ord.starts, ord.tiles,
                                                                  static_cast<int>(E), O, I, xin, yout);
  be.launched("grouped_matmul", &node);
}

void grouped_matmul_grad_w(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t E = out.shape[0], O = out.shape[1], I = out.shape[2];
  const BucketOrder ord = experts(be, node, in[2], E);
  if (E * O * I == 0) return;
  const int64_t col_tiles = (I + kTN - 1) / kTN, row_tiles = (O + kTM - 1) / kTM;
  check(col_tiles < (int64_t{1} << 31) && row_tiles <= 65535 && E <= 65535, "cuda backend: grouped_matmul_grad_w at node '",
        node.name, "': too many tiles");
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles), static_cast<unsigned>(E));
  grouped_gemm_grad_w_k<<<grid, kGemmThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), ord.starts, O, I);
  be.launched("grouped_matmul_grad_w", &node);
}

void moe_combine(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[2].shape[0], H = in[0].shape[1];
  const BucketOrder ord = experts(be, node, in[2], a.n_experts);
  if (N * H == 0) return;
  combine_k<<<grid_for(N * H), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ord.pos, ptr(out), N,
                                                           static_cast<int>(a.top_k), H);
  be.launched("moe_combine", &node);
}

void moe_combine_grad_y(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t NK = in[2].numel(), H = in[0].shape[1];
  const BucketOrder ord = experts(be, node, in[2], a.n_experts);
  if (NK * H == 0) return;
  combine_grad_y_k<<<grid_for(NK * H), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ord.pos, ptr(out), NK,
                                                                   static_cast<int>(a.top_k), H);
  be.launched("moe_combine_grad_y", &node);
}

void moe_combine_grad_w(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t NK = in[2].numel(), H = in[0].shape[1];
  const BucketOrder ord = experts(be, node, in[2], a.n_experts);
  if (NK == 0) return;
  combine_grad_w_k<<<grid_for(NK * 32), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ord.pos, ptr(out), NK,
                                                                    static_cast<int>(a.top_k), H);
  be.launched("moe_combine_grad_w", &node);
}

namespace {
void balance(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out, bool grad) {
  const int64_t B = in[0].shape[0], T = in[0].shape[1], E = in[0].shape[2], K = in[1].shape[2];
  if (B == 0) return;
  check(E <= 65536 && K <= 65536 && B < (int64_t{1} << 31), "cuda backend: ", op_name(node.op), " at node '", node.name,
        "': too many experts or sequences");
  const size_t smem = static_cast<size_t>(E) * (sizeof(double) + sizeof(int));
  check(smem <= be.max_shared_bytes(), "cuda backend: ", op_name(node.op), " at node '", node.name, "': ", E,
        " experts need more shared memory than the device has");
  const uint32_t tag = be.error_tag(node, "an expert id is out of range [0, " + std::to_string(E) + ")");
  if (grad) {
    if (smem > 48 * 1024)
      cuda_check(cudaFuncSetAttribute(seq_balance_loss_grad_k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                 "cudaFuncSetAttribute (seq_balance_loss_grad)", &node);
    seq_balance_loss_grad_k<<<static_cast<unsigned>(B), kBalanceThreads, smem, be.stream()>>>(
        ptr(in[0]), ptr<int32_t>(in[1]), ptr(in[2]), ptr(out), T, static_cast<int>(K), static_cast<int>(E), be.status_word(), tag);
    be.launched("seq_balance_loss_grad", &node);
  } else {
    if (smem > 48 * 1024)
      cuda_check(cudaFuncSetAttribute(seq_balance_loss_k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                 "cudaFuncSetAttribute (seq_balance_loss)", &node);
    seq_balance_loss_k<<<static_cast<unsigned>(B), kBalanceThreads, smem, be.stream()>>>(
        ptr(in[0]), ptr<int32_t>(in[1]), ptr(out), T, static_cast<int>(K), static_cast<int>(E), be.status_word(), tag);
    be.launched("seq_balance_loss", &node);
  }
}
}  // namespace

void seq_balance_loss(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  balance(be, node, in, out, false);
}
void seq_balance_loss_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  balance(be, node, in, out, true);
}

void shift_tokens(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<ShiftAttrs>();
  const int64_t B = in[0].shape[0], T = in[0].shape[1];
  if (B * T == 0) return;
  shift_tokens_k<<<grid_for(B * T), kThreads, 0, be.stream()>>>(ptr<int32_t>(in[0]), ptr<int32_t>(out), B, T, a.shift, a.fill);
  be.launched("shift_tokens", &node);
}

}  // namespace tandem::cuda
