#!/usr/bin/env bash
# Everything dam's README commands need on a fresh Debian/Ubuntu machine with
# Rust: the build tools of the vendored llama.cpp, the tools the tests call,
# and a Python environment (.venv in the repository) for the Python tests.
# Safe to run again: it installs only what is missing. CI runs this same file
# through the README's set-up line (.ci/run extracts it from README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: cmake + libclang (llama-cpp-sys-2 builds llama.cpp with
# CMake and its bindings with bindgen), valgrind (memcheck test of the C
# users), g++ and binutils (the C/C++ examples and the symbol check), and
# python3-venv for the test environment below; the Kotlin, C# and Swift-module
# binding tests (tests/bindings.rs): a JDK, kotlin (kotlinc), mono-mcs and
# mono-runtime. Then clang (optional for the build, needed by the module check).
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v nm >/dev/null 2>&1 || need+=(binutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v kotlinc >/dev/null 2>&1 || need+=(kotlin)
command -v mcs >/dev/null 2>&1 || need+=(mono-mcs)
command -v mono >/dev/null 2>&1 || need+=(mono-runtime)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# clang 16 or newer builds ggml's native code with AMX on CPUs that have it
# (GCC 12 miscompiles it; scripts/cmake/native.cmake picks clang when present
# and otherwise leaves AMX out). Optional: without it the build still works.
have_clang16() {
  local c v
  for c in clang-20 clang-19 clang-18 clang-17 clang-16 clang; do
    command -v "$c" >/dev/null 2>&1 || continue
    v=$("$c" -dumpversion 2>/dev/null | cut -d. -f1)
    [ -n "$v" ] && [ "$v" -ge 16 ] && return 0
  done
  return 1
}
if ! have_clang16; then
  [ ${#need[@]} -gt 0 ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang-16 >/dev/null \
    || echo "setup: clang-16 is not packaged here: ggml builds with the system compiler (AMX left out under GCC 12)"
fi

# Python packages of the binding tests, pinned, in .venv (not the system's
# Python: Debian's refuses pip installs). Tests use .venv/bin/python, or
# $DAM_PYTHON when set.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
echo "setup: done (cmake $(cmake --version | head -1 | awk '{print $3}'), $(.venv/bin/python --version))"
