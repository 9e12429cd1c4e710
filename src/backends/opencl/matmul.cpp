// matmul (ops/matmul.h conventions): 2-D with a's leading dims flattened, or batched; either
// operand transposed. Every GEMM of the backend (matmul, grouped_matmul) goes to CLBlast: row-major
// SGEMM, strided-batched for the batched form, on the backend's in-order queue. Measured on PoCL
// (baby-gpt shapes, bench/README.md): 5-10x the backend's former one-dot-product-per-work-item
// kernel, which is gone. CLBlast is deterministic for a given device and shape.
#include <mutex>
#include <set>
#include <vector>

#include "backends/opencl/kernels.h"  // first: it sets CL_TARGET_OPENCL_VERSION for CL/cl.h
#include "core/error.h"
#include "ops/matmul.h"

#include <clblast_c.h>

namespace tandem::opencl {

namespace {

// CLBlast's stored tunings are for GPUs; on a CPU device (PoCL) its defaults run the baby-gpt GEMMs
// at 3-6 GFLOP/s. These parameters (measured on PoCL 3.1, 2 cores, AVX-512: 20-40 GFLOP/s) use no
// local memory and 8x8 work-groups, each work-item an 8x8 register tile of float8 vectors, and
// always take the indirect kernel (operands padded to 64x64x32 tiles by CLBlast's copy kernels).
// Chosen by device type, never by vendor; other devices keep CLBlast's own database.
void tune_for_cpu(cl_device_id dev) {
  static std::mutex mu;
  static std::set<cl_device_id> done;
  std::lock_guard lock(mu);
  if (!done.insert(dev).second) return;
  cl_device_type type = 0;
  clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, nullptr);
  if (!(type & CL_DEVICE_TYPE_CPU)) return;
  auto set = [&](const char* kernel, std::initializer_list<std::pair<const char*, size_t>> params) {
    std::vector<const char*> names;
    std::vector<size_t> values;
    for (auto [n, v] : params) {
      names.push_back(n);
      values.push_back(v);
    }
    const CLBlastStatusCode st =
        CLBlastOverrideParameters(dev, kernel, CLBlastPrecisionSingle, names.size(), names.data(), values.data());
    check(st == CLBlastSuccess, "opencl backend: CLBlast rejected the CPU parameters for ", kernel, " (status ",
          static_cast<int>(st), ")");
  };
  set("Xgemm", {{"GEMMK", 0}, {"KREG", 1}, {"KWG", 32}, {"KWI", 2}, {"MDIMA", 8}, {"MDIMC", 8}, {"MWG", 64}, {"NDIMB", 8},
                {"NDIMC", 8}, {"NWG", 64}, {"SA", 0}, {"SB", 0}, {"STRM", 0}, {"STRN", 0}, {"VWM", 8}, {"VWN", 8}});
  set("GemmRoutine", {{"XGEMM_MIN_INDIRECT_SIZE", 1}});
}

}  // namespace

void gemm(OpenClBackend& be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& A, int64_t a_extra,
          int64_t lda, const Tensor& B, int64_t b_extra, int64_t ldb, const Tensor& C, int64_t c_extra, int64_t batch,
          int64_t sa, int64_t sb, int64_t sc) {
  if (M == 0 || N == 0 || batch == 0) return;
  const OpenClBackend::Arg a(A), b(B), c(C);
  if (K == 0) {  // an empty sum: zeros
    for (int64_t z = 0; z < batch; ++z)
      be.zero(c.mem, static_cast<size_t>(c.i + c_extra + z * sc) * 4, static_cast<size_t>(M * N) * 4);
    return;
  }
  tune_for_cpu(be.device());
  cl_command_queue q = be.queue();
  const auto T = [](bool t) { return t ? CLBlastTransposeYes : CLBlastTransposeNo; };
  const auto u = [](int64_t v) { return static_cast<size_t>(v); };
  CLBlastStatusCode st;
  if (batch == 1)
    st = CLBlastSgemm(CLBlastLayoutRowMajor, T(ta), T(tb), u(M), u(N), u(K), 1.0f, a.mem, u(a.i + a_extra), u(lda), b.mem,
                      u(b.i + b_extra), u(ldb), 0.0f, c.mem, u(c.i + c_extra), u(N), &q, nullptr);
  else
    st = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, T(ta), T(tb), u(M), u(N), u(K), 1.0f, a.mem, u(a.i + a_extra),
                                    u(lda), u(sa), b.mem, u(b.i + b_extra), u(ldb), u(sb), 0.0f, c.mem, u(c.i + c_extra),
                                    u(N), u(sc), u(batch), &q, nullptr);
  check(st == CLBlastSuccess, "opencl backend: CLBlast SGEMM ", M, "x", N, "x", K, " (batch ", batch,
        ") failed (CLBlast status ", static_cast<int>(st), ")");
}

void matmul(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const MatmulDims d = matmul_dims(node, in[0].shape, in[1].shape);
  const int64_t sa = d.a_rows * d.a_cols, sb = d.batched ? d.b_rows * d.b_cols : 0, sc = d.m * d.n;
  gemm(be, d.trans_a, d.trans_b, d.m, d.n, d.k, in[0], 0, d.a_cols, in[1], 0, d.b_cols, out, 0, d.batch, sa, sb, sc);
}

}  // namespace tandem::opencl
