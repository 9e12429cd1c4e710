# Compiles the chat page (src/serve/ui/index.html) into the binary: tandem serve needs no files at
# run time. The page becomes a byte array in <build>/generated/serve/ui_index.h; editing the page
# re-runs CMake (CMAKE_CONFIGURE_DEPENDS), and configure_file rewrites the header only on change.
set(TANDEM_UI_HTML ${CMAKE_CURRENT_SOURCE_DIR}/src/serve/ui/index.html)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${TANDEM_UI_HTML})
file(READ ${TANDEM_UI_HTML} TANDEM_UI_HEX HEX)
string(LENGTH "${TANDEM_UI_HEX}" TANDEM_UI_HEX_LEN)
math(EXPR TANDEM_UI_SIZE "${TANDEM_UI_HEX_LEN} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," TANDEM_UI_BYTES "${TANDEM_UI_HEX}")
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/src/serve/ui/ui_index.h.in
  ${CMAKE_BINARY_DIR}/generated/serve/ui_index.h @ONLY)
set(TANDEM_GENERATED_INCLUDE ${CMAKE_BINARY_DIR}/generated)
