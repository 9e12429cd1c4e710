# The loopback plugin (src/backends/loopback): every op through the plugin ABI into a copy of the
# CPU backend's kernels, so that CI proves the ABI carries everything tandem needs (conform, and
# training bit-identical to --backend cpu). It is built the way a vendor builds a plugin: with the
# SDK's tandem_add_backend_plugin and the ABI header, plus the one library it calls into, the CPU
# kernels compiled a second time as position-independent code (a plugin is a shared object).
file(GLOB TANDEM_KERNEL_SOURCES CONFIGURE_DEPENDS src/core/*.cpp src/ops/*.cpp src/backends/cpu/*.cpp)
add_library(tandem_cpu_kernels_pic STATIC ${TANDEM_KERNEL_SOURCES} src/dist/communicator.cpp
  src/backends/plugin/abi_node.cpp)
set_target_properties(tandem_cpu_kernels_pic PROPERTIES POSITION_INDEPENDENT_CODE ON
  CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
target_include_directories(tandem_cpu_kernels_pic PUBLIC src include)
target_include_directories(tandem_cpu_kernels_pic SYSTEM PRIVATE ${OPENBLAS_INCLUDE})
target_link_libraries(tandem_cpu_kernels_pic PUBLIC OpenMP::OpenMP_CXX ${OPENBLAS_LIB} ${MVEC_LIB})

include(cmake/TandemBackendConfig.cmake)
tandem_add_backend_plugin(loopback src/backends/loopback/loopback_plugin.cpp)
target_link_libraries(loopback PRIVATE tandem_cpu_kernels_pic)
# Beside the tandem binary's build directory: TANDEM_BACKEND_PATH=build/plugins.
set_target_properties(loopback PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/plugins)
