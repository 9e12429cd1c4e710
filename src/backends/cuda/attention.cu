// Fused causal attention, its backward and the KV-cached decoding form (ops/attention.h).
//
// Forward (attention, attention_cached): one block per (query tile of BT rows, head, sequence).
// Key/value tiles are staged in shared memory and the softmax is taken online (running max and
// sum, the output rescaled per tile), so nothing of size T x T exists anywhere.
// Backward without atomics, as the OpenCL kernels: a first kernel per query tile computes each
// row's statistics (max, sum, rowsum(P * dP)) in one pass over the keys and dQ in a second; a
// second kernel per key tile recomputes P and dS from those statistics and accumulates dK and dV
// over the query tiles in order. Every element of d(qkv) is written once. Dot products are fmaf
// chains in dimension order, identical in both kernels, so P is bitwise the same in each.
// Tiles are 32 rows (16 or 8 when the head dims need more shared memory than the device has).
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "ops/attention.h"

namespace tandem::cuda {

namespace {

constexpr int kAttnThreads = 128;  // 4 warps; a warp handles whole rows of a tile (BT <= 32)

// Row lengths in shared memory: odd, so a warp reading one column across rows hits 32 banks.
__host__ __device__ inline int64_t padded(int64_t d) { return d | 1; }

size_t fwd_smem(int64_t bt, int64_t dqk, int64_t dv) {
  return static_cast<size_t>(2 * bt * padded(dqk) + 2 * bt * dv + bt * (bt + 1) + 3 * bt) * sizeof(float);
}
size_t bwd_q_smem(int64_t bt, int64_t dqk, int64_t dv) {
  return static_cast<size_t>(2 * bt * padded(dqk) + 2 * bt * padded(dv) + 2 * bt * (bt + 1) + bt * dqk + 3 * bt) *
         sizeof(float);
}
size_t bwd_kv_smem(int64_t bt, int64_t dqk, int64_t dv) {
  return static_cast<size_t>(2 * bt * padded(dqk) + 2 * bt * padded(dv) + 2 * bt * (bt + 1) + bt * dqk + bt * dv + 3 * bt) *
         sizeof(float);
}

// The largest tile whose kernels fit the device's shared memory; 0 if none.
int pick_tile(const CudaBackend& be, int64_t dqk, int64_t dv, bool backward) {
  for (int bt : {32, 16, 8}) {
    const size_t need = backward ? std::max(bwd_q_smem(bt, dqk, dv), bwd_kv_smem(bt, dqk, dv)) : fwd_smem(bt, dqk, dv);
    if (need <= be.max_shared_bytes()) return bt;
  }
  return 0;
}

template <typename K>
void allow_smem(K kernel, size_t bytes, const Node& node) {
  if (bytes > 48 * 1024)
    cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
               "cudaFuncSetAttribute (attention shared memory)", &node);
}

// Where the rows of one head live: element (seq b, token t, head h, dim d) of q is
// q[b * q_seq + t * q_tok + h * q_head + d]; likewise k, v and the output o.
struct FwdArgs {
  const float* q;
  const float* k;
  const float* v;
  float* o;
  int64_t q_tok, q_seq, q_head, k_tok, k_seq, k_head, v_tok, v_seq, v_head, o_tok, o_seq, o_head;
  int64_t T, dqk, dv;
  int64_t kmax;          // key rows per sequence (attention: T; attention_cached: the cache length)
  const int32_t* lens;   // attention_cached: keys before the new tokens, per sequence; else null
  float scale;
  unsigned long long* status;
  uint32_t tag;
};

// Row i of sequence b sees keys 0 .. off_b + i (off_b = lens[b], or 0).
__global__ void attention_fwd_k(FwdArgs a, int BT) {
  extern __shared__ float sm[];
  const int64_t ldq = padded(a.dqk), dqk = a.dqk, dv = a.dv, ls = BT + 1;
  float* Qs = sm;
  float* Ks = Qs + BT * ldq;
  float* Vs = Ks + BT * ldq;
  float* S = Vs + BT * dv;
  float* Os = S + BT * ls;
  float* mrow = Os + BT * dv;
  float* lrow = mrow + BT;
  float* corr = lrow + BT;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  const int rows = static_cast<int>(min(static_cast<int64_t>(BT), a.T - i0));
  float* ob = a.o + b * a.o_seq + h * a.o_head;
  int64_t off = 0;
  if (a.lens) {
    off = a.lens[b];
    if (off < 0 || off + a.T > a.kmax) {  // uniform across the block
      if (tid == 0 && blockIdx.x == 0 && h == 0) report_error(a.status, a.tag, off);
      for (int64_t e = tid; e < rows * dv; e += blockDim.x) ob[(i0 + e / dv) * a.o_tok + e % dv] = NAN;
      return;
    }
  }
  const float* qb = a.q + b * a.q_seq + h * a.q_head;
  const float* kb = a.k + b * a.k_seq + h * a.k_head;
  const float* vb = a.v + b * a.v_seq + h * a.v_head;
  for (int64_t e = tid; e < BT * dqk; e += blockDim.x) {
    const int64_t r = e / dqk, d = e % dqk;
    Qs[r * ldq + d] = r < rows ? qb[(i0 + r) * a.q_tok + d] : 0.0f;
  }
  for (int64_t e = tid; e < BT * dv; e += blockDim.x) Os[e] = 0.0f;
  for (int r = tid; r < BT; r += blockDim.x) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
  }
  const int64_t kend = off + i0 + rows;  // keys [0, kend) are visible to some row of the tile
  for (int64_t j0 = 0; j0 < kend; j0 += BT) {
    const int kr = static_cast<int>(min(static_cast<int64_t>(BT), kend - j0));
    __syncthreads();  // the previous tile is consumed
    for (int64_t e = tid; e < BT * dqk; e += blockDim.x) {
      const int64_t c = e / dqk, d = e % dqk;
      Ks[c * ldq + d] = c < kr ? kb[(j0 + c) * a.k_tok + d] : 0.0f;
    }
    for (int64_t e = tid; e < BT * dv; e += blockDim.x) {
      const int64_t c = e / dv, d = e % dv;
      Vs[e] = c < kr ? vb[(j0 + c) * a.v_tok + d] : 0.0f;
    }
    __syncthreads();
    for (int e = tid; e < BT * BT; e += blockDim.x) {
      const int r = e / BT, c = e % BT;
      float s = -INFINITY;
      if (r < rows && c < kr && j0 + c <= off + i0 + r) {
        float acc = 0.0f;
        for (int64_t d = 0; d < dqk; ++d) acc = fmaf(Qs[r * ldq + d], Ks[c * ldq + d], acc);
        s = acc * a.scale;
      }
      S[r * ls + c] = s;
    }
    __syncthreads();
    for (int r = warp; r < rows; r += warps) {
      const float s = lane < BT ? S[r * ls + lane] : -INFINITY;
      const float mo = mrow[r], mn = fmaxf(mo, warp_max(s));
      const float p = s == -INFINITY ? 0.0f : expf(s - mn);
      const float ps = warp_sum(p);
      if (lane < BT) S[r * ls + lane] = p;
      if (lane == 0) {
        const float c = mo == -INFINITY ? 0.0f : expf(mo - mn);
        corr[r] = c;
        lrow[r] = lrow[r] * c + ps;
        mrow[r] = mn;
      }
    }
    __syncthreads();
    for (int64_t e = tid; e < rows * dv; e += blockDim.x) {
      const int64_t r = e / dv, d = e % dv;
      float acc = Os[e] * corr[r];
      for (int c = 0; c < kr; ++c) acc = fmaf(S[r * ls + c], Vs[c * dv + d], acc);
      Os[e] = acc;
    }
  }
  __syncthreads();
  for (int64_t e = tid; e < rows * dv; e += blockDim.x) {
    const int64_t r = e / dv, d = e % dv;
    ob[(i0 + r) * a.o_tok + d] = Os[e] / lrow[r];
  }
}

// New keys and values into cache rows [len_b, len_b + T): cache row = [k (H*dqk) | v (H*dv)].
__global__ void cache_append_k(const float* qkv, float* cache, const int32_t* lens, int64_t B, int64_t T, int64_t H,
                               int64_t dqk, int64_t dv, int64_t Tmax) {
  const int64_t Wc = H * (dqk + dv), W = H * (2 * dqk + dv);
  TANDEM_GRID_LOOP(g, B * T * Wc) {
    const int64_t c = g % Wc, t = (g / Wc) % T, b = g / (Wc * T);
    const int64_t len = lens[b];
    if (len >= 0 && len + T <= Tmax) cache[(b * Tmax + len + t) * Wc + c] = qkv[(b * T + t) * W + H * dqk + c];
  }
}

struct BwdArgs {
  const float* qkv;  // [B, T, W]
  const float* dO;   // [B, T, H*dv]
  float* g;          // [B, T, W]
  float* st;         // [B, H, T, 3]: max, 1/sum, rowsum(P * dP)
  int64_t T, H, dqk, dv;
  float scale;
};

__device__ __forceinline__ float dot_smem(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t d = 0; d < n; ++d) acc = fmaf(a[d], b[d], acc);
  return acc;
}

__global__ void attention_bwd_q_k(BwdArgs a, int BT) {
  extern __shared__ float sm[];
  const int64_t dqk = a.dqk, dv = a.dv, ldq = padded(dqk), ldv = padded(dv), ls = BT + 1, W = a.H * (2 * dqk + dv);
  float* Qs = sm;
  float* dOs = Qs + BT * ldq;
  float* Ks = dOs + BT * ldv;
  float* Vs = Ks + BT * ldq;
  float* S = Vs + BT * ldv;
  float* dP = S + BT * ls;
  float* dQ = dP + BT * ls;
  float* mrow = dQ + BT * dqk;
  float* lrow = mrow + BT;
  float* drow = lrow + BT;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  const int rows = static_cast<int>(min(static_cast<int64_t>(BT), a.T - i0));
  const float* base = a.qkv + b * a.T * W;
  const float* qb = base + h * dqk;
  const float* kb = base + a.H * dqk + h * dqk;
  const float* vb = base + 2 * a.H * dqk + h * dv;
  const float* dob = a.dO + b * a.T * a.H * dv + h * dv;
  for (int64_t e = tid; e < BT * dqk; e += blockDim.x) {
    const int64_t r = e / dqk, d = e % dqk;
    Qs[r * ldq + d] = r < rows ? qb[(i0 + r) * W + d] : 0.0f;
    dQ[e] = 0.0f;
  }
  for (int64_t e = tid; e < BT * dv; e += blockDim.x) {
    const int64_t r = e / dv, d = e % dv;
    dOs[r * ldv + d] = r < rows ? dob[(i0 + r) * a.H * dv + d] : 0.0f;
  }
  for (int r = tid; r < BT; r += blockDim.x) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
    drow[r] = 0.0f;
  }
  const int64_t kend = i0 + rows;
  for (int pass = 0; pass < 2; ++pass) {
    // pass 0: online max, sum and sum(p * dP); pass 1: dS and dQ with the final statistics.
    for (int64_t j0 = 0; j0 < kend; j0 += BT) {
      const int kr = static_cast<int>(min(static_cast<int64_t>(BT), kend - j0));
      __syncthreads();
      for (int64_t e = tid; e < BT * dqk; e += blockDim.x) {
        const int64_t c = e / dqk, d = e % dqk;
        Ks[c * ldq + d] = c < kr ? kb[(j0 + c) * W + d] : 0.0f;
      }
      for (int64_t e = tid; e < BT * dv; e += blockDim.x) {
        const int64_t c = e / dv, d = e % dv;
        Vs[c * ldv + d] = c < kr ? vb[(j0 + c) * W + d] : 0.0f;
      }
      __syncthreads();
      for (int e = tid; e < BT * BT; e += blockDim.x) {
        const int r = e / BT, c = e % BT;
        float s = -INFINITY, dp = 0.0f;
        if (r < rows && c < kr && j0 + c <= i0 + r) {
          s = dot_smem(Qs + r * ldq, Ks + c * ldq, dqk) * a.scale;
          dp = dot_smem(dOs + r * ldv, Vs + c * ldv, dv);
        }
        if (pass == 0) {
          S[r * ls + c] = s;
          dP[r * ls + c] = dp;
        } else {  // dS
          const float p = s == -INFINITY ? 0.0f : expf(s - mrow[r]) * lrow[r];
          dP[r * ls + c] = p * (dp - drow[r]) * a.scale;
        }
      }
      __syncthreads();
      if (pass == 0) {
        for (int r = warp; r < rows; r += warps) {
          const float s = lane < BT ? S[r * ls + lane] : -INFINITY, dp = lane < BT ? dP[r * ls + lane] : 0.0f;
          const float mo = mrow[r], mn = fmaxf(mo, warp_max(s));
          const float p = s == -INFINITY ? 0.0f : expf(s - mn);
          const float ps = warp_sum(p), pd = warp_sum(p * dp);
          if (lane == 0) {
            const float c = mo == -INFINITY ? 0.0f : expf(mo - mn);
            lrow[r] = lrow[r] * c + ps;
            drow[r] = drow[r] * c + pd;
            mrow[r] = mn;
          }
        }
      } else {
        for (int64_t e = tid; e < rows * dqk; e += blockDim.x) {
          const int64_t r = e / dqk, d = e % dqk;
          float acc = dQ[e];
          for (int c = 0; c < kr; ++c) acc = fmaf(dP[r * ls + c], Ks[c * ldq + d], acc);
          dQ[e] = acc;
        }
      }
    }
    __syncthreads();
    if (pass == 0)
      for (int r = tid; r < rows; r += blockDim.x) {  // lrow becomes 1/sum, drow rowsum(P * dP)
        const float inv = 1.0f / lrow[r];
        lrow[r] = inv;
        drow[r] = drow[r] * inv;
      }
  }
  __syncthreads();
  float* gq = a.g + b * a.T * W + h * dqk;
  for (int64_t e = tid; e < rows * dqk; e += blockDim.x) {
    const int64_t r = e / dqk, d = e % dqk;
    gq[(i0 + r) * W + d] = dQ[e];
  }
  float* st = a.st + ((b * a.H + h) * a.T + i0) * 3;
  for (int r = tid; r < rows; r += blockDim.x) {
    st[3 * r] = mrow[r];
    st[3 * r + 1] = lrow[r];
    st[3 * r + 2] = drow[r];
  }
}

__global__ void attention_bwd_kv_k(BwdArgs a, int BT) {
  extern __shared__ float sm[];
  const int64_t dqk = a.dqk, dv = a.dv, ldq = padded(dqk), ldv = padded(dv), ls = BT + 1, W = a.H * (2 * dqk + dv);
  float* Ks = sm;
  float* Vs = Ks + BT * ldq;
  float* Qs = Vs + BT * ldv;
  float* dOs = Qs + BT * ldq;
  float* P = dOs + BT * ldv;
  float* dS = P + BT * ls;
  float* dK = dS + BT * ls;
  float* dV = dK + BT * dqk;
  float* mrow = dV + BT * dv;
  float* ilrow = mrow + BT;
  float* drow = ilrow + BT;
  const int64_t b = blockIdx.z, h = blockIdx.y, j0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int tid = threadIdx.x;
  const int kr = static_cast<int>(min(static_cast<int64_t>(BT), a.T - j0));
  const float* base = a.qkv + b * a.T * W;
  const float* qb = base + h * dqk;
  const float* kb = base + a.H * dqk + h * dqk;
  const float* vb = base + 2 * a.H * dqk + h * dv;
  const float* dob = a.dO + b * a.T * a.H * dv + h * dv;
  const float* stb = a.st + (b * a.H + h) * a.T * 3;
  for (int64_t e = tid; e < BT * dqk; e += blockDim.x) {
    const int64_t c = e / dqk, d = e % dqk;
    Ks[c * ldq + d] = c < kr ? kb[(j0 + c) * W + d] : 0.0f;
    dK[e] = 0.0f;
  }
  for (int64_t e = tid; e < BT * dv; e += blockDim.x) {
    const int64_t c = e / dv, d = e % dv;
    Vs[c * ldv + d] = c < kr ? vb[(j0 + c) * W + d] : 0.0f;
    dV[e] = 0.0f;
  }
  for (int64_t i0 = j0; i0 < a.T; i0 += BT) {  // only queries i >= j see key j
    const int rows = static_cast<int>(min(static_cast<int64_t>(BT), a.T - i0));
    __syncthreads();
    for (int64_t e = tid; e < BT * dqk; e += blockDim.x) {
      const int64_t r = e / dqk, d = e % dqk;
      Qs[r * ldq + d] = r < rows ? qb[(i0 + r) * W + d] : 0.0f;
    }
    for (int64_t e = tid; e < BT * dv; e += blockDim.x) {
      const int64_t r = e / dv, d = e % dv;
      dOs[r * ldv + d] = r < rows ? dob[(i0 + r) * a.H * dv + d] : 0.0f;
    }
    for (int r = tid; r < rows; r += blockDim.x) {
      mrow[r] = stb[(i0 + r) * 3];
      ilrow[r] = stb[(i0 + r) * 3 + 1];
      drow[r] = stb[(i0 + r) * 3 + 2];
    }
    __syncthreads();
    for (int e = tid; e < BT * BT; e += blockDim.x) {
      const int r = e / BT, c = e % BT;
      float p = 0.0f, ds = 0.0f;
      if (r < rows && c < kr && j0 + c <= i0 + r) {
        const float s = dot_smem(Qs + r * ldq, Ks + c * ldq, dqk) * a.scale;
        const float dp = dot_smem(dOs + r * ldv, Vs + c * ldv, dv);
        p = expf(s - mrow[r]) * ilrow[r];
        ds = p * (dp - drow[r]) * a.scale;
      }
      P[r * ls + c] = p;
      dS[r * ls + c] = ds;
    }
    __syncthreads();
    for (int64_t e = tid; e < kr * dv; e += blockDim.x) {
      const int64_t c = e / dv, d = e % dv;
      float acc = dV[e];
      for (int r = 0; r < rows; ++r) acc = fmaf(P[r * ls + c], dOs[r * ldv + d], acc);
      dV[e] = acc;
    }
    for (int64_t e = tid; e < kr * dqk; e += blockDim.x) {
      const int64_t c = e / dqk, d = e % dqk;
      float acc = dK[e];
      for (int r = 0; r < rows; ++r) acc = fmaf(dS[r * ls + c], Qs[r * ldq + d], acc);
      dK[e] = acc;
    }
  }
  __syncthreads();
  float* gb = a.g + b * a.T * W;
  for (int64_t e = tid; e < kr * dqk; e += blockDim.x) {
    const int64_t c = e / dqk, d = e % dqk;
    gb[(j0 + c) * W + a.H * dqk + h * dqk + d] = dK[e];
  }
  for (int64_t e = tid; e < kr * dv; e += blockDim.x) {
    const int64_t c = e / dv, d = e % dv;
    gb[(j0 + c) * W + 2 * a.H * dqk + h * dv + d] = dV[e];
  }
}

dim3 grid_of(const Node& node, const AttentionDims& d, int bt) {
  const int64_t tiles = (d.T + bt - 1) / bt;
  check(tiles < (int64_t{1} << 31) && d.H <= 65535 && d.B <= 65535, "cuda backend: ", op_name(node.op), " at node '",
        node.name, "': B = ", d.B, " or n_head = ", d.H, " exceeds 65535");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(d.H), static_cast<unsigned>(d.B));
}

int tile_or_throw(const CudaBackend& be, const Node& node, const AttentionDims& d, bool backward) {
  const int bt = pick_tile(be, d.dqk, d.dv, backward);
  check(bt > 0, "cuda backend: ", op_name(node.op), " at node '", node.name, "': head dims d_qk = ", d.dqk, ", d_v = ", d.dv,
        " need more shared memory than ", be.device_name(), " has");
  return bt;
}

void run_forward(CudaBackend& be, const Node& node, const AttentionDims& d, const FwdArgs& a) {
  const int bt = tile_or_throw(be, node, d, false);
  const size_t smem = fwd_smem(bt, d.dqk, d.dv);
  allow_smem(attention_fwd_k, smem, node);
  attention_fwd_k<<<grid_of(node, d, bt), kAttnThreads, smem, be.stream()>>>(a, bt);
  be.launched("attention_fwd", &node);
}

}  // namespace

bool attention_fits(const CudaBackend& be, int64_t dqk, int64_t dv) {
  return dqk > 0 && dv > 0 && pick_tile(be, dqk, dv, true) > 0;
}

void attention(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  if (d.B * d.T == 0) return;
  const float* qkv = ptr(in[0]);
  FwdArgs a{};
  a.q = qkv + d.q_off(0);
  a.k = qkv + d.k_off(0);
  a.v = qkv + d.v_off(0);
  a.o = ptr(out);
  a.q_tok = a.k_tok = a.v_tok = d.W;
  a.q_seq = a.k_seq = a.v_seq = d.T * d.W;
  a.q_head = a.k_head = d.dqk;
  a.v_head = d.dv;
  a.o_tok = d.H * d.dv;
  a.o_seq = d.T * d.H * d.dv;
  a.o_head = d.dv;
  a.T = d.T;
  a.dqk = d.dqk;
  a.dv = d.dv;
  a.kmax = d.T;
  a.scale = node.attr<AttentionAttrs>().scale;
  a.status = be.status_word();
  run_forward(be, node, d, a);
}

void attention_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  if (d.B * d.T == 0) return;
  const int bt = tile_or_throw(be, node, d, true);
  BwdArgs a{};
  a.qkv = ptr(in[0]);
  a.dO = ptr(in[1]);
  a.g = ptr(out);
  a.st = static_cast<float*>(be.scratch(kSlotStats, static_cast<size_t>(d.B * d.H * d.T * 3) * sizeof(float)));
  a.T = d.T;
  a.H = d.H;
  a.dqk = d.dqk;
  a.dv = d.dv;
  a.scale = node.attr<AttentionAttrs>().scale;
  const dim3 grid = grid_of(node, d, bt);
  const size_t smem_q = bwd_q_smem(bt, d.dqk, d.dv), smem_kv = bwd_kv_smem(bt, d.dqk, d.dv);
  allow_smem(attention_bwd_q_k, smem_q, node);
  allow_smem(attention_bwd_kv_k, smem_kv, node);
  attention_bwd_q_k<<<grid, kAttnThreads, smem_q, be.stream()>>>(a, bt);
  be.launched("attention_bwd_q", &node);
  attention_bwd_kv_k<<<grid, kAttnThreads, smem_kv, be.stream()>>>(a, bt);
  be.launched("attention_bwd_kv", &node);
}

void attention_cached(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  if (d.B * d.T == 0) return;
  const int64_t Tmax = in[1].shape[1], Wc = d.H * (d.dqk + d.dv);
  const float* qkv = ptr(in[0]);
  float* cache = ptr(in[1]);  // state: written in place
  const int32_t* lens = ptr<int32_t>(in[2]);
  cache_append_k<<<grid_for(d.B * d.T * Wc), kThreads, 0, be.stream()>>>(qkv, cache, lens, d.B, d.T, d.H, d.dqk, d.dv, Tmax);
  be.launched("attention_cache_append", &node);
  FwdArgs a{};
  a.q = qkv + d.q_off(0);
  a.k = cache;
  a.v = cache + d.H * d.dqk;
  a.o = ptr(out);
  a.q_tok = d.W;
  a.q_seq = d.T * d.W;
  a.k_tok = a.v_tok = Wc;
  a.k_seq = a.v_seq = Tmax * Wc;
  a.q_head = a.k_head = d.dqk;
  a.v_head = d.dv;
  a.o_tok = d.H * d.dv;
  a.o_seq = d.T * d.H * d.dv;
  a.o_head = d.dv;
  a.T = d.T;
  a.dqk = d.dqk;
  a.dv = d.dv;
  a.kmax = Tmax;
  a.lens = lens;
  a.scale = node.attr<AttentionAttrs>().scale;
  a.status = be.status_word();
  a.tag = be.error_tag(node, "a sequence's cache_len + new tokens exceeds the cache length " + std::to_string(Tmax) +
                                 " (or cache_len is negative)");
  run_forward(be, node, d, a);
}

}  // namespace tandem::cuda
