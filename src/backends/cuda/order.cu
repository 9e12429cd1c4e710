// A stable counting sort of integer keys on the device (kernels.h: bucket_order), shared by
// embedding_grad (positions grouped by token id) and the MoE ops (token rows grouped by expert).
// Counts use integer atomics (exact in any order); the rank of each key among the equal keys
// before it is counted by comparison (tiles of keys in shared memory), so positions, and every
// float sum taken over them in order, are the same on every run. The comparison is quadratic in
// the number of keys (B*T, or B*T*top_k), which stays far below the model's own work per token.
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

constexpr int kRankTile = 256;
constexpr int kScanThreads = 1024;

// counts[k + 1] += 1 for each key (counts zeroed first; counts[0] stays 0).
__global__ void bucket_count_k(const int32_t* keys, int64_t n, int64_t buckets, int32_t* counts,
                               unsigned long long* status, uint32_t tag) {
  TANDEM_GRID_LOOP(i, n) {
    const int32_t k = keys[i];
    if (k >= 0 && k < buckets) atomicAdd(&counts[k + 1], 1);
    else report_error(status, tag, k);
  }
}

// In place: a[i] = a[0] + ... + a[i] over n entries, one block (integers: exact in any order).
__global__ void __launch_bounds__(kScanThreads) inclusive_scan_k(int32_t* a, int64_t n) {
  __shared__ int32_t part[kScanThreads];
  const int64_t per = (n + kScanThreads - 1) / kScanThreads;
  const int64_t b0 = threadIdx.x * per, b1 = min(n, b0 + per);
  int32_t s = 0;
  for (int64_t i = b0; i < b1; ++i) s += a[i];
  part[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t run = 0;
    for (int t = 0; t < kScanThreads; ++t) {
      const int32_t v = part[t];
      part[t] = run;
      run += v;
    }
  }
  __syncthreads();
  int32_t run = part[threadIdx.x];
  for (int64_t i = b0; i < b1; ++i) {
    run += a[i];
    a[i] = run;
  }
}

// tiles[b + 1] = ceil(count_b / rows), tiles[0] = 0 (then scanned).
__global__ void tile_count_k(const int32_t* starts, int64_t buckets, int rows, int32_t* tiles) {
  TANDEM_GRID_LOOP(b, buckets + 1) {
    tiles[b] = b == 0 ? 0 : (starts[b] - starts[b - 1] + rows - 1) / rows;
  }
}

// pos[i] = starts[key_i] + #{j < i : key_j == key_i}; order[pos[i]] = i.
__global__ void bucket_rank_k(const int32_t* keys, int64_t n, int64_t buckets, const int32_t* starts, int32_t* pos,
                              int32_t* order) {
  __shared__ int32_t tile[kRankTile];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kRankTile + threadIdx.x;
  const int32_t key = i < n ? keys[i] : -1;
  const bool valid = i < n && key >= 0 && key < buckets;
  int32_t rank = 0;
  for (int64_t t0 = 0; t0 <= static_cast<int64_t>(blockIdx.x) * kRankTile; t0 += kRankTile) {
    __syncthreads();
    tile[threadIdx.x] = t0 + threadIdx.x < n ? keys[t0 + threadIdx.x] : -1;
    __syncthreads();
    if (valid) {
      const int lim = t0 < static_cast<int64_t>(blockIdx.x) * kRankTile ? kRankTile : static_cast<int>(threadIdx.x);
      for (int j = 0; j < lim; ++j) rank += tile[j] == key;
    }
  }
  if (i >= n) return;
  if (!valid) {
    pos[i] = -1;
    return;
  }
  const int32_t p = starts[key] + rank;
  pos[i] = p;
  if (order) order[p] = static_cast<int32_t>(i);
}

__global__ void probe_k() {}

}  // namespace

int probe_kernel_image() {
  cudaFuncAttributes attr{};
  return static_cast<int>(cudaFuncGetAttributes(&attr, probe_k));
}

BucketOrder bucket_order(CudaBackend& be, const Node& node, const int32_t* keys, int64_t n, int64_t buckets,
                         const char* what, bool want_order, int tile_rows) {
  check(n < (int64_t{1} << 31) && buckets < (int64_t{1} << 31), "cuda backend: ", op_name(node.op), " at node '", node.name,
        "': ", n, " keys in ", buckets, " buckets exceed the int32 index range");
  BucketOrder r;
  auto* starts = static_cast<int32_t*>(be.scratch(kSlotStarts, static_cast<size_t>(buckets + 1) * 4));
  auto* pos = static_cast<int32_t*>(be.scratch(kSlotPos, static_cast<size_t>(std::max<int64_t>(n, 1)) * 4));
  auto* order = want_order ? static_cast<int32_t*>(be.scratch(kSlotOrder, static_cast<size_t>(std::max<int64_t>(n, 1)) * 4))
                           : nullptr;
  cuda_check(cudaMemsetAsync(starts, 0, static_cast<size_t>(buckets + 1) * 4, be.stream()), "cudaMemsetAsync (bucket counts)",
             &node);
  if (n > 0) {
    const uint32_t tag = be.error_tag(node, std::string(what) + " out of range [0, " + std::to_string(buckets) + ")");
    bucket_count_k<<<grid_for(n), kThreads, 0, be.stream()>>>(keys, n, buckets, starts, be.status_word(), tag);
    be.launched("bucket_count", &node);
  }
  inclusive_scan_k<<<1, kScanThreads, 0, be.stream()>>>(starts, buckets + 1);
  be.launched("bucket_scan", &node);
  if (n > 0) {
    bucket_rank_k<<<static_cast<unsigned>((n + kRankTile - 1) / kRankTile), kRankTile, 0, be.stream()>>>(keys, n, buckets,
                                                                                                         starts, pos, order);
    be.launched("bucket_rank", &node);
  }
  if (tile_rows > 0) {
    auto* tiles = static_cast<int32_t*>(be.scratch(kSlotTiles, static_cast<size_t>(buckets + 1) * 4));
    tile_count_k<<<grid_for(buckets + 1), kThreads, 0, be.stream()>>>(starts, buckets, tile_rows, tiles);
    be.launched("bucket_tiles", &node);
    inclusive_scan_k<<<1, kScanThreads, 0, be.stream()>>>(tiles, buckets + 1);
    be.launched("bucket_tiles_scan", &node);
    r.tiles = tiles;
  }
  r.starts = starts;
  r.pos = pos;
  r.order = order;
  return r;
}

}  // namespace tandem::cuda
