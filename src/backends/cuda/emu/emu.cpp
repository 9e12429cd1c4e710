// The CPU emulation of the CUDA runtime and cuBLAS (include/cuda_runtime.h says what it covers).
// Kernels run block after block. The threads of a block are fibers (ucontext) in one OS thread: a
// thread runs until it reaches a barrier (__syncthreads, or a warp barrier: __syncwarp and every
// shuffle) or returns; the scheduler releases a warp barrier when every live lane of the warp waits
// at one, the block barrier when every live thread of the block does, and aborts, naming the
// kernel and block, when neither can be released (a barrier some threads never reach). Exited
// threads count as arrived, as on sm_70 and later. Memory is plain host memory; fresh device and
// shared memory is filled with 0xFF bytes (NaN) so that reading what was never written shows.
#include <ucontext.h>

#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>
#include <memory>
#include <set>

#include "cublas_v2.h"
#include "cuda_runtime.h"

namespace emu {

enum class St { ready, wait_block, wait_warp, done };
struct FiberState {
  ucontext_t ctx;
  char* stack = nullptr;
  uint3 tid;
  int lin = 0;
  St st = St::ready;
};
FiberState* g_cur = nullptr;
uint3 g_block_idx;
dim3 g_block_dim, g_grid_dim;
static ucontext_t g_sched;
static std::vector<FiberState> g_fibers;
static std::vector<unsigned char> g_xbuf;  // per-lane exchange slots (8 bytes each)
static std::unique_ptr<unsigned char[]> g_smem;
static const std::function<void()>* g_body = nullptr;
static const char* g_name = "";
static bool g_outside = true;  // not inside a kernel
constexpr size_t kStack = 256 * 1024;
static size_t g_optin = 232448;

size_t smem_optin() { return g_optin; }
const uint3& cur_tid() {
  if (!g_cur) { std::fprintf(stderr, "emu: threadIdx outside a kernel\n"); std::abort(); }
  return g_cur->tid;
}
cudaError_t& last_error() { static cudaError_t e = cudaSuccess; return e; }
std::map<const void*, int>& func_smem() { static std::map<const void*, int> m; return m; }
void* dyn_smem() { return g_smem.get(); }

static void yield_to_sched() { swapcontext(&g_cur->ctx, &g_sched); }

void syncthreads() {
  g_cur->st = St::wait_block;
  yield_to_sched();
}
void syncwarp() {
  g_cur->st = St::wait_warp;
  yield_to_sched();
}
void exchange(const void* mine, void* out, int partner_xor, size_t bytes) {
  const int lane = g_cur->lin & 31, base = g_cur->lin & ~31;
  std::memcpy(&g_xbuf[static_cast<size_t>(g_cur->lin) * 8], mine, bytes);
  syncwarp();
  const int p = base + (lane ^ partner_xor);
  if (p >= static_cast<int>(g_fibers.size()) || g_fibers[p].st == St::done) {
    std::fprintf(stderr, "emu: %s: shuffle with an exited or missing lane %d\n", g_name, p);
    std::abort();
  }
  std::memcpy(out, &g_xbuf[static_cast<size_t>(p) * 8], bytes);
  syncwarp();
}

static void entry() {
  (*g_body)();
  g_cur->st = St::done;
  swapcontext(&g_cur->ctx, &g_sched);
}

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body, const char* name) {
  const int nt = static_cast<int>(block.x * block.y * block.z);
  g_body = &body;
  g_name = name;
  g_grid_dim = grid;
  g_block_dim = block;
  if (g_fibers.size() < static_cast<size_t>(nt)) {
    size_t old = g_fibers.size();
    g_fibers.resize(static_cast<size_t>(nt));
    for (size_t i = old; i < g_fibers.size(); ++i) g_fibers[i].stack = static_cast<char*>(std::malloc(kStack));
  }
  g_xbuf.assign(static_cast<size_t>(nt) * 8, 0);
  std::vector<FiberState*> fs(static_cast<size_t>(nt));
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        g_block_idx = {bx, by, bz};
        g_smem.reset(new unsigned char[smem ? smem : 1]);  // exact size: ASan sees overflows
        std::memset(g_smem.get(), 0xFF, smem);             // uninitialised shared memory reads as NaN
        for (int t = 0; t < nt; ++t) {
          FiberState& f = g_fibers[static_cast<size_t>(t)];
          f.lin = t;
          f.tid = {static_cast<unsigned>(t) % block.x, (static_cast<unsigned>(t) / block.x) % block.y,
                   static_cast<unsigned>(t) / (block.x * block.y)};
          f.st = St::ready;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack;
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, entry, 0);
        }
        g_outside = false;
        while (true) {
          static const bool reverse = std::getenv("EMU_ORDER") && std::string(std::getenv("EMU_ORDER")) == "reverse";
          for (int tt = 0; tt < nt; ++tt) {
            const int t = reverse ? nt - 1 - tt : tt;
            FiberState& f = g_fibers[static_cast<size_t>(t)];
            if (f.st != St::ready) continue;
            g_cur = &f;
            swapcontext(&g_sched, &f.ctx);
          }
          g_cur = nullptr;
          int done = 0, wb = 0, ww = 0;
          for (int t = 0; t < nt; ++t) {
            St s = g_fibers[static_cast<size_t>(t)].st;
            done += s == St::done;
            wb += s == St::wait_block;
            ww += s == St::wait_warp;
          }
          if (done == nt) break;
          bool released = false;
          // warp barriers: all live lanes of the warp wait at a warp barrier
          for (int w0 = 0; w0 < nt; w0 += 32) {
            int live = 0, at = 0;
            for (int t = w0; t < std::min(nt, w0 + 32); ++t) {
              St s = g_fibers[static_cast<size_t>(t)].st;
              live += s != St::done;
              at += s == St::wait_warp;
            }
            if (live > 0 && at == live) {
              if (live != std::min(nt, w0 + 32) - w0) {
                std::fprintf(stderr, "emu: %s: warp barrier with %d of %d lanes alive (block %u,%u,%u)\n", name, live,
                             std::min(nt, w0 + 32) - w0, bx, by, bz);
                std::abort();
              }
              for (int t = w0; t < std::min(nt, w0 + 32); ++t) g_fibers[static_cast<size_t>(t)].st = St::ready;
              released = true;
            }
          }
          if (!released && wb == nt - done) {
            for (int t = 0; t < nt; ++t)
              if (g_fibers[static_cast<size_t>(t)].st == St::wait_block) g_fibers[static_cast<size_t>(t)].st = St::ready;
            released = true;
          }
          if (!released) {
            std::fprintf(stderr, "emu: %s: barrier divergence/deadlock in block (%u,%u,%u): %d done, %d at __syncthreads, %d at a warp barrier\n",
                         name, bx, by, bz, done, wb, ww);
            std::abort();
          }
        }
        g_outside = true;
      }
}

}  // namespace emu

// ---- runtime API
static std::map<void*, size_t> g_allocs;
cudaError_t cudaGetDeviceCount(int* n) {
  if (std::getenv("EMU_NO_DEVICE")) { *n = 0; return cudaErrorInsufficientDriver; }
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "Emulated GPU");
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->totalGlobalMem = size_t{16} << 30;
  if (const char* s = std::getenv("EMU_SMEM")) emu::g_optin = std::strtoul(s, nullptr, 10);
  p->sharedMemPerBlockOptin = emu::g_optin;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  auto it = g_allocs.find(p);
  if (it == g_allocs.end()) { std::fprintf(stderr, "emu: cudaFree of an unknown pointer\n"); std::abort(); }
  g_allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);  // exact size: ASan sees overflows
  std::memset(*p, 0xFF, n);      // garbage: NaN
  g_allocs[*p] = n;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) { *f = *t = size_t{16} << 30; return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { std::memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }
static CUstream_st g_stream;
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = &g_stream; return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetLastError() { cudaError_t e = emu::last_error(); emu::last_error() = cudaSuccess; return e; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    default: return "emulated error";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    default: return "cudaErrorUnknown";
  }
}

// ---- cuBLAS (column-major reference, float accumulation as an fmaf chain)
static cublasContext g_blas;
cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = &g_blas; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) { return s ? "invalid value" : "success"; }
const char* cublasGetStatusName(cublasStatus_t s) { return s ? "CUBLAS_STATUS_INVALID_VALUE" : "CUBLAS_STATUS_SUCCESS"; }
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda, long long sa, const float* B,
                                         int ldb, long long sb, const float* beta, float* C, int ldc, long long sc, int batch) {
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, ta == CUBLAS_OP_N ? m : k) ||
      ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) || ldc < std::max(1, m)) {
    std::fprintf(stderr, "emu: cublas invalid value m=%d n=%d k=%d lda=%d ldb=%d ldc=%d\n", m, n, k, lda, ldb, ldc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  for (int p = 0; p < batch; ++p) {
    const float* a = A + p * sa;
    const float* b = B + p * sb;
    float* c = C + p * sc;
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float acc = 0;
        for (int l = 0; l < k; ++l) {
          const float av = ta == CUBLAS_OP_N ? a[i + static_cast<long long>(l) * lda] : a[l + static_cast<long long>(i) * lda];
          const float bv = tb == CUBLAS_OP_N ? b[l + static_cast<long long>(j) * ldb] : b[j + static_cast<long long>(l) * ldb];
          acc = std::fmaf(av, bv, acc);
        }
        float& out = c[i + static_cast<long long>(j) * ldc];
        out = *alpha * acc + (*beta == 0.0f ? 0.0f : *beta * out);
      }
  }
  return CUBLAS_STATUS_SUCCESS;
}
// f32 or bf16 operands (a bf16 widened exactly), f32 output and compute: the sgemm loop above.
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                          const void* alpha, const void* A, cudaDataType at, int lda, long long sa,
                                          const void* B, cudaDataType bt, int ldb, long long sb, const void* beta, void* C,
                                          cudaDataType ct, int ldc, long long sc, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
  if (at != bt || (at != CUDA_R_32F && at != CUDA_R_16BF) || ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F) {
    std::fprintf(stderr, "emu: cublasGemmStridedBatchedEx: unsupported types a=%d b=%d c=%d compute=%d\n", at, bt, ct,
                 compute);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  auto widen = [](const void* p, cudaDataType t, long long elems) {
    std::vector<float> w(static_cast<size_t>(elems));
    for (long long i = 0; i < elems; ++i) {
      if (t == CUDA_R_32F) {
        w[static_cast<size_t>(i)] = static_cast<const float*>(p)[i];
      } else {
        const uint32_t u = static_cast<uint32_t>(static_cast<const uint16_t*>(p)[i]) << 16;
        std::memcpy(&w[static_cast<size_t>(i)], &u, 4);
      }
    }
    return w;
  };
  // extents: the last batch's start plus one matrix (column-major, ld per column)
  const long long a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
  const std::vector<float> a = widen(A, at, (batch - 1) * sa + static_cast<long long>(lda) * a_cols);
  const std::vector<float> b = widen(B, bt, (batch - 1) * sb + static_cast<long long>(ldb) * b_cols);
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, static_cast<const float*>(alpha), a.data(), lda, sa, b.data(), ldb, sb,
                                   static_cast<const float*>(beta), static_cast<float*>(C), ldc, sc, batch);
}
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta, float* C,
                           int ldc) {
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
