#include "backends/registry.h"

#include <cstdlib>
#include <memory>

#include "backends/cpu/cpu_backend.h"
#include "backends/faulty/faulty_backend.h"
#include "backends/plugin/plugin_backend.h"
#include "core/error.h"
#ifdef TANDEM_HAVE_OPENCL
#include "backends/opencl/opencl_backend.h"
#endif
#ifdef TANDEM_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

namespace tandem {

namespace {
const char* const kBuiltIn =
    "cpu"
#ifdef TANDEM_HAVE_OPENCL
    ", opencl"
#endif
#ifdef TANDEM_HAVE_CUDA
    ", cuda"
#endif
    ", faulty:<backend>, plugin:<path.so>";

std::string& fallback_mode() {
  static std::string mode = [] {
    const char* e = std::getenv("TANDEM_FALLBACK");
    return std::string(e && *e ? e : "cpu");
  }();
  return mode;
}
}  // namespace

void set_plugin_fallback(const std::string& mode) {
  check(mode == "cpu" || mode == "none", "--fallback must be cpu or none, not '", mode, "'");
  fallback_mode() = mode;
}

std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& fault) {
  if (name.starts_with("faulty:")) {
    check(!fault.empty(), "backend '", name, "' needs a fault spec (--fault or TANDEM_FAULT), e.g. op=softmax,kind=scale,eps=1e-3");
    return std::make_unique<FaultyBackend>(make_backend(name.substr(7), ""), FaultSpec::parse(fault));
  }
  check(fault.empty(), "--fault applies to faulty:<backend> only, not to backend '", name, "'");
  if (name == "cpu") return std::make_unique<CpuBackend>();
#ifdef TANDEM_HAVE_OPENCL
  if (name == "opencl") return std::make_unique<OpenClBackend>();
#endif
#ifdef TANDEM_HAVE_CUDA
  if (name == "cuda") return std::make_unique<CudaBackend>();
#endif
  if (name.starts_with("plugin:")) {
    check(fallback_mode() == "cpu" || fallback_mode() == "none", "TANDEM_FALLBACK must be cpu or none, not '",
          fallback_mode(), "'");
    return std::make_unique<PluginBackend>(load_plugin(name.substr(7)), fallback_mode() == "cpu");
  }
  if (const std::string path = find_plugin(name); !path.empty()) return make_backend("plugin:" + path, "");
  const char* search = std::getenv("TANDEM_BACKEND_PATH");
  throw Error("unknown backend '" + name + "' (this build has: " + kBuiltIn + "; no libtandem-backend-" + name +
              ".so in TANDEM_BACKEND_PATH" + (search && *search ? "=" + std::string(search) : " (unset)") + ")");
}

std::unique_ptr<Backend> make_backend(const std::string& name) {
  const char* fault = name.starts_with("faulty:") ? std::getenv("TANDEM_FAULT") : nullptr;
  return make_backend(name, fault ? fault : "");
}

std::vector<BackendInfo> list_backends() {
  std::vector<BackendInfo> out;
#if defined(__AVX512F__)
  out.push_back({"cpu", {"host CPU (OpenMP, AVX-512 kernels and GEMM)"}, ""});
#else
  out.push_back({"cpu", {"host CPU (OpenMP, OpenBLAS GEMM)"}, ""});
#endif
#ifdef TANDEM_HAVE_OPENCL
  {
    BackendInfo b{"opencl", opencl_devices(), ""};
    if (b.devices.empty()) b.note = "no OpenCL platform or device (install an ICD, e.g. pocl-opencl-icd)";
    out.push_back(std::move(b));
  }
#else
  out.push_back({"opencl", {}, "not built (OpenCL headers/loader not found at configure time, or -DTANDEM_OPENCL=OFF)"});
#endif
#ifdef TANDEM_HAVE_CUDA
  {
    BackendInfo b{"cuda", {}, ""};
    b.devices = cuda_devices(&b.note);
    out.push_back(std::move(b));
  }
#else
  out.push_back({"cuda", {}, "not built (nvcc/CUDA toolkit not found at configure time, or -DTANDEM_CUDA=OFF)"});
#endif
  out.push_back({"faulty:<backend>", {}, "wraps a backend with one injected fault (--fault op=NAME,kind=...)"});
  out.push_back({"plugin:<path.so>", {}, "an out-of-tree backend through include/tandem/backend_abi.h (TANDEM_BACKEND_PATH: "
                 "directories of libtandem-backend-NAME.so, selected as --backend NAME)"});
  return out;
}

}  // namespace tandem
