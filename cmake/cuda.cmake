# CUDA backend (src/backends/cuda): built when nvcc and the CUDA toolkit (runtime, cuBLAS) are
# found; -DTANDEM_CUDA=OFF skips it. Without nvcc the build goes on without the backend.
#
# The .cu files compile into an object library whose objects join tandem_lib: the project-wide
# compile options (-Wall -Wextra -march=native) are host-compiler flags that nvcc rejects, so that
# library starts from an empty option list and gets nvcc's own. Warnings are errors there (nvcc's
# and the host compiler's), and for the backend's host-only .cpp files too.
#   CMAKE_CUDA_ARCHITECTURES defaults to "80;90": SASS and PTX for sm_80 (A100; also runs on
#   sm_86/sm_89) and sm_90 (H100/H200); newer GPUs JIT the compute_90 PTX.
#   --fmad=false: a*b+c is two roundings, as in the CPU kernels (g++ -std=c++20 does not contract), so
#   element-wise ops and AdamW match the CPU's bits; the hot loops call fmaf explicitly.
option(TANDEM_CUDA "Build the CUDA backend when nvcc and the CUDA toolkit are found" ON)
if(TANDEM_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    # CMake before 3.26 knows no C++20 flag for nvcc (the targets inherit CXX_STANDARD 20).
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    file(GLOB TANDEM_CUDA_KERNELS CONFIGURE_DEPENDS src/backends/cuda/*.cu)
    file(GLOB TANDEM_CUDA_HOST CONFIGURE_DEPENDS src/backends/cuda/*.cpp)
    add_library(tandem_cuda_kernels OBJECT ${TANDEM_CUDA_KERNELS})
    set_property(TARGET tandem_cuda_kernels PROPERTY COMPILE_OPTIONS "")  # drop the host-only flags
    set_target_properties(tandem_cuda_kernels PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
    target_include_directories(tandem_cuda_kernels PRIVATE src)
    target_compile_options(tandem_cuda_kernels PRIVATE --fmad=false --Werror all-warnings
      -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-Werror)
    target_link_libraries(tandem_cuda_kernels PRIVATE CUDA::cudart)
    target_sources(tandem_lib PRIVATE ${TANDEM_CUDA_HOST} $<TARGET_OBJECTS:tandem_cuda_kernels>)
    # tandem_lib was created before CUDA was enabled: give it what a CUDA-carrying target needs.
    set_target_properties(tandem_lib PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}" CUDA_STANDARD 20)
    set_source_files_properties(${TANDEM_CUDA_HOST} PROPERTIES COMPILE_OPTIONS -Werror)
    target_compile_definitions(tandem_lib PUBLIC TANDEM_HAVE_CUDA)
    target_link_libraries(tandem_lib PUBLIC CUDA::cudart CUDA::cublas)
    message(STATUS "tandem: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  else()
    message(STATUS "tandem: CUDA backend OFF (nvcc or the CUDA toolkit not found)")
  endif()
else()
  message(STATUS "tandem: CUDA backend OFF (-DTANDEM_CUDA=OFF)")
endif()
