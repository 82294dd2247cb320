#!/usr/bin/env bash
# The Kotlin suite with the JNI layer built under AddressSanitizer and
# UndefinedBehaviorSanitizer, run by the JVM with -Xcheck:jni: a memory or UB
# error in dam_jni.c fails the run. Leak checking is off: LeakSanitizer's
# tracer cannot stop the JVM's threads (it crashes), so leaks of the JNI
# layer are left to its design (no global references, one local reference
# per callback, deleted). Needs the set-up's JDK, kotlinc, cmake and GCC's
# libasan/libubsan; run after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$PWD/target/jni-asan"
mkdir -p "$work"
[ -f "$work/tiny/tiny-llm-f32.gguf" ] ||
  target/release/dam convert tests/fixtures/tiny/checkpoint --outdir "$work/tiny" --type f32 --name tiny >/dev/null
cmake -S bindings/kotlin -B "$work/build" -DDAM_LIBRARY="$PWD/target/release/libdam.so" \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc \
  -DCMAKE_C_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" >/dev/null
cmake --build "$work/build" >/dev/null
jar="$work/dam-test.jar"
kotlinc bindings/kotlin/src/main/kotlin bindings/kotlin/src/test/kotlin -include-runtime -nowarn -d "$jar"
jni="$work/build/libdam_jni.so"
rm -f "$work"/asan.*
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:log_path="$work/asan" \
UBSAN_OPTIONS=print_stacktrace=1:log_path="$work/asan" \
DAM_TEST_LLM="$work/tiny/tiny-llm-f32.gguf" DAM_TEST_VISION="$work/tiny/tiny-vision-f32.gguf" \
DAM_CLI="$PWD/target/release/dam" DAM_TEST_CASES="$PWD/tests/fixtures/tiny/cases" DAM_JNI_LIBRARY="$jni" \
  java -Xcheck:jni -cp "$jar" -Ddam.jni.library="$jni" dev.dam.DamTestKt | tee "$work/out.txt"
if ls "$work"/asan.* >/dev/null 2>&1; then
  cat "$work"/asan.* >&2
  echo "jni-asan: sanitizer reports above" >&2
  exit 1
fi
grep -q " 0 failed" "$work/out.txt"
echo "jni-asan: no sanitizer report"
