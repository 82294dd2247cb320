# Toolchain file for the ggml build of the default (native) route, set by
# .cargo/config.toml. It only chooses; it never fails:
# - CC/CXX from the environment are used as given;
# - a build that is not native (GGML_NATIVE off: the portable route, the
#   fuzz build) keeps the compiler the cc crate detected, because its flags
#   were chosen for that compiler (ASan adds GCC-only -fno-ipa-icf-variables);
# - otherwise clang 16 or newer, when installed, builds ggml: GCC 12.2
#   (Debian 12) drops the stores that fill ggml's AMX tile configuration
#   under -march=native, and the first AMX instruction dies with SIGILL;
# - whatever the compiler, gcc-amx-guard.cmake (run after each project())
#   leaves ggml's AMX code out under a GCC older than 13.
# Cross builds (an Android NDK toolchain, CMAKE_SYSTEM_NAME set) are left alone.
if(CMAKE_SYSTEM_NAME OR ANDROID_ABI)
  return()
endif()
if(GGML_NATIVE AND NOT DEFINED ENV{CC} AND NOT CMAKE_C_COMPILER)
  find_program(DAM_CLANG NAMES clang-20 clang-19 clang-18 clang-17 clang-16 clang)
  find_program(DAM_CLANGXX NAMES clang++-20 clang++-19 clang++-18 clang++-17 clang++-16 clang++)
  if(DAM_CLANG AND DAM_CLANGXX)
    execute_process(COMMAND ${DAM_CLANG} -dumpversion OUTPUT_VARIABLE _dam_clang_version
                    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    string(REGEX MATCH "^[0-9]+" _dam_clang_major "${_dam_clang_version}")
    if(_dam_clang_major AND _dam_clang_major GREATER_EQUAL 16)
      set(CMAKE_C_COMPILER ${DAM_CLANG})
      set(CMAKE_CXX_COMPILER ${DAM_CLANGXX})
    endif()
  endif()
endif()
set(CMAKE_PROJECT_INCLUDE ${CMAKE_CURRENT_LIST_DIR}/gcc-amx-guard.cmake)
