// The CUDA backend: device memory from cudaMalloc, one stream for every copy and kernel, cuBLAS
// for matmul, a CUDA kernel for every other op (one .cu file per op family, like backends/cpu
// and backends/opencl) but the expert-parallel exchange, which goes through the host communicator. Tensors are (device pointer, byte offset) pairs: the memory planner's
// arena is one allocation. Every kernel writes its whole output, and every reduction runs in a
// fixed order without float atomics, so a run is reproducible bit for bit on one GPU model.
//
// Errors: every CUDA and cuBLAS call is checked and a failure throws tandem::Error naming the op
// and the node. Kernels run asynchronously, so a fault inside one (an illegal address) surfaces
// at the next checked call; TANDEM_CUDA_SYNC=1 synchronizes after every op to pin it to its node.
// Data errors found on the device (an id out of range, a KV cache overflow) are recorded in a
// status word and reported, naming the first offending node, at the next sync() or download().
//
// This header does not include the CUDA headers: the registry and the CLI include it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/graph.h"

struct CUstream_st;    // cudaStream_t
struct cublasContext;  // cublasHandle_t

namespace tandem {

// The devices the CUDA runtime sees, as "name (sm_XY, N SMs, M GiB)" lines ("[unusable: why]"
// appended where this build cannot run on one). Empty when there is none; then `why_none` (if
// given) says why, naming the CUDA error.
std::vector<std::string> cuda_devices(std::string* why_none = nullptr);

class CudaBackend final : public Backend {
 public:
  // Picks TANDEM_CUDA_DEVICE=<i>; else, under an MPI launcher, the local rank modulo the device
  // count (one GPU per process); else the first sm_80+ device. Throws a one-line Error naming the
  // CUDA error when there is no usable device.
  CudaBackend();
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  void* alloc(size_t bytes) override;
  void free(void* handle) override;
  void upload(void* dst, size_t dst_offset, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t src_offset, size_t bytes) override;
  void copy(void* dst, size_t dst_offset, const void* src, size_t src_offset, size_t bytes) override;
  void zero(void* dst, size_t offset, size_t bytes) override;
  void sync() override;
  bool supports(const Node& node) const override;
  void execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) override;
  double sum_squares(const Tensor& t) override;
  void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWStep& s) override;
  void axpy(const Tensor& y, float alpha, const Tensor& x) override;

  // For the kernel files (backends/cuda/*.cu, matmul.cpp).
  CUstream_st* stream() const { return stream_; }
  cublasContext* cublas() const { return cublas_; }
  int device() const { return device_; }
  int sm_count() const { return sm_count_; }
  size_t max_shared_bytes() const { return max_smem_optin_; }  // per block, with the opt-in
  const std::string& device_name() const { return device_name_; }
  // A device buffer of at least `bytes`, one per slot, reused across calls (one stream orders
  // every use). Growing a slot synchronizes first.
  void* scratch(int slot, size_t bytes);
  // A contiguous tensor of `shape` and `dtype` in staging buffer `slot`, grown as needed and reused
  // across calls (one stream): the f32 copies of a bf16 node's operands (bf16.cu).
  Tensor staging(int slot, const Shape& shape, DType dtype);
  // After a kernel launch: throws an Error naming the kernel, op and node if the launch failed
  // (and, with TANDEM_CUDA_SYNC=1, if the kernel faulted). `node` may be null (optimizer kernels).
  void launched(const char* kernel, const Node* node);
  // Device-side checks. A kernel that finds bad data (an id out of range, a cache overflow)
  // records (tag, value) in the status word: the smallest tag wins, i.e. the first op enqueued.
  // The message is "<what> (got <value>)"; it is thrown at the next sync() or download().
  uint32_t error_tag(const Node& node, const std::string& what);
  unsigned long long* status_word() const { return status_; }

 private:
  void release() noexcept;
  void check_device_errors();  // the stream must be synchronized
  int device_ = -1;
  int sm_count_ = 0;
  size_t max_smem_optin_ = 0;
  bool sync_each_op_ = false;
  bool free_warned_ = false;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  unsigned long long* status_ = nullptr;  // device word; ~0 = no error
  std::vector<std::string> tags_;         // tag -> message, since the last check
  std::map<int, std::pair<void*, size_t>> scratch_;
  std::map<int, std::shared_ptr<Storage>> staging_;
  std::string device_name_;
};

// Throws an Error "cuda backend: <what> failed [at node 'N' (op O)]: <CUDA error string> (<name>)"
// when `err` (a cudaError_t) is not cudaSuccess.
void cuda_check(int err, const char* what, const Node* node = nullptr);
// The same for a cublasStatus_t.
void cublas_check(int status, const char* what, const Node* node = nullptr);

}  // namespace tandem
