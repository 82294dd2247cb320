#!/usr/bin/env bash
# Prepares dist/device/ on a CPU machine for scripts/device-check.sh on a GPU
# machine that has no Rust toolchain and no network:
#
#   dist/device/bin/dam          dam built with --features dynamic-backends
#   dist/device/bin/pipeline     the fixture parity test binary, same build
#   dist/device/lib/             libllama / libggml / libggml-base of that build
#   dist/device/backends/        its CPU modules (libggml-cpu-*.so)
#   dist/device/ggml/            the ggml source it was built from (for the CUDA module)
#   dist/device/MANIFEST         commit, crate version, ggml source id
#
# and dist/device.tar.xz (the same, stripped and compressed: about 5 MB, for
# a carry limit that the repository's fixtures already use most of). Then,
# with the `device` tool: carry ["dist/device.tar.xz"] and run
# `bash scripts/device-check.sh` (it unpacks the archive). The build takes long the first time (ggml
# builds one CPU module per x86 level); later runs rebuild only dam.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
td=${DAM_DL_TARGET_DIR:-target/dl}
dist=dist/device

echo "device-bundle: building dam and the parity tests with dynamic-backends ($td)" >&2
cargo build --release --features dynamic-backends --target-dir "$td" --bin dam
pipeline=$(cargo test --release --features dynamic-backends --target-dir "$td" --test pipeline --no-run 2>&1 \
    | sed -n 's/.*Executable tests\/pipeline.rs (\(.*\))/\1/p' | tail -1)
[[ -x $pipeline ]] || { echo "device-bundle: no pipeline test binary" >&2; exit 1; }

out=$(ls -d "$td"/release/build/llama-cpp-sys-2-*/out 2>/dev/null | while read -r d; do
    [[ -d $d/lib && -d $d/backends ]] && echo "$d"; done | xargs -r ls -dt | head -1)
[[ -n $out ]] || { echo "device-bundle: no llama-cpp-sys-2 output with lib/ and backends/ in $td" >&2; exit 1; }

ver=$(awk '/^name = "llama-cpp-sys-2"/ { getline; gsub(/[" ]/, "", $0); sub(/version=/, "", $0); print; exit }' Cargo.lock)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"llama-cpp-sys-2-$ver"/llama.cpp/ggml | head -1)

rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/lib" "$dist/backends" "$dist/ggml"
cp "$td/release/dam" "$dist/bin/"
cp "$pipeline" "$dist/bin/pipeline"
cp -P "$out"/lib/lib*.so* "$dist/lib/"
# Every CPU module but Sapphire Rapids': built by GCC 12 its AMX kernels run
# with an empty tile configuration (the compiler drops the stores to it) and
# die with SIGILL; without it ggml picks the AVX-512 module on such CPUs.
for f in "$out"/backends/libggml-cpu-*.so; do
    [[ $f == *sapphirerapids* ]] || cp "$f" "$dist/backends/"
done
# The source, without the folders of backends that are not built (large).
cp -r "$src/." "$dist/ggml/"
for b in sycl vulkan opencl metal hexagon et cann webgpu zdnn openvino virtgpu zendnn blas; do
    rm -rf "$dist/ggml/src/ggml-$b"
done
id=$( (cd "$src" && LC_ALL=C cat $(LC_ALL=C ls include/*.h) src/ggml-backend-impl.h) | sha256sum | cut -c1-16)
{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "llama-cpp-sys-2 $ver"
    echo "ggml-source-id $id"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) by $(rustc --version)"
} >"$dist/MANIFEST"
cat "$dist/MANIFEST" >&2
du -sh "$dist" >&2
strip --strip-unneeded "$dist"/bin/* "$dist"/lib/*.so.*.* "$dist"/backends/*.so
tar -cJf dist/device.tar.xz -C dist device
du -h dist/device.tar.xz >&2
