#!/usr/bin/env bash
# Fuzzing smoke run: each cargo-fuzz target for SECONDS (default 30) from the
# committed corpus, with AddressSanitizer; fails on a crash, leak, OOM or
# timeout artifact. Needs a nightly toolchain (cargo-fuzz is installed when
# missing). Not in CI (see .ci/run): run it before changing the code the
# targets reach (GGUF reading, preprocessing, regions, the C ABI, the
# segmenters).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
rustup toolchain list 2>/dev/null | grep -q '^nightly' || {
  echo "fuzz-smoke: needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install -q --locked cargo-fuzz --version 0.13.2
# llama.cpp without debug info (RelWithDebInfo's -g makes the ASan build of
# llama.cpp, the slowest part, slower still; Rust keeps line tables).
export LLAMA_LIB_PROFILE=Release
cargo +nightly fuzz build -O --debug-assertions
for t in gguf_load preprocess capi_describe segmenter_load segment_prompt; do
  rm -rf "target/smoke-$t" && cp -r "corpus/$t" "target/smoke-$t"
  cargo +nightly fuzz run -O --debug-assertions "$t" "target/smoke-$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|Done|==)" || true
  # A crash leaves an artifact and a non-zero exit: fail on either.
  if ls artifacts/$t/crash-* artifacts/$t/oom-* artifacts/$t/timeout-* >/dev/null 2>&1; then
    echo "fuzz target $t found a failure: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz-smoke: ${secs} s per target, no finding"
