#!/usr/bin/env python3
"""PyTorch anchor for dam's whole pipeline: vision stage, prefill, greedy decode.

The time-to-first-token comparison of issue #15 needs the same request run end to
end in PyTorch on the same weights, in one benchmark run:

  1. the vision stage of benches/torch_vision.py (SigLIP tower with the mask patch
     embedding, gated cross-attention context provider, projector) on random full
     and focal views, from dam's vision GGUF;
  2. the LLM as transformers' `LlamaForCausalLM`, its weights read from dam's LLM
     GGUF (llama.cpp's names; the Q/K rows un-permuted back to the Hugging Face
     layout), prefilled through `inputs_embeds` with the image rows spliced into
     the prompt's token embeddings where `<image>` stands, as DAM does;
  3. greedy decode with the KV cache (one token per step, `DynamicCache`), for a
     fixed number of steps (EOS ignored, as `dam bench` with random weights).

Only the sizes matter for speed: the text tokens are `--text-tokens` random ids
(default 44: dam's DAM prompt around `<image>`, which `dam bench` reports as
prompt_tokens - image rows), the views are random like torch_vision's bench.

    benches/torch_pipeline.py --llm L-f16.gguf --vision V-f16.gguf --dtype bf16 \\
        --threads 2 --tokens 64 --runs 2 --warmup 1

Prints one JSON line (progress on stderr):
  {"torch_version", "transformers_version", "dtype", "threads", "load_s",
   "image_rows", "prompt_positions", "runs": [{"vision_ms", "prefill_ms",
   "ttft_ms", "decode_ms", "decode_steps", "decode_tokens_per_s", "total_ms"}],
   "min": {same keys: the minimum over runs}, "llm_file", "vision_file"}

Requirements: torch, transformers, numpy, gguf (quantized files need gguf; F32,
F16 and BF16 files are read by torch_vision's built-in reader without it).
"""
import argparse
import inspect
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_vision as tv  # noqa: E402  (sibling module: the vision stage and GGUF readers)

try:
    import transformers
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
except ImportError as e:
    raise SystemExit(f"error: torch_pipeline.py needs transformers ({e})")

DTYPES = tv.DTYPES
# transformers 5.x renames the KV-cache argument (`past_key_values` -> `cache`).
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters \
    else "past_key_values"


def llm_config(meta):
    """transformers' LlamaConfig from the LLM file's llama.* keys (gguf/llm.rs)."""
    def k(name, default=None):
        v = meta.get(f"llama.{name}", default)
        if v is None:
            raise SystemExit(f"error: key llama.{name} missing from the LLM file")
        return v

    if meta.get("general.architecture") != "llama":
        raise SystemExit(f"error: LLM file architecture {meta.get('general.architecture')!r}, "
                         f"expected 'llama'")
    hidden = int(k("embedding_length"))
    heads = int(k("attention.head_count"))
    vocab = meta.get("llama.vocab_size")
    if vocab is None:
        vocab = len(meta["tokenizer.ggml.tokens"])
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(k("feed_forward_length")),
        num_hidden_layers=int(k("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(k("attention.head_count_kv", heads)),
        head_dim=int(k("attention.key_length", hidden // heads)),
        max_position_embeddings=int(k("context_length")),
        rms_norm_eps=float(k("attention.layer_norm_rms_epsilon")),
        rope_theta=float(k("rope.freq_base", 10000.0)),
        tie_word_embeddings=False,
    )


def unpermute(w, n_head):
    """The inverse of llama.cpp's Q/K row permutation (gguf/llm.rs permute_rows):
    back to the Hugging Face rotary layout."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


# llama.cpp tensor name -> LlamaForCausalLM state-dict name ({i}: the block).
NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def hf_name(name):
    if name in NAMES:
        return NAMES[name], None
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "blk" and parts[1].isdigit():
        key = ".".join(["blk", "{i}"] + parts[2:])
        if key in NAMES:
            return NAMES[key].format(i=parts[1]), parts[2]
    raise SystemExit(f"error: unexpected LLM tensor {name}")


def load_llm(path, dtype):
    """LlamaForCausalLM in `dtype` with the LLM file's weights (one tensor at a time,
    so peak memory stays near the model's size)."""
    meta, tensors = tv.read_gguf(path)
    cfg = llm_config(meta)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    state = {}
    for name, t in tensors:
        key, part = hf_name(name)
        if part == "attn_q":
            t = unpermute(t, cfg.num_attention_heads)
        elif part == "attn_k":
            t = unpermute(t, cfg.num_key_value_heads)
        state[key] = t.to(dtype)
    if "lm_head.weight" not in state:  # tied head, as llama.cpp reads it
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing = set(model.state_dict().keys()) - set(state)
    if missing:
        raise SystemExit(f"error: the LLM file lacks {sorted(missing)[:4]} ...")
    model.load_state_dict(state, assign=True, strict=True)
    # Buffers (rotary inv_freq) were created on the meta device: rebuild them.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg)
    return model.eval(), cfg


def run_once(vm, llm, cfg, args, full, focal, applied, ids, image_at):
    """One request: (vision_ms, prefill_ms, decode_ms, steps)."""
    t0 = time.perf_counter()
    _, _, emb = vm.encode(full, focal, applied)  # [1, T, H] image rows
    t1 = time.perf_counter()
    embed = llm.model.embed_tokens
    text = embed(ids)
    rows = emb.to(text.dtype).reshape(1, -1, cfg.hidden_size)
    x = torch.cat([text[:, :image_at], rows, text[:, image_at:]], dim=1)
    cache = DynamicCache()
    out = llm(inputs_embeds=x, use_cache=True, logits_to_keep=1, **{CACHE_ARG: cache})
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    for _ in range(args.tokens - 1):
        out = llm(input_ids=nxt, use_cache=True, **{CACHE_ARG: cache})
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t3 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, args.tokens - 1, x.shape[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", required=True, help="dam LLM GGUF (llama architecture)")
    ap.add_argument("--vision", required=True, help="dam vision GGUF")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--tokens", type=int, default=64, help="generated tokens (the first "
                    "comes from the prefill; the rest are decode steps)")
    ap.add_argument("--text-tokens", type=int, default=44,
                    help="prompt text tokens around the image rows")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    if args.runs < 1 or args.tokens < 1 or args.text_tokens < 1:
        ap.error("--runs, --tokens and --text-tokens must be at least 1")
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    t0 = time.perf_counter()
    vm = tv.Vision(args.vision, dtype)
    llm, cfg = load_llm(args.llm, dtype)
    load_s = time.perf_counter() - t0
    tv.log(f"loaded {args.vision} and {args.llm} as {args.dtype} in {load_s:.1f} s "
           f"({cfg.num_hidden_layers} layers x {cfg.hidden_size})")

    full, focal = tv.random_views(vm.S, 1)
    applied = torch.ones(1, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, args.text_tokens), generator=gen)
    image_at = max(1, args.text_tokens - 12)  # "... USER: <image>\nDescribe ..."
    runs = []
    with torch.inference_mode():
        for r in range(args.warmup + args.runs):
            v, p, d, steps, positions = run_once(vm, llm, cfg, args, full, focal, applied,
                                                 ids, image_at)
            row = {"vision_ms": round(v, 1), "prefill_ms": round(p, 1),
                   "ttft_ms": round(v + p, 1), "decode_ms": round(d, 1),
                   "decode_steps": steps,
                   "decode_tokens_per_s": round(steps * 1e3 / d, 2) if steps else 0.0,
                   "total_ms": round(v + p + d, 1)}
            warm = r < args.warmup
            tv.log(f"{'warmup' if warm else 'run'}: {row}")
            if not warm:
                runs.append(row)
    best = {k: (max if k == "decode_tokens_per_s" else min)(r[k] for r in runs)
            for k in runs[0]}
    print(json.dumps({
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "dtype": args.dtype, "threads": args.threads, "load_s": round(load_s, 2),
        "image_rows": ((vm.g + 1) // 2) ** 2, "prompt_positions": positions,
        "runs": runs, "min": best,
        "llm_file": os.path.abspath(args.llm), "vision_file": os.path.abspath(args.vision),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
