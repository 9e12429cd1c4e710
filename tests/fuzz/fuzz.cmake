# Fuzz targets: one file per parser of outside bytes in tests/fuzz/targets/<name>.cpp, with its
# seed corpus (and crashers found since) in tests/fuzz/corpus/<name>/ and an optional dictionary
# tests/fuzz/dict/<name>.dict. Adding a target is adding those files; nothing here changes.
#  - always (with TANDEM_TESTS): tandem_fuzz_replay links every target and ctest replays each
#    corpus through it (fuzz_replay.<name>), no libFuzzer needed;
#  - TANDEM_FUZZ=ON (clang): fuzz_<name>, a libFuzzer executable per target (scripts/fuzz.sh).
file(GLOB TANDEM_FUZZ_TARGET_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/targets/*.cpp)
set_source_files_properties(${TANDEM_FUZZ_TARGET_SOURCES} PROPERTIES
  COMPILE_DEFINITIONS "TANDEM_FUZZ_DATA_DIR=\"${CMAKE_CURRENT_LIST_DIR}/data\"")
if(TANDEM_TESTS)
  add_library(tandem_fuzz_support STATIC ${CMAKE_CURRENT_LIST_DIR}/fuzz_support.cpp)
  target_include_directories(tandem_fuzz_support PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(tandem_fuzz_support PUBLIC tandem_lib)
  add_executable(tandem_fuzz_replay ${CMAKE_CURRENT_LIST_DIR}/replay.cpp ${TANDEM_FUZZ_TARGET_SOURCES})
  target_link_libraries(tandem_fuzz_replay PRIVATE tandem_fuzz_support)
  foreach(src ${TANDEM_FUZZ_TARGET_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_test(NAME fuzz_replay.${name}
             COMMAND tandem_fuzz_replay ${name} ${CMAKE_CURRENT_LIST_DIR}/corpus/${name})
  endforeach()
endif()

if(TANDEM_FUZZ)
  # Only the parsers of outside bytes are built here, instrumented (coverage, ASan, UBSan); the
  # rest of tandem (kernels, backends: hours of instrumented compiling on a small machine, and not
  # what reads the bytes) comes uninstrumented from a default build's library, TANDEM_FUZZ_BASE_LIB
  # (scripts/fuzz.sh builds build/libtandem_lib.a first). Archive members holding a parser are not
  # pulled from it, as the instrumented objects already define their symbols.
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TANDEM_FUZZ needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
  endif()
  set(TANDEM_FUZZ_BASE_LIB "" CACHE FILEPATH "libtandem_lib.a of a default build (scripts/fuzz.sh)")
  if(NOT EXISTS "${TANDEM_FUZZ_BASE_LIB}")
    message(FATAL_ERROR "TANDEM_FUZZ: set TANDEM_FUZZ_BASE_LIB to a default build's libtandem_lib.a")
  endif()
  file(GLOB TANDEM_FUZZ_PARSER_SOURCES CONFIGURE_DEPENDS
    src/io/*.cpp src/tokenizer/*.cpp src/data/shard.cpp src/train/config.cpp src/train/checkpoint.cpp
    src/serve/openai_api.cpp src/models/gpt2.cpp src/models/deepseek_v3.cpp)
  add_library(tandem_fuzz_parsers OBJECT ${TANDEM_FUZZ_PARSER_SOURCES})
  target_include_directories(tandem_fuzz_parsers PUBLIC src include)
  target_link_libraries(tandem_fuzz_parsers PUBLIC nlohmann_json::nlohmann_json PkgConfig::HTTPLIB)
  get_target_property(tandem_lib_deps tandem_lib INTERFACE_LINK_LIBRARIES)
  add_library(tandem_fuzz_base STATIC IMPORTED)
  set_target_properties(tandem_fuzz_base PROPERTIES IMPORTED_LOCATION ${TANDEM_FUZZ_BASE_LIB}
                        INTERFACE_LINK_LIBRARIES "${tandem_lib_deps}")
  add_library(tandem_fuzz_support_fz STATIC ${CMAKE_CURRENT_LIST_DIR}/fuzz_support.cpp)
  target_include_directories(tandem_fuzz_support_fz PUBLIC ${CMAKE_CURRENT_LIST_DIR} src include)
  target_link_libraries(tandem_fuzz_support_fz PUBLIC nlohmann_json::nlohmann_json)
  foreach(src ${TANDEM_FUZZ_TARGET_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(fuzz_${name} ${src} $<TARGET_OBJECTS:tandem_fuzz_parsers>)
    target_compile_definitions(fuzz_${name} PRIVATE TANDEM_FUZZ_LIBFUZZER)
    target_link_libraries(fuzz_${name} PRIVATE tandem_fuzz_parsers tandem_fuzz_support_fz tandem_fuzz_base)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
  endforeach()
endif()

# scripts/test-sanitize.sh --ci: the code that handles outside input (files, requests, the CLI,
# training and checkpoints, serving; not the kernels and backends, whose instrumented build takes
# most of an hour on 2 cores) built with the sanitizers, linked against a default build's library
# (TANDEM_SANITIZE_BASE_LIB) for the rest: tandem_io (the CLI; the Python tests drive it) and
# tandem_fuzz_replay_io (ctest: fuzz_replay_io.<target>).
set(TANDEM_SANITIZE_BASE_LIB "" CACHE FILEPATH "libtandem_lib.a of a default build (scripts/test-sanitize.sh --ci)")
if(TANDEM_SANITIZE AND TANDEM_SANITIZE_BASE_LIB)
  file(GLOB TANDEM_IO_SOURCES CONFIGURE_DEPENDS src/io/*.cpp src/tokenizer/*.cpp src/data/*.cpp src/train/*.cpp
    src/serve/*.cpp src/cli/cmd_*.cpp src/cli/model_loading.cpp src/models/*.cpp)
  add_library(tandem_io_objects OBJECT ${TANDEM_IO_SOURCES})
  target_include_directories(tandem_io_objects PUBLIC src include ${TANDEM_GENERATED_INCLUDE})
  target_link_libraries(tandem_io_objects PUBLIC nlohmann_json::nlohmann_json CLI11::CLI11 PkgConfig::HTTPLIB OpenMP::OpenMP_CXX)
  get_target_property(tandem_lib_deps tandem_lib INTERFACE_LINK_LIBRARIES)
  get_target_property(tandem_lib_defs tandem_lib INTERFACE_COMPILE_DEFINITIONS)
  if(tandem_lib_defs)
    target_compile_definitions(tandem_io_objects PUBLIC ${tandem_lib_defs})
  endif()
  add_library(tandem_io_base STATIC IMPORTED)
  set_target_properties(tandem_io_base PROPERTIES IMPORTED_LOCATION ${TANDEM_SANITIZE_BASE_LIB}
                        INTERFACE_LINK_LIBRARIES "${tandem_lib_deps}")
  add_executable(tandem_io src/cli/main.cpp $<TARGET_OBJECTS:tandem_io_objects>)
  target_link_libraries(tandem_io PRIVATE tandem_io_objects tandem_io_base)
  if(TANDEM_TESTS)
    add_executable(tandem_fuzz_replay_io ${CMAKE_CURRENT_LIST_DIR}/replay.cpp ${CMAKE_CURRENT_LIST_DIR}/fuzz_support.cpp
                   ${TANDEM_FUZZ_TARGET_SOURCES} $<TARGET_OBJECTS:tandem_io_objects>)
    target_include_directories(tandem_fuzz_replay_io PRIVATE ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(tandem_fuzz_replay_io PRIVATE tandem_io_objects tandem_io_base)
    foreach(src ${TANDEM_FUZZ_TARGET_SOURCES})
      get_filename_component(name ${src} NAME_WE)
      add_test(NAME fuzz_replay_io.${name}
               COMMAND tandem_fuzz_replay_io ${name} ${CMAKE_CURRENT_LIST_DIR}/corpus/${name})
    endforeach()
  endif()
endif()
