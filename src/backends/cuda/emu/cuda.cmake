# Replaces cmake/cuda.cmake in the emulator's mirror of the repository (emu/mirror.py): the CUDA
# backend compiled as C++ against emu/include, running on emu/emu.cpp; plus emu_harness.
set(TANDEM_EMU_DIR "${TANDEM_EMU_SOURCE}/src/backends/cuda/emu")
file(GLOB EMU_CUDA CONFIGURE_DEPENDS src/backends/cuda/*.cpp)
target_sources(tandem_lib PRIVATE ${EMU_CUDA} ${TANDEM_EMU_DIR}/emu.cpp)
target_include_directories(tandem_lib PUBLIC ${TANDEM_EMU_DIR}/include)
target_compile_definitions(tandem_lib PUBLIC TANDEM_HAVE_CUDA)
set_source_files_properties(${EMU_CUDA} ${TANDEM_EMU_DIR}/emu.cpp PROPERTIES COMPILE_OPTIONS "-Wno-unknown-pragmas")
add_executable(emu_harness ${TANDEM_EMU_DIR}/harness.cpp)
target_link_libraries(emu_harness PRIVATE tandem_lib)
if(EMU_ASAN)
  set_property(SOURCE ${EMU_CUDA} ${TANDEM_EMU_DIR}/emu.cpp APPEND PROPERTY COMPILE_OPTIONS -fsanitize=address -fno-omit-frame-pointer)
  target_link_options(tandem_lib PUBLIC -fsanitize=address)
endif()
