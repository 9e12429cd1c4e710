#include "backends/opencl/opencl_backend.h"

#include <cstdlib>
#include <cstring>

#include "backends/opencl/kernels.h"
#include "core/error.h"
#include "ops/op.h"

namespace tandem {

void cl_check(cl_int err, const char* what) {
  check(err == CL_SUCCESS, "opencl backend: ", what, " failed (OpenCL error ", err, ")");
}

namespace {

std::string info_str(cl_device_id d, cl_device_info what) {
  size_t n = 0;
  clGetDeviceInfo(d, what, 0, nullptr, &n);
  std::string s(n, '\0');
  clGetDeviceInfo(d, what, n, s.data(), nullptr);
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}
template <typename T>
T info(cl_device_id d, cl_device_info what) {
  T v{};
  clGetDeviceInfo(d, what, sizeof v, &v, nullptr);
  return v;
}

std::vector<cl_device_id> all_devices() {
  cl_uint np = 0;
  if (clGetPlatformIDs(0, nullptr, &np) != CL_SUCCESS || np == 0) return {};
  std::vector<cl_platform_id> ps(np);
  clGetPlatformIDs(np, ps.data(), nullptr);
  std::vector<cl_device_id> out;
  for (cl_platform_id p : ps) {
    cl_uint nd = 0;
    if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, nullptr, &nd) != CL_SUCCESS || nd == 0) continue;
    std::vector<cl_device_id> ds(nd);
    clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, nd, ds.data(), nullptr);
    out.insert(out.end(), ds.begin(), ds.end());
  }
  return out;
}

// What the kernels need: an available device with a compiler, OpenCL C >= 1.2, work-groups of
// 256 (the reductions) and 2 KiB of local memory.
std::string unusable_reason(cl_device_id d) {
  if (!info<cl_bool>(d, CL_DEVICE_AVAILABLE)) return "not available";
  if (!info<cl_bool>(d, CL_DEVICE_COMPILER_AVAILABLE)) return "no OpenCL C compiler";
  const std::string cver = info_str(d, CL_DEVICE_OPENCL_C_VERSION);  // "OpenCL C 1.2 ..."
  if (cver.size() < 12 || cver.compare(9, 3, "1.2") < 0) return "OpenCL C older than 1.2 (" + cver + ")";
  if (info<size_t>(d, CL_DEVICE_MAX_WORK_GROUP_SIZE) < 256) return "work-groups smaller than 256";
  if (info<cl_ulong>(d, CL_DEVICE_LOCAL_MEM_SIZE) < 4096) return "less than 4 KiB local memory";
  return "";
}

// Preference among usable devices: accelerators and GPUs before CPUs, then more compute units x
// clock. Vendor names play no part. TANDEM_OPENCL_DEVICE=<index in `tandem backends`> overrides.
double score(cl_device_id d) {
  const auto type = info<cl_device_type>(d, CL_DEVICE_TYPE);
  const double kind = (type & (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR)) ? 1e12 : 0;
  return kind + double(info<cl_uint>(d, CL_DEVICE_MAX_COMPUTE_UNITS)) * info<cl_uint>(d, CL_DEVICE_MAX_CLOCK_FREQUENCY);
}

std::string describe(cl_device_id d) {
  const auto type = info<cl_device_type>(d, CL_DEVICE_TYPE);
  std::string s = info_str(d, CL_DEVICE_NAME) + " (" +
                  (type & CL_DEVICE_TYPE_GPU ? "gpu" : type & CL_DEVICE_TYPE_CPU ? "cpu" : "accelerator") + ", " +
                  std::to_string(info<cl_uint>(d, CL_DEVICE_MAX_COMPUTE_UNITS)) + " compute units, " +
                  std::to_string(info<cl_ulong>(d, CL_DEVICE_GLOBAL_MEM_SIZE) >> 20) + " MiB, " +
                  info_str(d, CL_DEVICE_OPENCL_C_VERSION) + ")";
  const std::string why = unusable_reason(d);
  return why.empty() ? s : s + " [unusable: " + why + "]";
}

}  // namespace

std::vector<std::string> opencl_devices() {
  std::vector<std::string> out;
  for (cl_device_id d : all_devices()) out.push_back(describe(d));
  return out;
}

OpenClBackend::OpenClBackend() {
  const auto devices = all_devices();
  check(!devices.empty(), "opencl backend: no OpenCL platform or device found (is an ICD such as pocl-opencl-icd installed?)");
  if (const char* env = std::getenv("TANDEM_OPENCL_DEVICE")) {
    const size_t i = std::strtoul(env, nullptr, 10);
    check(i < devices.size(), "opencl backend: TANDEM_OPENCL_DEVICE=", env, " but there are ", devices.size(), " devices");
    const std::string why = unusable_reason(devices[i]);
    check(why.empty(), "opencl backend: device ", i, " is unusable: ", why);
    dev_ = devices[i];
  } else {
    for (cl_device_id d : devices)
      if (unusable_reason(d).empty() && (!dev_ || score(d) > score(dev_))) dev_ = d;
    check(dev_ != nullptr, "opencl backend: no usable device (", describe(devices.front()), ")");
  }
  device_name_ = describe(dev_);
  cl_int err;
  ctx_ = clCreateContext(nullptr, 1, &dev_, nullptr, nullptr, &err);
  cl_check(err, "clCreateContext");
  queue_ = clCreateCommandQueue(ctx_, dev_, 0, &err);  // in-order
  cl_check(err, "clCreateCommandQueue");

  const char* srcs[] = {"#pragma OPENCL FP_CONTRACT OFF\n", opencl::elementwise_src, opencl::embedding_src,
                        opencl::norm_src, opencl::softmax_src, opencl::attention_src,
                        opencl::cross_entropy_src, opencl::optimizer_src, opencl::slice_src, opencl::rope_src,
                        opencl::mla_src, opencl::moe_src, opencl::bf16_src};
  program_ = clCreateProgramWithSource(ctx_, std::size(srcs), srcs, nullptr, &err);
  cl_check(err, "clCreateProgramWithSource");
  // No fast-math: kernels must match the float64 reference within the conformance bounds.
  err = clBuildProgram(program_, 1, &dev_, "-cl-std=CL1.2", nullptr, nullptr);
  if (err != CL_SUCCESS) {
    size_t n = 0;
    clGetProgramBuildInfo(program_, dev_, CL_PROGRAM_BUILD_LOG, 0, nullptr, &n);
    std::string log(n, '\0');
    clGetProgramBuildInfo(program_, dev_, CL_PROGRAM_BUILD_LOG, n, log.data(), nullptr);
    throw Error("opencl backend: kernel compilation failed on " + device_name_ + ":\n" + log);
  }
}

OpenClBackend::~OpenClBackend() {
  if (queue_) clFinish(queue_);
  staging_.clear();  // Storage frees through this backend: before the context goes
  for (auto& [n, k] : kernels_) clReleaseKernel(k);
  for (auto& [s, m] : scratch_) clReleaseMemObject(m.first);
  for (auto& [k, m] : constants_) clReleaseMemObject(m);
  if (program_) clReleaseProgram(program_);
  if (queue_) clReleaseCommandQueue(queue_);
  if (ctx_) clReleaseContext(ctx_);
}

void* OpenClBackend::alloc(size_t bytes) {
  cl_int err;
  cl_mem m = clCreateBuffer(ctx_, CL_MEM_READ_WRITE, std::max<size_t>(bytes, 4), nullptr, &err);
  check(err == CL_SUCCESS, "opencl backend: cannot allocate ", bytes, " bytes (OpenCL error ", err, ")");
  return m;
}
void OpenClBackend::free(void* h) { clReleaseMemObject(static_cast<cl_mem>(h)); }
void OpenClBackend::upload(void* dst, size_t off, const void* src, size_t bytes) {
  if (bytes) cl_check(clEnqueueWriteBuffer(queue_, static_cast<cl_mem>(dst), CL_TRUE, off, bytes, src, 0, nullptr, nullptr), "upload");
}
void OpenClBackend::download(void* dst, const void* src, size_t off, size_t bytes) {
  if (bytes)
    cl_check(clEnqueueReadBuffer(queue_, static_cast<cl_mem>(const_cast<void*>(src)), CL_TRUE, off, bytes, dst, 0, nullptr, nullptr),
             "download");
}
void OpenClBackend::copy(void* dst, size_t doff, const void* src, size_t soff, size_t bytes) {
  if (bytes)
    cl_check(clEnqueueCopyBuffer(queue_, static_cast<cl_mem>(const_cast<void*>(src)), static_cast<cl_mem>(dst), soff, doff,
                                 bytes, 0, nullptr, nullptr),
             "copy");
}
void OpenClBackend::zero(void* dst, size_t off, size_t bytes) {
  const cl_uchar z = 0;
  if (bytes)
    cl_check(clEnqueueFillBuffer(queue_, static_cast<cl_mem>(dst), &z, 1, off, bytes, 0, nullptr, nullptr), "zero");
}
void OpenClBackend::sync() { cl_check(clFinish(queue_), "clFinish"); }

cl_mem OpenClBackend::scratch(int slot, size_t bytes) {
  auto& [mem, size] = scratch_[slot];
  if (size < bytes) {
    if (mem) clReleaseMemObject(mem);
    mem = static_cast<cl_mem>(alloc(bytes));
    size = bytes;
  }
  return mem;
}

cl_mem OpenClBackend::constant(const void* data, size_t bytes) {
  std::string key(static_cast<const char*>(data), bytes);
  auto it = constants_.find(key);
  if (it != constants_.end()) return it->second;
  cl_mem m = static_cast<cl_mem>(alloc(bytes));
  upload(m, 0, data, bytes);
  return constants_[std::move(key)] = m;
}

Tensor OpenClBackend::staging(int slot, const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(tandem::numel(shape)) * dtype_size(dtype);
  std::shared_ptr<Storage>& s = staging_[slot];
  // A tensor still holding the old buffer keeps it alive; commands already enqueued retain it.
  if (!s || s->bytes < bytes) s = std::make_shared<Storage>(this, bytes);
  Tensor t;
  t.storage = s;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dtype;
  return t;
}

cl_kernel OpenClBackend::kernel(const char* name) {
  auto it = kernels_.find(name);
  if (it != kernels_.end()) return it->second;
  cl_int err;
  cl_kernel k = clCreateKernel(program_, name, &err);
  check(err == CL_SUCCESS, "opencl backend: no kernel '", name, "' (OpenCL error ", err, ")");
  return kernels_[name] = k;
}

OpenClBackend::Arg::Arg(const Tensor& x) : t(T::mem), mem(static_cast<cl_mem>(x.storage->handle)), tensor(true) {
  i = static_cast<cl_long>(x.dtype == DType::q8_0 ? x.offset : x.offset / dtype_size(x.dtype));
}

void OpenClBackend::launch3d(const char* name, std::array<size_t, 3> global, std::array<size_t, 3> local,
                             std::initializer_list<Arg> args) {
  cl_kernel k = kernel(name);
  cl_uint idx = 0;
  for (const Arg& a : args) {
    switch (a.t) {
      case Arg::T::mem:
        cl_check(clSetKernelArg(k, idx++, sizeof(cl_mem), &a.mem), name);
        if (a.tensor) cl_check(clSetKernelArg(k, idx++, sizeof(cl_long), &a.i), name);
        break;
      case Arg::T::i64: cl_check(clSetKernelArg(k, idx++, sizeof(cl_long), &a.i), name); break;
      case Arg::T::f32: cl_check(clSetKernelArg(k, idx++, sizeof(cl_float), &a.f), name); break;
    }
  }
  const bool has_local = local[0] != 0;
  for (int d = 0; d < 3; ++d) {
    if (global[d] == 0) return;  // nothing to do
    if (has_local) global[d] = (global[d] + local[d] - 1) / local[d] * local[d];
  }
  cl_check(clEnqueueNDRangeKernel(queue_, k, 3, nullptr, global.data(), has_local ? local.data() : nullptr, 0, nullptr,
                                  nullptr),
           name);
}

void OpenClBackend::launch(const char* name, size_t global, std::initializer_list<Arg> args, size_t local) {
  launch3d(name, {global, 1, 1}, {local, local ? 1u : 0u, local ? 1u : 0u}, args);
}

namespace {
opencl::Kernel kernel_for(OpKind op) {
  switch (op) {
#define K(name) \
  case OpKind::name: return opencl::name;
    K(embedding) K(embedding_grad) K(matmul) K(add) K(mul) K(scale) K(sum_to) K(sum) K(broadcast)
    K(layernorm) K(layernorm_grad_x) K(layernorm_grad_w) K(rmsnorm) K(rmsnorm_grad_x) K(rmsnorm_grad_w)
    K(gelu) K(gelu_grad) K(silu) K(silu_grad) K(softmax) K(softmax_grad) K(attention) K(attention_grad) K(attention_cached)
    K(cross_entropy) K(cross_entropy_grad) K(token_nll) K(token_nll_grad) K(slice_last) K(pad_last) K(concat_last) K(sigmoid) K(sigmoid_grad)
    K(swiglu) K(swiglu_grad) K(rope) K(mla_qkv) K(mla_qkv_grad) K(attention_latent) K(topk_route) K(route_weights)
    K(route_weights_grad) K(moe_dispatch) K(moe_dispatch_grad) K(grouped_matmul) K(grouped_matmul_grad_w)
    K(moe_combine) K(moe_combine_grad_y) K(moe_combine_grad_w) K(seq_balance_loss) K(seq_balance_loss_grad) K(shift_tokens)
    K(ep_dispatch) K(ep_combine) K(ep_ids) K(cast)
#undef K
    default: return nullptr;
  }
}

// The dtypes the kernels are written for: outputs f32 except the index-producing ops (i32); inputs
// f32 except the id, position and length operands (i32). Where a kernel takes f32, a bf16 node
// takes bf16 (run_widened); an index-producing node's float inputs may be either.
DType output_dtype(OpKind op) {
  return op == OpKind::topk_route || op == OpKind::shift_tokens || op == OpKind::ep_ids ? DType::i32 : DType::f32;
}
DType input_dtype(OpKind op, size_t i) {
  switch (op) {
    case OpKind::embedding: case OpKind::embedding_grad: case OpKind::shift_tokens: case OpKind::ep_ids:
      return i == 0 ? DType::i32 : DType::f32;
    case OpKind::cross_entropy: case OpKind::cross_entropy_grad: case OpKind::token_nll:
    case OpKind::token_nll_grad: case OpKind::rope: case OpKind::route_weights:
    case OpKind::route_weights_grad: case OpKind::moe_dispatch: case OpKind::moe_dispatch_grad:
    case OpKind::seq_balance_loss: case OpKind::seq_balance_loss_grad: case OpKind::ep_dispatch: case OpKind::ep_combine:
      return i == 1 ? DType::i32 : DType::f32;
    case OpKind::attention_cached: case OpKind::grouped_matmul: case OpKind::grouped_matmul_grad_w: case OpKind::moe_combine:
    case OpKind::moe_combine_grad_y: case OpKind::moe_combine_grad_w:
      return i == 2 ? DType::i32 : DType::f32;
    case OpKind::attention_latent: return i == 4 ? DType::i32 : DType::f32;
    default: return DType::f32;
  }
}

// The float dtype a float input of `node` must have, in words (see output_dtype above).
std::string float_input_rule(const Node& node) {
  return node.op == OpKind::cast || node.dtype == DType::i32 ? "f32 or bf16" : std::string(dtype_name(node.dtype));
}
bool input_ok(const Node& node, size_t i, DType got) {
  const DType want = input_dtype(node.op, i);
  if (want == DType::i32) return got == DType::i32;
  // q8_0 weights: a matmul's right operand, an embedding's table, a dequantizing cast (bf16.cpp)
  if (got == DType::q8_0)
    return (node.op == OpKind::matmul && i == 1) || (node.op == OpKind::embedding && i == 1) || node.op == OpKind::cast;
  if (node.op == OpKind::cast || node.dtype == DType::i32) return is_float(got);
  return got == node.dtype;
}
}  // namespace

// The node carries only its output dtype; inputs are checked against the same table in execute.
// Every float op in f32 and bf16 (bf16 storage, f32 arithmetic: bf16.cpp); index-producing ops
// output i32. topk_route keeps its chosen groups in a 64-bit mask.
bool OpenClBackend::supports(const Node& node) const {
  if (kernel_for(node.op) == nullptr) return false;
  const DType out = output_dtype(node.op);
  if (node.dtype != out && !(out == DType::f32 && node.dtype == DType::bf16)) return false;
  if (node.op == OpKind::topk_route && node.attr<RouteAttrs>().n_group > 64) return false;
  return true;
}

void OpenClBackend::execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) {
  opencl::Kernel k = kernel_for(node.op);
  check(k != nullptr && supports(node), "opencl backend: no kernel for op ", op_name(node.op), " (", dtype_name(node.dtype),
        ") at node '", node.name, "'");
  check(output.dtype == node.dtype && output.is_contiguous(), "opencl backend: op ", op_name(node.op), " at node '",
        node.name, "' got a non-contiguous or ", dtype_name(output.dtype), " output");
  bool bf16_io = output.dtype == DType::bf16;
  for (size_t i = 0; i < inputs.size(); ++i) {
    check(inputs[i].is_contiguous() && input_ok(node, i, inputs[i].dtype), "opencl backend: op ", op_name(node.op),
          " at node '", node.name, "': input ", i, " is non-contiguous or ", dtype_name(inputs[i].dtype),
          ", the kernel takes ",
          input_dtype(node.op, i) == DType::i32 ? std::string("i32") : float_input_rule(node));
    bf16_io = bf16_io || inputs[i].dtype == DType::bf16 || inputs[i].dtype == DType::q8_0;
  }
  if (bf16_io && node.op != OpKind::cast) return opencl::run_widened(*this, k, node, inputs, output);
  k(*this, node, inputs, output);
}

}  // namespace tandem
