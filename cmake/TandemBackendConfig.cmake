# The tandem backend plugin SDK, installed by `cmake --install` beside include/tandem/backend_abi.h.
#   find_package(TandemBackend CONFIG REQUIRED)   # with -DCMAKE_PREFIX_PATH=<tandem prefix>
#   tandem_add_backend_plugin(acme acme.c)        # builds libtandem-backend-acme.so
# The target tandem::backend_abi carries the include directory (the header is C99 and
# self-contained: no tandem library to link). tandem_add_backend_plugin builds a shared library
# named as TANDEM_BACKEND_PATH expects, with hidden symbols and a version script that exports
# only tandem_backend_get_api.
# Installed: <prefix>/lib/cmake/TandemBackend/ -> <prefix>/include. In tandem's source tree (the
# loopback plugin): cmake/ -> include/.
get_filename_component(_tandem_include "${CMAKE_CURRENT_LIST_DIR}/../../../include" ABSOLUTE)
if(NOT EXISTS "${_tandem_include}/tandem/backend_abi.h")
  get_filename_component(_tandem_include "${CMAKE_CURRENT_LIST_DIR}/../include" ABSOLUTE)
endif()
if(NOT TARGET tandem::backend_abi)
  add_library(tandem::backend_abi INTERFACE IMPORTED)
  set_target_properties(tandem::backend_abi PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_tandem_include}")
endif()
set(TANDEM_BACKEND_VERSION_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/tandem_backend_plugin.map")

function(tandem_add_backend_plugin name)
  add_library(${name} MODULE ${ARGN})
  set_target_properties(${name} PROPERTIES PREFIX "lib" OUTPUT_NAME "tandem-backend-${name}"
    C_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_link_libraries(${name} PRIVATE tandem::backend_abi)
  target_link_options(${name} PRIVATE "LINKER:--version-script=${TANDEM_BACKEND_VERSION_SCRIPT}" "LINKER:--no-undefined")
endfunction()
