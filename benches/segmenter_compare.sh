#!/usr/bin/env bash
# The segmenters against their official PyTorch code, in one command:
#
#   TORCH_PYTHON=/path/to/venv/bin/python benches/segmenter_compare.sh [WORKDIR]
#
# For MobileSAM (mobile_sam's build_sam_vit_t + SamPredictor) and SAM ViT-B
# (transformers' SamModel + SamProcessor), with seeded random weights of the
# real sizes (benches/torch_segmenter.py make): converts each checkpoint with
# `dam convert` (f32, f16, q8_0), then alternates `dam bench --segmenter-only`
# and benches/torch_segmenter.py bench on the same 2048x1365 photo and click,
# ROUNDS times (the machine's noise shows in the spread), and prints a
# markdown table of the medians: preprocessing, image encoder, decoder, a
# whole first click, and a re-click on the cached image. The JSON of every
# run stays in WORKDIR/json/ (default WORKDIR: target/segmenter-compare).
#
# Knobs: TORCH_PYTHON (a Python with torch, transformers, safetensors,
# pillow, numpy and mobilesam-mirror: see tests/fixtures/gen_mobilesam.py),
# ROUNDS (default 3), THREADS (default: nproc), MODELS (default
# "mobilesam sam-vit-b"), TYPES (default "f32 f16 q8_0"), POINT (default: the
# image centre, "x,y").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$ROOT/target/segmenter-compare}
PY=${TORCH_PYTHON:?set TORCH_PYTHON to a Python with torch and mobilesam-mirror}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}
MODELS=${MODELS:-mobilesam sam-vit-b}
TYPES=${TYPES:-f32 f16 q8_0}
IMG=$ROOT/tests/fixtures/geom/cases/c1_image.png
POINT=${POINT:-1024,682}
J=$WORK/json
mkdir -p "$J" "$WORK/ckpt" "$WORK/gguf"

cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin dam >&2
DAM=$ROOT/target/release/dam

for m in $MODELS; do
    [[ -s $WORK/ckpt/$m/model.safetensors ]] ||
        "$PY" "$ROOT/benches/torch_segmenter.py" make --model "$m" --out "$WORK/ckpt/$m" >&2
    for ty in $TYPES; do
        [[ -s $WORK/gguf/$m-segmenter-$ty.gguf ]] ||
            "$DAM" convert "$WORK/ckpt/$m" --outdir "$WORK/gguf" --type "$ty" --name "$m" >&2
    done
done

for r in $(seq 1 "$ROUNDS"); do
    for m in $MODELS; do
        echo "round $r: $m" >&2
        for ty in $TYPES; do
            "$DAM" bench --segmenter "$WORK/gguf/$m-segmenter-$ty.gguf" --segmenter-only \
                -i "$IMG" --points "$POINT" -t "$THREADS" --runs 1 --warmup 1 > "$J/dam-$m-$ty-$r.json"
        done
        "$PY" "$ROOT/benches/torch_segmenter.py" bench --model "$m" --ckpt "$WORK/ckpt/$m" \
            -i "$IMG" --points "$POINT" --threads "$THREADS" --runs 1 --warmup 1 \
            > "$J/torch-$m-$r.json" 2> /dev/null
    done
done

"${PY}" - "$J" "$MODELS" "$TYPES" "$THREADS" << 'EOF' | tee "$WORK/report.md"
import glob, json, statistics, sys
jdir, models, types, threads = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
stages = ["preprocess_ms", "encode_ms", "decode_ms", "first_click_ms", "reclick_ms"]
print(f"CPU: {cpu}, {threads} threads. Medians (ms) over rounds; each run after one warm-up.\n")
for m in models:
    rows = {}
    torch_runs = [json.load(open(f))["runs"][0] for f in sorted(glob.glob(f"{jdir}/torch-{m}-*.json"))]
    tv = json.load(open(sorted(glob.glob(f"{jdir}/torch-{m}-*.json"))[0]))["torch_version"]
    rows[f"PyTorch {tv} f32"] = torch_runs
    for ty in types:
        rows[f"dam {ty}"] = [json.load(open(f))["runs"][0] for f in sorted(glob.glob(f"{jdir}/dam-{m}-{ty}-*.json"))]
    print(f"### {m} ({len(torch_runs)} rounds)\n")
    print("| | " + " | ".join(s[:-3] for s in stages) + " | best index, IoU[best] |")
    print("|---|" + "---|" * (len(stages) + 1))
    ref = {s: statistics.median(r[s] for r in torch_runs) for s in stages}
    for name, runs in rows.items():
        med = {s: statistics.median(r[s] for r in runs) for s in stages}
        cells = [f"{med[s]:.0f}" + ("" if name.startswith("PyTorch") else f" ({ref[s] / med[s]:.2f}x)") for s in stages]
        r0 = runs[0]
        print(f"| {name} | " + " | ".join(cells) + f" | {r0['best_index']}, {r0['iou_scores'][r0['best_index']]:.6f} |")
    print("\n(x): PyTorch's median time / dam's: above 1 is faster than PyTorch.\n")
EOF
