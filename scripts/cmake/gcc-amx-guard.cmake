# Run after each project() of the llama.cpp build (CMAKE_PROJECT_INCLUDE, set
# by native.cmake). GCC before 13 miscompiles ggml's AMX kernels under
# -march=native (SIGILL at the first tile instruction): undefine the macros
# that compile them in (ggml-cpu/amx is built only under __AMX_INT8__), so such
# a build is a working AVX-512 build instead of a crashing AMX one.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  add_compile_options(-U__AMX_TILE__ -U__AMX_INT8__ -U__AMX_BF16__)
  if(NOT DAM_AMX_GUARD_REPORTED)
    set(DAM_AMX_GUARD_REPORTED ON)
    message(STATUS "dam: GCC ${CMAKE_CXX_COMPILER_VERSION} miscompiles ggml's AMX code: AMX left out (install clang-16 for AMX)")
  endif()
endif()
