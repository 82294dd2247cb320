#!/usr/bin/env bash
# DAM-3B-size performance comparison, in one command:
#
#   benches/compare.sh [WORKDIR]          (default WORKDIR: target/compare)
#
# Measures the default build, the one the README's commands make (native:
# .cargo/config.toml sets target-cpu=native, so llama-cpp-sys-2 builds
# llama.cpp/ggml with GGML_NATIVE=ON, with clang >= 16 when installed so that
# ggml's AMX kernels work; scripts/cmake/native.cmake), in target/;
# builds benches/baseline.c (a
# plain llama.h program) against the same static llama.cpp libraries and
# benches/membw.c, synthesizes DAM-3B at f16 (`dam synth`: DAM-3B's exact
# shapes, seeded random weights), quantizes both files to q8_0 and q4_k
# (`dam quantize`; the vision file also to bf16), then measures:
#   - dam vs the baseline: prefill tokens/s (196 image rows + the prompt
#     text) and decode tokens/s, on the same LLM file, at f16, q8_0, q4_k;
#   - decode vs the memory-bandwidth bound (weight + KV bytes per token /
#     the measured read bandwidth);
#   - the vision stage (both views + cross-attention + projector) at f16,
#     bf16, q8_0, and q8_0 without repacking (the file's layout, no AMX);
#   - time to first token and the TOKENS-token caption latency at f16,
#     q8_0, q4_k (`dam bench`: one greedy request on a 2048x1365 photo);
#   - load-to-ready time (files in the page cache) and peak RSS vs the
#     files' size, with the defaults and with --low-memory (a
#     LOWMEM_TOKENS-token caption, default TOKENS), per preset;
#   - 1 vs THREADS threads (q4_k);
#   - llama.cpp's decode of 1 vs 4 parallel sequences (benches/batch_decode.c),
#     the bound on what batching captions gains;
#   - with a Python that has torch, numpy, gguf (and transformers), the same
#     weights in PyTorch: the vision stage (benches/torch_vision.py) and the
#     whole request (benches/torch_pipeline.py: vision, prefill with the image
#     rows spliced in, greedy decode), bf16 and f32 (TORCH_PYTHON).
# The report (markdown) is printed and written to WORKDIR/report.md; the raw
# JSON of every run stays in WORKDIR/json/.
#
# Knobs (environment): TOKENS (caption length, default 64), BASE_TOKENS
# (baseline decode steps, default TOKENS), THREADS (default: nproc), REUSE=1
# (keep model files from an earlier run), KEEP=1 (keep the model files,
# about 15 GB, at the end; default: deleted), RESUME=1 (with REUSE=1: skip
# the measurements whose JSON an interrupted run left), PRESET=tiny (a smoke test of
# this script in seconds, on `dam synth --preset tiny`; its numbers mean
# nothing).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$ROOT/target/compare}
TOKENS=${TOKENS:-64}
BASE_TOKENS=${BASE_TOKENS:-$TOKENS}
THREADS=${THREADS:-$(nproc)}
PRESET=${PRESET:-dam-3b}
N_IMG=196
[[ $PRESET == tiny ]] && N_IMG=9
IMG=$ROOT/tests/fixtures/geom/cases/c1_image.png
MASK=$ROOT/tests/fixtures/geom/cases/c1_mask.png
# DAM's single-image prompt, as dam builds it (llm/prompt.rs).
PROMPT=$(printf "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: <image>\nDescribe the masked region in detail. ASSISTANT:")

mkdir -p "$WORK/json"
J=$WORK/json
LOG=$WORK/steps.log
[[ ${RESUME:-0} == 1 ]] || : > "$LOG"
T_START=$(date +%s)
step() { # step NAME CMD... : runs CMD, logs its wall time
    local name=$1
    shift
    local t0
    t0=$(date +%s.%N)
    "$@"
    # Wall time, and the load average after the step (other work on the machine).
    awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$name" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" \
        'BEGIN { printf "%-28s %7.1f s   load %s\n", n, b - a, l }' | tee -a "$LOG" >&2
}

# ---------------------------------------------------------------- build
# The default build, as a user gets it (no RUSTFLAGS, no CC: the repository's
# configuration picks the native route and the compiler).
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
echo "build: default (cargo build --release)" | tee -a "$LOG" >&2
step build-dam cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin dam
DAM=$ROOT/target/release/dam
LIBDIR=$(dirname "$(ls -t "$ROOT"/target/release/build/llama-cpp-sys-2-*/out/lib/libllama.a | head -1)")
step build-baseline cc -O2 -march=native "$ROOT/benches/baseline.c" -I"$LIBDIR/../include" -L"$LIBDIR" \
    -Wl,--start-group -lllama -lggml -lggml-cpu -lggml-base -Wl,--end-group \
    -lstdc++ -lm -fopenmp -lpthread -o "$WORK/baseline"
step build-membw cc -O3 -march=native -fopenmp "$ROOT/benches/membw.c" -o "$WORK/membw"
step build-peak cc -O2 -march=native -fopenmp "$ROOT/benches/peak.c" -o "$WORK/peak"
step build-batch-decode cc -O2 -march=native "$ROOT/benches/batch_decode.c" -I"$LIBDIR/../include" -L"$LIBDIR" \
    -Wl,--start-group -lllama -lggml -lggml-cpu -lggml-base -Wl,--end-group \
    -lstdc++ -lm -fopenmp -lpthread -o "$WORK/batch_decode"

# ---------------------------------------------------------------- models
M=$WORK/models
mkdir -p "$M"
L16=$M/dam3b-llm-f16.gguf
V16=$M/dam3b-vision-f16.gguf
if [[ ${REUSE:-0} != 1 || ! -f $L16 || ! -f $V16 ]]; then
    # Peak memory of the streaming writer (GNU time's maximum RSS, KiB).
    step synth-f16 /usr/bin/time -f %M -o "$J/synth-rss-kib" \
        "$DAM" synth --preset "$PRESET" --type f16 --seed 1 --name dam3b --outdir "$M" > /dev/null
fi
q() { # q IN OUT TYPE
    if [[ ${REUSE:-0} != 1 || ! -f $2 ]]; then
        step "quantize-$(basename "$2" .gguf)" "$DAM" quantize -t "$THREADS" "$1" "$2" "$3" > /dev/null
    fi
}
q "$L16" "$M/dam3b-llm-q8_0.gguf" q8_0
q "$V16" "$M/dam3b-vision-q8_0.gguf" q8_0
q "$L16" "$M/dam3b-llm-q4_k.gguf" q4_k
q "$V16" "$M/dam3b-vision-q4_k.gguf" q4_k
q "$V16" "$M/dam3b-vision-bf16.gguf" bf16

# ---------------------------------------------------------------- measurements
have() { [[ ${RESUME:-0} == 1 && -s $1 ]]; } # measured by an interrupted run
have "$J/membw.json" || step membw sh -c "'$WORK/membw' 2048 '$THREADS' > '$J/membw.json'"
# Arithmetic peak (f32 FMA, int8 as ggml's AVX2 kernels multiply); x86 with
# AVX2 only: elsewhere it exits 2 and the report leaves it out.
have "$J/peak.json" || step peak sh -c "'$WORK/peak' '$THREADS' > '$J/peak.json' || rm -f '$J/peak.json'"
warm() { cat "$@" > /dev/null; } # page cache
for ty in f16 q8_0 q4_k; do
    warm "$M/dam3b-llm-$ty.gguf" "$M/dam3b-vision-$ty.gguf"
    have "$J/dam-$ty.json" || step "dam-$ty" sh -c "'$DAM' bench --llm '$M/dam3b-llm-$ty.gguf' --vision '$M/dam3b-vision-$ty.gguf' \
        -i '$IMG' --mask '$MASK' -n $TOKENS -t $THREADS > '$J/dam-$ty.json'"
    have "$J/base-$ty.json" || step "baseline-$ty" sh -c "'$WORK/baseline' '$M/dam3b-llm-$ty.gguf' $THREADS $BASE_TOKENS $N_IMG \"\$0\" > '$J/base-$ty.json'" "$PROMPT"
    # The low-memory mode's peak RSS (--no-repack --kv-type q8_0): a
    # caption of the same length as the default run's. (The tiny preset's
    # 16-wide heads cannot have a q8_0 cache.)
    if [[ $PRESET != tiny ]]; then
        have "$J/dam-$ty-lowmem.json" || step "dam-$ty-low-memory" sh -c "'$DAM' bench --low-memory --llm '$M/dam3b-llm-$ty.gguf' \
            --vision '$M/dam3b-vision-$ty.gguf' -i '$IMG' --mask '$MASK' -n ${LOWMEM_TOKENS:-$TOKENS} -t $THREADS > '$J/dam-$ty-lowmem.json'"
    fi
done
warm "$M/dam3b-vision-bf16.gguf"
have "$J/vision-bf16.json" || step vision-bf16 sh -c "'$DAM' bench --vision-only --vision '$M/dam3b-vision-bf16.gguf' -i '$IMG' --mask '$MASK' \
    -t $THREADS > '$J/vision-bf16.json'"
# Before/after of the repacking (AMX tiles, padded MLPs) at q8_0.
warm "$M/dam3b-vision-q8_0.gguf"
have "$J/vision-q8_0-norepack.json" || step vision-q8_0-no-repack sh -c "'$DAM' bench --vision-only --no-repack \
    --vision '$M/dam3b-vision-q8_0.gguf' -i '$IMG' --mask '$MASK' -t $THREADS > '$J/vision-q8_0-norepack.json'"
warm "$M/dam3b-llm-q4_k.gguf" "$M/dam3b-vision-q4_k.gguf"
have "$J/dam-q4_k-t1.json" || step dam-q4_k-1thread sh -c "'$DAM' bench --llm '$M/dam3b-llm-q4_k.gguf' --vision '$M/dam3b-vision-q4_k.gguf' \
    -i '$IMG' --mask '$MASK' -n ${T1_TOKENS:-8} -t 1 > '$J/dam-q4_k-t1.json'"
# Many regions: 4 regions of one image as 4 sequential calls and as one
# describe_many batch (q4_k LLM, bf16 vision).
warm "$M/dam3b-llm-q4_k.gguf" "$M/dam3b-vision-bf16.gguf"
have "$J/dam-batch4.json" || step dam-batch4 sh -c "'$DAM' bench --llm '$M/dam3b-llm-q4_k.gguf' --vision '$M/dam3b-vision-bf16.gguf' \
    -i '$IMG' --mask '$MASK' -n ${BATCH_TOKENS:-32} -t $THREADS --regions 4 > '$J/dam-batch4.json'"
# What a batch of 4 sequences gains over one in llama.cpp alone (the q4_k
# LLM): the bound on batching captions (describe_many, dam serve).
for b in 1 4; do
    have "$J/batch-decode-$b.json" || step "batch-decode-$b" sh -c "'$WORK/batch_decode' '$M/dam3b-llm-q4_k.gguf' $THREADS $b \
        ${BATCH_STEPS:-16} 64 > '$J/batch-decode-$b.json'"
done
# The same vision stage in PyTorch (benches/torch_vision.py) on the f16 file's
# weights, in bf16 and f32: needs a Python with torch, numpy and gguf
# (TORCH_PYTHON, default python3); skipped otherwise.
TORCH_PYTHON=${TORCH_PYTHON:-python3}
if "$TORCH_PYTHON" -c "import torch, gguf, numpy" 2>/dev/null; then
    for dt in bf16 f32; do
        have "$J/torch-$dt.json" || step "torch-vision-$dt" sh -c "'$TORCH_PYTHON' '$ROOT/benches/torch_vision.py' bench \
            --vision '$V16' --dtype $dt --threads $THREADS --runs 2 --warmup 1 > '$J/torch-$dt.json'"
    done
else
    echo "no torch in $TORCH_PYTHON: the PyTorch vision comparison is skipped" | tee -a "$LOG"
fi
# The whole request in PyTorch (benches/torch_pipeline.py: the vision stage, then
# transformers' LlamaForCausalLM prefilled with the image rows spliced in, then
# greedy decode), on the f16 files' weights with dam's prompt length: the anchor
# for the time-to-first-token ratios. Needs transformers too.
if "$TORCH_PYTHON" -c "import torch, gguf, numpy, transformers" 2>/dev/null; then
    TEXT_TOKENS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['runs'][0]['prompt_tokens'] - $N_IMG)" "$J/dam-f16.json")
    for dt in bf16 f32; do
        have "$J/torch-pipeline-$dt.json" || step "torch-pipeline-$dt" sh -c "'$TORCH_PYTHON' '$ROOT/benches/torch_pipeline.py' \
            --llm '$L16' --vision '$V16' --dtype $dt --threads $THREADS --tokens $TOKENS --text-tokens $TEXT_TOKENS \
            --runs 1 --warmup 1 > '$J/torch-pipeline-$dt.json'"
    done
else
    echo "no torch + transformers in $TORCH_PYTHON: the PyTorch pipeline comparison is skipped" | tee -a "$LOG"
fi
T_END=$(date +%s)

# ---------------------------------------------------------------- report
python3 - "$J" "$M" "$THREADS" "$TOKENS" "$BASE_TOKENS" "$((T_END - T_START))" "$LOG" <<'EOF' | tee "$WORK/report.md"
import json, os, sys
J, M, threads, tokens, base_tokens, wall, log = sys.argv[1:8]
ld = lambda n: json.load(open(os.path.join(J, n)))
bw = ld("membw.json")
read_bw = max(bw["read_gbs"].values())
dam = {t: ld(f"dam-{t}.json") for t in ("f16", "q8_0", "q4_k")}
base = {t: ld(f"base-{t}.json") for t in ("f16", "q8_0", "q4_k")}
vb = ld("vision-bf16.json")
t1 = ld("dam-q4_k-t1.json")
GB = 1e9
# DAM-3B's KV cache: 32 layers x (K + V) x 2560 x 2 bytes (f16) per position.
KV_PER_POS = 32 * 2 * 2560 * 2
p = print


def lat64(total_ms, generated, decode_ms, steps):
    """A 64-token caption's latency: fewer tokens measured get the missing
    steps at the measured decode rate."""
    return total_ms + (64 - generated) * decode_ms / max(steps, 1)


rss_file = os.path.join(J, "synth-rss-kib")
if os.path.exists(rss_file):
    files = sum(os.path.getsize(os.path.join(M, f)) for f in ("dam3b-llm-f16.gguf", "dam3b-vision-f16.gguf"))
    p(f"`dam synth` at f16: {files / GB:.2f} GB written with a peak RSS of "
      f"{int(open(rss_file).read().split()[-1]) * 1024 / GB:.2f} GB.")
    p()
p(f"Threads: {threads}. Greedy captions; tokens per run are in the tables. "
  f"Image: 2048x1365 photo (tests/fixtures/geom c1), context provider applied: "
  f"{dam['f16']['runs'][0]['context_provider_applied']}. Script wall time: {int(wall)} s.")
p()
p(f"Memory read bandwidth (membw, {bw['bytes'] / 2**30:.0f} GiB buffer, best of 5): "
  + ", ".join(f"{k} thread(s) {v:.1f} GB/s" for k, v in bw["read_gbs"].items())
  + f"; memcpy {bw['memcpy_gbs']:.1f} GB/s (read + write).")
if os.path.exists(os.path.join(J, "peak.json")):
    pk = ld("peak.json")
    p()
    p("Arithmetic peak (benches/peak.c, best of 5, no memory traffic): f32 FMA "
      + ", ".join(f"{k} thread(s) {v:.1f} GFLOP/s" for k, v in pk["f32_gflops"].items())
      + "; int8 products as ggml's AVX2 kernels do them (maddubs + madd) "
      + ", ".join(f"{k} thread(s) {v:.1f} Gop/s" for k, v in pk["int8_gops"].items()) + ".")
p()
p("### LLM: dam vs the plain llama.cpp baseline (same GGUF, same prompt: "
  f"{dam['f16']['runs'][0]['prompt_tokens']} positions = image rows + "
  f"{base['f16']['text_tokens']} text tokens)")
p()
p("| LLM type | LLM file | dam prefill tok/s | baseline prefill tok/s | ratio | dam decode tok/s (steps) | baseline decode tok/s (steps) | ratio | bound tok/s | dam / bound |")
p("|---|---|---|---|---|---|---|---|---|---|")
for t in ("f16", "q8_0", "q4_k"):
    r, b = dam[t]["runs"][0], base[t]
    assert r["prompt_tokens"] == b["prompt_tokens"], (r["prompt_tokens"], b["prompt_tokens"])
    per_tok = dam[t]["llm_weight_bytes_per_token"] + KV_PER_POS * (r["prompt_tokens"] + r["decode_steps"] / 2)
    bound = read_bw * GB / per_tok
    p(f"| {t} | {dam[t]['llm_file_bytes'] / GB:.2f} GB | {r['prefill_tokens_per_s']:.1f} | {b['prefill_tokens_per_s']:.1f} | "
      f"{r['prefill_tokens_per_s'] / b['prefill_tokens_per_s']:.2f} | {r['decode_tokens_per_s']:.2f} ({r['decode_steps']}) | "
      f"{b['decode_tokens_per_s']:.2f} ({b['decode_steps']}) | {r['decode_tokens_per_s'] / b['decode_tokens_per_s']:.2f} | "
      f"{bound:.2f} | {r['decode_tokens_per_s'] / bound:.2f} |")
p()
p(f"Bound = {read_bw:.1f} GB/s / (bytes of every LLM weight but the token embedding + the KV cache read at the mean position).")
p()
p("### Vision stage (preprocess excluded: both 384 px views -> SigLIP x2 + 26 cross-attention blocks + projector)")
p()
p("| vision type | file | repacked matrices | vision ms | preprocess ms |")
p("|---|---|---|---|---|")
vn = ld("vision-q8_0-norepack.json")
rows = [("f16", dam["f16"], dam["f16"]["runs"][0]), ("bf16", vb, vb["runs"][0]),
        ("q8_0", dam["q8_0"], dam["q8_0"]["runs"][0]), ("q8_0, --no-repack", vn, vn["runs"][0]),
        ("q4_k", dam["q4_k"], dam["q4_k"]["runs"][0])]
for t, d, r in rows:
    p(f"| {t} | {d['vision_file_bytes'] / GB:.2f} GB | {d.get('vision_repacked_matrices', 0)} | "
      f"{r['vision_ms']:.0f} | {r['preprocess_ms']:.0f} |")
p()
p(f"### End to end (`dam bench`, one request after load; both files in the page cache)")
p()
p(f"| type (both files) | files | load-to-ready ms | time to first token ms | caption ms (tokens) | 64-token caption ms | peak RSS | RSS / files |")
p("|---|---|---|---|---|---|---|---|")
for t in ("f16", "q8_0", "q4_k"):
    d, r = dam[t], dam[t]["runs"][0]
    files = d["llm_file_bytes"] + d["vision_file_bytes"]
    n = r["generated_tokens"]
    l64 = lat64(r["total_ms"], n, r["decode_ms"], r["decode_steps"])
    est = "" if n == 64 else " (extrapolated)"
    p(f"| {t} | {files / GB:.2f} GB | {d['ready_ms']:.0f} | {r['ttft_ms']:.0f} | {r['total_ms']:.0f} ({n}) | "
      f"{l64:.0f}{est} | {d['peak_rss_bytes'] / GB:.2f} GB | {d['peak_rss_bytes'] / files:.2f} |")
p()
p()
if all(os.path.exists(os.path.join(J, f"dam-{t}-lowmem.json")) for t in dam):
    p("### Memory: peak RSS per preset, defaults vs `--low-memory` (`--no-repack --kv-type q8_0`)")
    p()
    p("| type (both files) | files | default peak RSS (tokens) | RSS / files | --low-memory peak RSS (tokens) | RSS / files |")
    p("|---|---|---|---|---|---|")
    for t in dam:
        d, lm = dam[t], ld(f"dam-{t}-lowmem.json")
        files = d["llm_file_bytes"] + d["vision_file_bytes"]
        p(f"| {t} | {files / GB:.2f} GB | {d['peak_rss_bytes'] / GB:.2f} GB ({d['runs'][0]['generated_tokens']}) | "
          f"{d['peak_rss_bytes'] / files:.2f} | {lm['peak_rss_bytes'] / GB:.2f} GB ({lm['runs'][0]['generated_tokens']}) | "
          f"{lm['peak_rss_bytes'] / files:.2f} |")
    p()
p("Baseline load-to-ready (LLM file only): " + ", ".join(f"{t} {base[t]['ready_ms']:.0f} ms" for t in base) + ".")
p()
p("### Threads (q4_k: a short request at 1 thread vs the q4_k run above)")
p()
a, b = t1["runs"][0], dam["q4_k"]["runs"][0]
p(f"| stage | 1 thread | {threads} threads | speed-up |")
p("|---|---|---|---|")
p(f"| vision ms | {a['vision_ms']:.0f} | {b['vision_ms']:.0f} | {a['vision_ms'] / b['vision_ms']:.2f} |")
p(f"| prefill tok/s | {a['prefill_tokens_per_s']:.1f} | {b['prefill_tokens_per_s']:.1f} | {b['prefill_tokens_per_s'] / a['prefill_tokens_per_s']:.2f} |")
p(f"| decode tok/s | {a['decode_tokens_per_s']:.2f} | {b['decode_tokens_per_s']:.2f} | {b['decode_tokens_per_s'] / a['decode_tokens_per_s']:.2f} |")
p(f"| membw GB/s | {bw['read_gbs']['1']:.1f} | {read_bw:.1f} | {read_bw / bw['read_gbs']['1']:.2f} |")
p()
bt = ld("dam-batch4.json")["batches"][0]
p(f"### Many regions: {bt['regions']} regions of one image, q4_k LLM + bf16 vision, {bt['tokens']} tokens in all")
p()
p("| | 4 sequential `describe` calls | one `describe_many` | ratio |")
p("|---|---|---|---|")
p(f"| total ms | {bt['sequential_ms']:.0f} | {bt['batched_ms']:.0f} | {bt['throughput_ratio']:.2f} |")
p(f"| vision ms | {bt['sequential_vision_ms']:.0f} | {bt['batched_vision_ms']:.0f} | {bt['sequential_vision_ms'] / bt['batched_vision_ms']:.2f} |")
p(f"| decode ms | {bt['sequential_decode_ms']:.0f} | {bt['batched_decode_ms']:.0f} | {bt['sequential_decode_ms'] / max(bt['batched_decode_ms'], 1e-9):.2f} |")
p()
p(f"Captions equal to the single calls: {bt['equal_to_single_calls']}.")
p()
bd = {b: ld(f"batch-decode-{b}.json") for b in (1, 4)}
p("llama.cpp alone (benches/batch_decode.c, q4_k LLM, 64 positions per sequence): "
  f"{bd[1]['tok_s']:.2f} tok/s for one sequence, {bd[4]['tok_s']:.2f} for 4 in parallel "
  f"({bd[4]['tok_s'] / bd[1]['tok_s']:.2f}x): the most batching can gain in decode here.")
p()
if os.path.exists(os.path.join(J, "torch-bf16.json")):
    tv = {dt: ld(f"torch-{dt}.json") for dt in ("bf16", "f32")}
    best = min(r["vision_ms"] for r in (dam["f16"]["runs"][0], vb["runs"][0], dam["q8_0"]["runs"][0], dam["q4_k"]["runs"][0]))
    p("### Vision stage vs PyTorch (benches/torch_vision.py, same weights, CPU)")
    p()
    p(f"| PyTorch {tv['bf16']['torch_version']} | min ms | dam's best (f16 / bf16 / q8_0 / q4_k) ms | dam speed-up |")
    p("|---|---|---|---|")
    for dt in ("bf16", "f32"):
        p(f"| {dt} | {tv[dt]['min_ms']:.0f} | {best:.0f} | {tv[dt]['min_ms'] / best:.2f} |")
    p()
if os.path.exists(os.path.join(J, "torch-pipeline-bf16.json")):
    tp = {dt: ld(f"torch-pipeline-{dt}.json") for dt in ("bf16", "f32")}
    p(f"### Whole request vs PyTorch (benches/torch_pipeline.py: torch {tp['bf16']['torch_version']}, "
      f"transformers {tp['bf16']['transformers_version']}, same f16 weights, {tp['bf16']['prompt_positions']} positions)")
    p()
    p("| run | vision ms | prefill ms | prefill tok/s | time to first token ms | decode tok/s | 64-token caption ms |")
    p("|---|---|---|---|---|---|---|")
    rows = {}
    for dt in ("bf16", "f32"):
        r = tp[dt]["min"]  # the prefill gives the first token, then decode_steps
        rows[f"PyTorch {dt}"] = (r["vision_ms"], r["prefill_ms"], tp[dt]["prompt_positions"], r["ttft_ms"],
                                 r["decode_tokens_per_s"],
                                 lat64(r["total_ms"], r["decode_steps"] + 1, r["decode_ms"], r["decode_steps"]))
    for t in ("f16", "q8_0", "q4_k"):
        r = dam[t]["runs"][0]
        rows[f"dam {t}"] = (r["vision_ms"], r["prefill_ms"], r["prompt_tokens"], r["ttft_ms"],
                            r["decode_tokens_per_s"],
                            lat64(r["total_ms"], r["generated_tokens"], r["decode_ms"], r["decode_steps"]))
    for name, (v, pf, n, ttft, dec, l64) in rows.items():
        p(f"| {name} | {v:.0f} | {pf:.0f} | {n * 1e3 / pf:.1f} | {ttft:.0f} | {dec:.2f} | {l64:.0f} |")
    p()
    torch_best = lambda i: min(v[i] for k, v in rows.items() if k.startswith("PyTorch"))
    dam_best = lambda i: min(v[i] for k, v in rows.items() if k.startswith("dam"))
    p(f"Ratios against PyTorch's faster dtype (issue #15 goals): vision speed-up "
      f"{torch_best(0) / dam_best(0):.2f}x (goal >= 1.5), prefill speed-up {torch_best(1) / dam_best(1):.2f}x "
      f"(goal >= 1.2), time to first token dam / PyTorch {dam_best(3) / torch_best(3):.2f} (goal <= 0.6), "
      f"the dam rows' best of each column. dam's time to first token includes preprocessing the photo; "
      f"PyTorch's starts from ready views.")
    p()
p("### Step times")
p()
p("```")
p(open(log).read().rstrip())
p("```")
EOF

if [[ ${KEEP:-0} != 1 ]]; then
    rm -rf "$M"
fi
