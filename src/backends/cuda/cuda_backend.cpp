#include "backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "ops/op.h"

namespace tandem {

namespace cuda {
int probe_kernel_image();  // order.cu: cudaFuncGetAttributes of one kernel (cudaError_t)
}  // namespace cuda

namespace {

std::string where(const Node* node) {
  return node ? " at node '" + node->name + "' (op " + op_name(node->op) + ")" : std::string();
}

std::string error_text(cudaError_t e) { return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")"; }

// The kernels are compiled for sm_80 and sm_90 (cmake/cuda.cmake): older devices cannot run them.
constexpr int kMinMajor = 8;

std::string describe(const cudaDeviceProp& p) {
  const auto gib = static_cast<long long>(static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0) + 0.5);
  std::string s = std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
                  std::to_string(p.multiProcessorCount) + " SMs, " + std::to_string(gib) + " GiB)";
  if (p.major < kMinMajor) s += " [unusable: this build targets sm_80 and newer]";
  return s;
}

// The process's rank on its node when an MPI launcher (or torchrun) started it; -1 otherwise.
int local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "LOCAL_RANK"})
    if (const char* v = std::getenv(var)) {
      char* end = nullptr;
      const long r = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && r >= 0) return static_cast<int>(r);
    }
  return -1;
}

// Every public entry point: the runtime's current device is per host thread (a server's engine
// thread is not the one that built the backend).
struct OnDevice {
  explicit OnDevice(int device) {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != device) cuda_check(cudaSetDevice(device), "cudaSetDevice");
  }
};

}  // namespace

void cuda_check(int err, const char* what, const Node* node) {
  const auto e = static_cast<cudaError_t>(err);
  if (e == cudaSuccess) return;
  // A fault inside a kernel is reported by whichever call comes next, and poisons the context.
  const bool fault = e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorMisalignedAddress ||
                     e == cudaErrorIllegalInstruction || e == cudaErrorInvalidPc || e == cudaErrorHardwareStackError ||
                     e == cudaErrorAssert || e == cudaErrorLaunchTimeout;
  throw Error("cuda backend: " + std::string(what) + " failed" + where(node) + ": " + error_text(e) +
              (fault ? "; a kernel fault surfaces at the next CUDA call, so the op at fault may be an earlier one: "
                       "rerun with TANDEM_CUDA_SYNC=1 to name it"
                     : ""));
}

void cublas_check(int status, const char* what, const Node* node) {
  const auto s = static_cast<cublasStatus_t>(status);
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw Error("cuda backend: " + std::string(what) + " failed" + where(node) + ": " + cublasGetStatusString(s) + " (" +
              cublasGetStatusName(s) + ")");
}

std::vector<std::string> cuda_devices(std::string* why_none) {
  std::vector<std::string> out;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky; clear it
    if (why_none) *why_none = "no usable CUDA device: cudaGetDeviceCount: " + error_text(e);
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    const cudaError_t pe = cudaGetDeviceProperties(&p, i);
    out.push_back(pe == cudaSuccess ? describe(p) : "device " + std::to_string(i) + " [unusable: " + error_text(pe) + "]");
  }
  if (out.empty() && why_none) *why_none = "no CUDA device (cudaGetDeviceCount returned 0)";
  return out;
}

CudaBackend::CudaBackend() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda backend: no usable CUDA device: cudaGetDeviceCount: " + error_text(e));
  }
  check(n > 0, "cuda backend: no CUDA device (cudaGetDeviceCount returned 0)");
  cudaDeviceProp p{};
  if (const char* env = std::getenv("TANDEM_CUDA_DEVICE")) {
    char* end = nullptr;
    const long i = std::strtol(env, &end, 10);
    check(end != env && *end == '\0' && i >= 0 && i < n, "cuda backend: TANDEM_CUDA_DEVICE=", env, " but there are ", n,
          " devices (0..", n - 1, ")");
    device_ = static_cast<int>(i);
    cuda_check(cudaGetDeviceProperties(&p, device_), "cudaGetDeviceProperties");
    check(p.major >= kMinMajor, "cuda backend: device ", device_, " is unusable: ", describe(p));
  } else if (const int local = local_rank(); local >= 0) {
    // One process per GPU under an MPI launcher: local rank r takes device r mod n.
    device_ = local % n;
    cuda_check(cudaGetDeviceProperties(&p, device_), "cudaGetDeviceProperties");
    check(p.major >= kMinMajor, "cuda backend: device ", device_, " (local rank ", local, ") is unusable: ", describe(p));
  } else {
    for (int i = 0; i < n && device_ < 0; ++i)
      if (cudaGetDeviceProperties(&p, i) == cudaSuccess && p.major >= kMinMajor) device_ = i;
    if (device_ < 0) {
      cuda_check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
      throw Error("cuda backend: no usable device: " + describe(p));
    }
  }
  device_name_ = describe(p);
  sm_count_ = p.multiProcessorCount;
  max_smem_optin_ = p.sharedMemPerBlockOptin;
  const char* sync_env = std::getenv("TANDEM_CUDA_SYNC");
  sync_each_op_ = sync_env && std::strcmp(sync_env, "0") != 0;
  try {
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    // The first call that needs a context: driver problems surface here.
    cuda_check(cudaFree(nullptr), ("creating a context on " + device_name_).c_str());
    cuda_check(cuda::probe_kernel_image(), ("loading the kernels on " + device_name_).c_str());
    cudaStream_t s = nullptr;
    cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    stream_ = s;
    cublasHandle_t h = nullptr;
    cublas_check(cublasCreate(&h), "cublasCreate");
    cublas_ = h;
    cublas_check(cublasSetStream(cublas_, stream_), "cublasSetStream");
    // f32 GEMMs in f32: the default math mode never trades precision (no TF32, no bf16x9
    // emulation; those need CUBLAS_TF32_TENSOR_OP_MATH or the emulation modes), and atomics stay
    // off, so results repeat. Set explicitly: the conformance bounds are f32 bounds.
    cublas_check(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    void* st = nullptr;
    cuda_check(cudaMalloc(&st, sizeof(unsigned long long)), "cudaMalloc (status word)");
    status_ = static_cast<unsigned long long*>(st);
    cuda_check(cudaMemsetAsync(status_, 0xFF, sizeof(unsigned long long), stream_), "cudaMemsetAsync (status word)");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  } catch (...) {
    release();
    throw;
  }
}

void CudaBackend::release() noexcept {
  if (device_ >= 0) cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  staging_.clear();  // Storage frees through this backend: before the stream goes
  for (auto& [slot, buf] : scratch_) cudaFree(buf.first);
  scratch_.clear();
  if (status_) cudaFree(status_);
  status_ = nullptr;
  if (cublas_) cublasDestroy(cublas_);
  cublas_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

CudaBackend::~CudaBackend() { release(); }

void* CudaBackend::alloc(size_t bytes) {
  OnDevice on(device_);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
  if (e != cudaSuccess) {
    cudaGetLastError();  // out-of-memory is not sticky
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error("cuda backend: cannot allocate " + std::to_string(bytes) + " bytes on " + device_name_ + " (" +
                std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB): " + error_text(e));
  }
  return p;
}

// Called from Storage's destructor: never throws. Pending kernels may still read the buffer.
void CudaBackend::free(void* handle) {
  if (!handle) return;
  cudaError_t e = cudaSetDevice(device_);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
  if (e == cudaSuccess) e = cudaFree(handle);
  // At process exit the runtime may be gone before the last tensor: nothing left to free then.
  if (e != cudaSuccess && e != cudaErrorCudartUnloading && e != cudaErrorContextIsDestroyed && !free_warned_) {
    free_warned_ = true;  // after a kernel fault every free fails: say it once
    std::fprintf(stderr, "tandem: warning: cuda backend: freeing device memory failed: %s\n", error_text(e).c_str());
  }
}

void CudaBackend::upload(void* dst, size_t off, const void* src, size_t bytes) {
  if (!bytes) return;
  OnDevice on(device_);
  cuda_check(cudaMemcpyAsync(static_cast<char*>(dst) + off, src, bytes, cudaMemcpyHostToDevice, stream_), "upload (cudaMemcpyAsync)");
  // The caller may free or reuse `src` as soon as we return.
  cuda_check(cudaStreamSynchronize(stream_), "upload (cudaStreamSynchronize)");
}

void CudaBackend::download(void* dst, const void* src, size_t off, size_t bytes) {
  OnDevice on(device_);
  if (bytes)
    cuda_check(cudaMemcpyAsync(dst, static_cast<const char*>(src) + off, bytes, cudaMemcpyDeviceToHost, stream_),
               "download (cudaMemcpyAsync)");
  cuda_check(cudaStreamSynchronize(stream_), "download (cudaStreamSynchronize)");
  check_device_errors();
}

void CudaBackend::copy(void* dst, size_t doff, const void* src, size_t soff, size_t bytes) {
  if (!bytes) return;
  OnDevice on(device_);
  cuda_check(cudaMemcpyAsync(static_cast<char*>(dst) + doff, static_cast<const char*>(src) + soff, bytes,
                             cudaMemcpyDeviceToDevice, stream_),
             "copy (cudaMemcpyAsync)");
}

void CudaBackend::zero(void* dst, size_t off, size_t bytes) {
  if (!bytes) return;
  OnDevice on(device_);
  cuda_check(cudaMemsetAsync(static_cast<char*>(dst) + off, 0, bytes, stream_), "zero (cudaMemsetAsync)");
}

void CudaBackend::sync() {
  OnDevice on(device_);
  cuda_check(cudaStreamSynchronize(stream_), "sync (cudaStreamSynchronize)");
  check_device_errors();
}

void* CudaBackend::scratch(int slot, size_t bytes) {
  auto& [mem, size] = scratch_[slot];
  if (size < bytes) {
    if (mem) {
      cuda_check(cudaStreamSynchronize(stream_), "scratch (cudaStreamSynchronize)");
      cuda_check(cudaFree(mem), "scratch (cudaFree)");
      mem = nullptr;
      size = 0;
    }
    mem = alloc(bytes);
    size = bytes;
  }
  return mem;
}

Tensor CudaBackend::staging(int slot, const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(tandem::numel(shape)) * dtype_size(dtype);
  std::shared_ptr<Storage>& s = staging_[slot];
  // A tensor still holding the old buffer keeps it alive; free() waits for the stream.
  if (!s || s->bytes < bytes) s = std::make_shared<Storage>(this, bytes);
  Tensor t;
  t.storage = s;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dtype;
  return t;
}

void CudaBackend::launched(const char* kernel, const Node* node) {
  const std::string what = std::string("kernel ") + kernel;
  cuda_check(cudaGetLastError(), what.c_str(), node);
  if (sync_each_op_) cuda_check(cudaStreamSynchronize(stream_), what.c_str(), node);
}

uint32_t CudaBackend::error_tag(const Node& node, const std::string& what) {
  // Bounded: a long run without a sync or download checks early.
  if (tags_.size() >= (1u << 20)) sync();
  tags_.push_back(std::string(op_name(node.op)) + " at node '" + node.name + "': " + what);
  return static_cast<uint32_t>(tags_.size() - 1);
}

void CudaBackend::check_device_errors() {
  unsigned long long word = ~0ull;
  cuda_check(cudaMemcpyAsync(&word, status_, sizeof word, cudaMemcpyDeviceToHost, stream_), "reading the status word");
  cuda_check(cudaStreamSynchronize(stream_), "reading the status word (cudaStreamSynchronize)");
  if (word == ~0ull) {
    tags_.clear();
    return;
  }
  cuda_check(cudaMemsetAsync(status_, 0xFF, sizeof word, stream_), "resetting the status word");
  const auto tag = static_cast<size_t>(word >> 32);
  const auto value = static_cast<int32_t>(static_cast<uint32_t>(word & 0xffffffffu));
  const std::string msg = tag < tags_.size() ? tags_[tag] : "a kernel reported bad data (tag " + std::to_string(tag) + ")";
  tags_.clear();
  throw Error("cuda backend: " + msg + " (got " + std::to_string(value) + ")");
}

namespace {

cuda::Kernel kernel_for(OpKind op) {
  switch (op) {
#define K(name) \
  case OpKind::name: return cuda::name;
    K(embedding) K(embedding_grad) K(matmul) K(add) K(mul) K(scale) K(sum_to) K(sum) K(broadcast)
    K(layernorm) K(layernorm_grad_x) K(layernorm_grad_w) K(rmsnorm) K(rmsnorm_grad_x) K(rmsnorm_grad_w)
    K(gelu) K(gelu_grad) K(silu) K(silu_grad) K(softmax) K(softmax_grad) K(attention) K(attention_grad) K(attention_cached)
    K(cross_entropy) K(cross_entropy_grad) K(token_nll) K(token_nll_grad) K(slice_last) K(pad_last) K(concat_last) K(sigmoid) K(sigmoid_grad)
    K(swiglu) K(swiglu_grad) K(rope) K(mla_qkv) K(mla_qkv_grad) K(attention_latent) K(topk_route) K(route_weights)
    K(route_weights_grad) K(moe_dispatch) K(moe_dispatch_grad) K(grouped_matmul) K(grouped_matmul_grad_w)
    K(moe_combine) K(moe_combine_grad_y) K(moe_combine_grad_w) K(seq_balance_loss) K(seq_balance_loss_grad)
    K(shift_tokens) K(ep_dispatch) K(ep_combine) K(ep_ids) K(cast)
#undef K
    default: return nullptr;
  }
}

// The dtype of each input as the op definitions require it: ids, targets, positions and cache
// lengths are i32, everything else f32.
DType input_dtype(OpKind op, size_t i) {
  switch (op) {
    case OpKind::embedding: case OpKind::embedding_grad: case OpKind::shift_tokens: case OpKind::ep_ids:
      return i == 0 ? DType::i32 : DType::f32;
    case OpKind::cross_entropy: case OpKind::cross_entropy_grad: case OpKind::token_nll:
    case OpKind::token_nll_grad: case OpKind::rope: case OpKind::route_weights:
    case OpKind::route_weights_grad: case OpKind::moe_dispatch: case OpKind::moe_dispatch_grad:
    case OpKind::seq_balance_loss: case OpKind::seq_balance_loss_grad: case OpKind::ep_dispatch: case OpKind::ep_combine:
      return i == 1 ? DType::i32 : DType::f32;
    case OpKind::attention_cached: case OpKind::grouped_matmul: case OpKind::grouped_matmul_grad_w:
    case OpKind::moe_combine: case OpKind::moe_combine_grad_y: case OpKind::moe_combine_grad_w:
      return i == 2 ? DType::i32 : DType::f32;
    case OpKind::attention_latent: return i == 4 ? DType::i32 : DType::f32;
    default: return DType::f32;
  }
}

DType output_dtype(OpKind op) {
  return op == OpKind::topk_route || op == OpKind::shift_tokens || op == OpKind::ep_ids ? DType::i32 : DType::f32;
}

// Where a kernel takes f32, a bf16 node takes bf16 (run_widened); a cast or an index-producing
// node's float inputs may be either.
bool input_ok(const Node& node, size_t i, DType got) {
  const DType want = input_dtype(node.op, i);
  if (want == DType::i32) return got == DType::i32;
  // q8_0 weights: a matmul's right operand, an embedding's table, a dequantizing cast (bf16.cu)
  if (got == DType::q8_0)
    return (node.op == OpKind::matmul && i == 1) || (node.op == OpKind::embedding && i == 1) || node.op == OpKind::cast;
  if (node.op == OpKind::cast || node.dtype == DType::i32) return is_float(got);
  return got == node.dtype;
}
std::string input_rule(const Node& node, size_t i) {
  if (input_dtype(node.op, i) == DType::i32) return "i32";
  return node.op == OpKind::cast || node.dtype == DType::i32 ? "f32 or bf16" : std::string(dtype_name(node.dtype));
}

}  // namespace

// Every float op in f32 and bf16 (bf16 storage, f32 arithmetic: bf16.cu); ids i32.
bool CudaBackend::supports(const Node& node) const {
  if (kernel_for(node.op) == nullptr) return false;
  const DType out = output_dtype(node.op);
  if (node.dtype != out && !(out == DType::f32 && node.dtype == DType::bf16)) return false;
  switch (node.op) {
    case OpKind::attention: case OpKind::attention_grad: case OpKind::attention_cached: {
      const auto& a = node.attr<AttentionAttrs>();
      return cuda::attention_fits(*this, a.d_qk, a.d_v);
    }
    case OpKind::rope: return node.attr<RopeAttrs>().rot_dim <= 256;  // inv_freq travels as a kernel parameter
    case OpKind::attention_latent: {
      const auto& a = node.attr<MlaAttrs>();
      return a.d_nope + a.d_rope <= 4096;  // the query head is staged in shared memory
    }
    default: return true;
  }
}

void CudaBackend::execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) {
  cuda::Kernel k = kernel_for(node.op);
  check(k != nullptr && supports(node), "cuda backend: no kernel for op ", op_name(node.op), " (", dtype_name(node.dtype),
        ") at node '", node.name, "'");
  check(output.dtype == node.dtype && output.is_contiguous(), "cuda backend: op ", op_name(node.op), " at node '", node.name,
        "': the output must be contiguous ", dtype_name(node.dtype));
  bool bf16_io = output.dtype == DType::bf16;
  for (size_t i = 0; i < inputs.size(); ++i) {
    check(inputs[i].is_contiguous() && input_ok(node, i, inputs[i].dtype), "cuda backend: op ", op_name(node.op),
          " at node '", node.name, "': input ", i, " must be contiguous ", input_rule(node, i), ", got ",
          dtype_name(inputs[i].dtype), inputs[i].is_contiguous() ? "" : " (non-contiguous)");
    bf16_io = bf16_io || inputs[i].dtype == DType::bf16 || inputs[i].dtype == DType::q8_0;
  }
  OnDevice on(device_);
  // cast converts itself; a matmul of two bf16 operands goes to cuBLAS's bf16 GEMM (matmul.cpp)
  const bool native = node.op == OpKind::cast ||
                      (node.op == OpKind::matmul && inputs[0].dtype == DType::bf16 && inputs[1].dtype == DType::bf16);
  if (bf16_io && !native) cuda::run_widened(*this, k, node, inputs, output);
  else k(*this, node, inputs, output);
  if (sync_each_op_) sync();
}

}  // namespace tandem
