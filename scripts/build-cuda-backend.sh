#!/usr/bin/env bash
# Builds ggml's CUDA backend as a run-time module (libggml-cuda.so) for a dam
# built with `--features dynamic-backends`, from exactly the ggml source that
# the pinned llama-cpp-sys-2 vendors: the module calls into the
# libggml-base.so that dam was built with, so both must come from one source
# (ggml has no stable ABI between commits).
#
#   scripts/build-cuda-backend.sh [--src GGML_DIR] [--archs "90"] [--out DIR]
#                                 [--jobs N] [--build-dir DIR]
#
#   --src    ggml source folder (the `llama.cpp/ggml` folder of the crate).
#            Default: the one of the llama-cpp-sys-2 version in Cargo.lock, in
#            cargo's registry ($CARGO_HOME, default ~/.cargo).
#   --archs  CMAKE_CUDA_ARCHITECTURES, e.g. "90" (H100/H200), "89;90", "native".
#            Default: 90, or $CMAKE_CUDA_ARCHITECTURES.
#   --out    where libggml-cuda.so goes (default: target/cuda-backend). Put it
#            beside `dam` or point DAM_BACKENDS_DIR at the folder that has it
#            and the CPU modules.
#
# Needs CMake >= 3.18 and nvcc (CUDA toolkit; $CUDACXX or nvcc on PATH);
# uses ninja when present. Prints the ggml source id (a hash of the headers
# that define the backend interface) so two builds can be compared.
# Exit codes: 0 built, 2 usage, 3 missing tool or source, 4 build failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="" archs="${CMAKE_CUDA_ARCHITECTURES:-90}" out="$root/target/cuda-backend"
jobs=$(nproc 2>/dev/null || echo 4) build=""

die() { echo "build-cuda-backend: $2" >&2; exit "$1"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --src) src=$2; shift 2 ;;
        --archs) archs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --build-dir) build=$2; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die 2 "unknown argument $1 (see --help)" ;;
    esac
done

# The source: the pinned crate's vendored ggml.
if [[ -z $src ]]; then
    ver=$(awk '/^name = "llama-cpp-sys-2"/ { getline; gsub(/[" ]/, "", $0); sub(/version=/, "", $0); print; exit }' \
        "$root/Cargo.lock" 2>/dev/null || true)
    [[ -n $ver ]] || die 3 "cannot read the llama-cpp-sys-2 version from $root/Cargo.lock; pass --src"
    reg="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    src=$(ls -d "$reg"/*/"llama-cpp-sys-2-$ver"/llama.cpp/ggml 2>/dev/null | head -1 || true)
    [[ -n $src ]] || die 3 "llama-cpp-sys-2 $ver is not in $reg (run a cargo build first, or pass --src)"
fi
[[ -f $src/CMakeLists.txt && -d $src/src/ggml-cuda ]] \
    || die 3 "$src is not a ggml source folder with src/ggml-cuda"
src=$(cd "$src" && pwd)

source_id() {
    (cd "$1" && LC_ALL=C cat $(LC_ALL=C ls include/*.h) src/ggml-backend-impl.h 2>/dev/null) | sha256sum | cut -c1-16
}
echo "build-cuda-backend: ggml source $src (id $(source_id "$src"))"

# The tools, checked before anything is configured.
command -v cmake >/dev/null || die 3 "cmake not found (apt-get install cmake)"
nvcc=${CUDACXX:-$(command -v nvcc || true)}
if [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
[[ -n $nvcc && -x $nvcc ]] || die 3 "nvcc not found: install the CUDA toolkit, put nvcc on PATH or set CUDACXX (this machine can still run dam on the CPU)"
echo "build-cuda-backend: $("$nvcc" --version | tail -1), archs $archs, $jobs jobs"

gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi
build=${build:-$root/target/cuda-backend-build}
mkdir -p "$build" "$out"

# ggml as a subproject, as llama.cpp (and so llama-cpp-sys-2) builds it: the
# crate does not ship the files only a top-level ggml build needs.
mkdir -p "$build/wrapper"
cat >"$build/wrapper/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(dam_ggml_backends C CXX)
add_subdirectory("$src" ggml)
EOF
# Only ggml-base and the CUDA module: the CPU modules come from dam's build.
if ! cmake -S "$build/wrapper" -B "$build" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DCMAKE_CUDA_ARCHITECTURES="$archs" \
    -DBUILD_SHARED_LIBS=ON \
    -DGGML_BACKEND_DL=ON \
    -DGGML_CPU=OFF \
    -DGGML_NATIVE=OFF \
    -DGGML_CUDA=ON \
    -DGGML_BUILD_TESTS=OFF \
    -DGGML_BUILD_EXAMPLES=OFF >"$build/configure.log" 2>&1; then
    tail -30 "$build/configure.log" >&2
    die 4 "cmake configure failed (log: $build/configure.log)"
fi
if ! cmake --build "$build" --target ggml-cuda -j "$jobs" >"$build/build.log" 2>&1; then
    tail -40 "$build/build.log" >&2
    die 4 "build failed (log: $build/build.log)"
fi
lib=$(find "$build" -name 'libggml-cuda.so' -print -quit)
[[ -n $lib ]] || die 4 "the build made no libggml-cuda.so (log: $build/build.log)"
cp "$lib" "$out/"
source_id "$src" >"$out/libggml-cuda.source-id"
echo "build-cuda-backend: $out/libggml-cuda.so ($(du -h "$out/libggml-cuda.so" | cut -f1))"
