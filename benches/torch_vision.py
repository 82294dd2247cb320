#!/usr/bin/env python3
"""PyTorch (CPU) reference of dam's vision stage, reading dam's own vision GGUF.

The vision stage of one image: its full and focal views (4 x S x S each: RGB + mask)
-> SigLIP tower with the mask patch embedding (full view -> Z) -> the same tower with
a gated cross-attention block after every layer, keys/values from Z (focal view -> F;
skipped, F = Z, when the focal view equals the full view) -> `mlp_downsample`
projector -> T x H LLM embeddings (196 x 2560 for DAM-3B). The math is
shared/MODEL.md sections 2-4; the file layout is gguf/README.md.

Like dam, all images are batched: every full view goes through the tower as one
batch, then the focal views of the images that need the context provider as one
batch (they need Z, so the two views cannot share a batch), then one projector call.

Modes:

  check  Runs this implementation (f32) on the pixel values of a `dam dump` file and
         compares Z, F and the projector output with dam's; exits 1 if any error
         max|ours - dam| / max(1, max|dam|) exceeds 1e-5. A bf16 run of the same
         input is printed for information.

           dam dump -m MODEL_DIR -i IMG.png --mask MASK.png --out D.safetensors
           benches/torch_vision.py check --vision MODEL_DIR/NAME-vision-f32.gguf --dump D.safetensors

  bench  Times the stage from pixel tensors to embeddings (what dam reports as
         `vision_ms`) on random views whose focal view differs from the full one,
         so the context provider always runs. Prints one JSON line on stdout
         (progress on stderr):
           {"torch_version", "dtype", "threads", "load_s", "runs_ms", "min_ms",
            "median_ms", "images", "vision_file"}

           benches/torch_vision.py bench --vision V.gguf --dtype bf16 --threads 16 \\
               --runs 5 --warmup 1 [--images 1]

Weights are converted once at load to the requested dtype, all of them (norms,
biases and position embeddings included), as `model.to(dtype)` would do in a
PyTorch deployment; the two scalar gates are Python floats. Needs torch, numpy and
gguf (pip install torch numpy gguf); dump files are read without `safetensors`.
"""
import argparse
import json
import os
import re
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import gguf
from gguf import GGMLQuantizationType as QT

TOL = 1e-5
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
ACTS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}  # -> F.gelu(approximate=...)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ loading
def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        raise SystemExit(f"error: key {key} missing from the vision file")
    return f.contents()


def tensor_to_numpy(t):
    """A GGUF tensor as an f32 numpy array in PyTorch order (ggml ne reversed)."""
    shape = tuple(reversed([int(x) for x in t.shape]))
    if t.tensor_type == QT.F32:
        a = np.array(t.data, dtype=np.float32)
    elif t.tensor_type == QT.F16:
        a = np.asarray(t.data).astype(np.float32)
    else:
        # BF16 and the quantized types come as raw bytes; gguf knows their layouts.
        try:
            a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        except (NotImplementedError, KeyError) as e:
            raise SystemExit(f"error: {t.name}: cannot read type {t.tensor_type.name} ({e})")
    return a.reshape(shape)


class Vision:
    """Hyper-parameters and weights of a `dam-vision` GGUF file, as torch tensors."""

    def __init__(self, path, dtype):
        r = gguf.GGUFReader(path)
        k = lambda name: field(r, name)  # noqa: E731
        for key, want in [("general.architecture", "dam-vision"),
                          ("dam.context.type", "cross_attn_end_to_all"),
                          ("dam.projector.type", "mlp_downsample")]:
            if k(key) != want:
                raise SystemExit(f"error: {key} is {k(key)!r}, only {want!r} is supported")
        self.dtype = dtype
        self.S, self.P = int(k("dam.vision.image_size")), int(k("dam.vision.patch_size"))
        self.C, self.heads = int(k("dam.vision.embedding_length")), int(k("dam.vision.attention.head_count"))
        self.eps = float(k("dam.vision.attention.layer_norm_epsilon"))
        self.ctx_heads = int(k("dam.context.attention.head_count"))
        self.ctx_eps = float(k("dam.context.attention.layer_norm_epsilon"))
        self.masked = bool(k("dam.context.masked_cross_attn"))
        self.proj_eps = float(k("dam.projector.layer_norm_epsilon"))
        self.H = int(k("dam.projector.output_length"))
        self.mean, self.std = list(k("dam.vision.image_mean")), list(k("dam.vision.image_std"))
        self.weight_type = k("dam.vision.weight_type")
        if int(k("dam.vision.num_mask_channels")) != 1:
            raise SystemExit("error: only one mask channel is supported (views are RGB + 1 mask)")
        acts = {}
        for key in ("dam.vision.activation", "dam.context.activation"):
            if k(key) not in ACTS:
                raise SystemExit(f"error: {key} {k(key)!r} is not one of {sorted(ACTS)}")
            acts[key] = ACTS[k(key)]
        self.act, self.ctx_act = acts["dam.vision.activation"], acts["dam.context.activation"]
        # hidden_states = [embeddings, layer 0, ...]: index s >= 0 is after s layers.
        sel, layers = int(k("dam.vision.select_layer")), int(k("dam.vision.block_count"))
        self.L = layers + 1 + sel if sel < 0 else sel
        self.g = self.S // self.P
        self.N = self.g * self.g

        self.w = {}
        self.gates = {}
        for t in r.tensors:
            a = tensor_to_numpy(t)
            if t.name.endswith(("attn_factor", "mlp_factor")):
                self.gates[t.name] = float(a.reshape(-1)[0])
            else:
                self.w[t.name] = torch.from_numpy(a).to(dtype)
        blk = {int(m.group(1)) for n in self.w if (m := re.match(r"v\.blk\.(\d+)\.", n))}
        ctx = {int(m.group(1)) for n in self.w if (m := re.match(r"v\.ctx\.blk\.(\d+)\.", n))}
        if blk != set(range(self.L)) or ctx != set(range(self.L)):
            raise SystemExit(f"error: expected tower layers and context blocks 0..{self.L - 1}, "
                             f"found {sorted(blk)} and {sorted(ctx)}")

    # -------------------------------------------------------------- modules
    def ln(self, x, p, eps):
        return F.layer_norm(x, (x.shape[-1],), self.w[p + ".weight"], self.w[p + ".bias"], eps)

    def lin(self, x, p):
        return F.linear(x, self.w[p + ".weight"], self.w[p + ".bias"])

    def mlp(self, x, p, act):
        return self.lin(F.gelu(self.lin(x, p + ".ffn_up"), approximate=act), p + ".ffn_down")

    def attn(self, xq, xkv, p, heads, bias=None):
        B, Nq, C = xq.shape
        d = C // heads
        split = lambda t: t.view(B, -1, heads, d).transpose(1, 2)  # noqa: E731  [B, h, N, d]
        q = split(self.lin(xq, p + ".attn_q"))
        k = split(self.lin(xkv, p + ".attn_k"))
        v = split(self.lin(xkv, p + ".attn_v"))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale d^-0.5
        return self.lin(o.transpose(1, 2).reshape(B, Nq, C), p + ".attn_out")

    def embed(self, pix):
        """pix [B, 4, S, S] -> [B, N, C]; the stride-P convolution drops S mod P pixels."""
        x = F.conv2d(pix[:, :3], self.w["v.patch_embd.weight"], self.w["v.patch_embd.bias"], stride=self.P)
        x = x + F.conv2d(pix[:, 3:4], self.w["v.mask_patch_embd.weight"], self.w["v.mask_patch_embd.bias"],
                         stride=self.P)
        return x.flatten(2).transpose(1, 2) + self.w["v.position_embd.weight"]

    def layer(self, x, i):
        p = f"v.blk.{i}"
        h = self.ln(x, p + ".ln1", self.eps)
        x = x + self.attn(h, h, p, self.heads)
        return x + self.mlp(self.ln(x, p + ".ln2", self.eps), p, self.act)

    def cross_block(self, x, z, i, bias):
        p = f"v.ctx.blk.{i}"
        h = self.attn(self.ln(x, p + ".ln1", self.ctx_eps), z, p, self.ctx_heads, bias)
        x = x + self.gates[p + ".attn_factor"] * h
        h = self.mlp(self.ln(x, p + ".ln2", self.ctx_eps), p, self.ctx_act)
        return x + self.gates[p + ".mlp_factor"] * h

    def key_bias(self, full_mask):
        """masked_cross_attn: a full-view token is a visible key iff its patch of the
        (un-normalised) mask is not all zero, as dam's `key_mask_bias` and the
        reference's `get_token_mask_bias`. full_mask [A, S, S] normalised -> [A, 1, 1, N]."""
        m01 = full_mask.float() * self.std[0] + self.mean[0]
        n = self.g * self.P
        s = m01[:, :n, :n].reshape(-1, self.g, self.P, self.g, self.P).sum((2, 4)).reshape(-1, 1, 1, self.N)
        zero = torch.zeros((), dtype=self.dtype)
        return torch.where(s >= 1e-5, zero, torch.tensor(float("-inf"), dtype=self.dtype))

    def merge2x2(self, f):
        """[B, g*g, C] -> [B, G*G, 4C], zero-padded to an even grid; token t = p*G + q
        (p column pair, q row pair) = X[2q,2p] | X[2q,2p+1] | X[2q+1,2p] | X[2q+1,2p+1]."""
        B, _, C = f.shape
        g, G = self.g, (self.g + 1) // 2
        x = F.pad(f.view(B, g, g, C), (0, 0, 0, 2 * G - g, 0, 2 * G - g))
        x = x.view(B, G, 2, G, 2, C)  # [b, q, row in pair, p, col in pair, c]
        return x.permute(0, 3, 1, 2, 4, 5).reshape(B, G * G, 4 * C)

    def projector(self, f):
        x = self.ln(self.merge2x2(f), "mm.norm", self.proj_eps)
        return self.lin(F.gelu(self.lin(x, "mm.fc1"), approximate="none"), "mm.fc2")

    # -------------------------------------------------------------- the stage
    def encode(self, full, focal, applied):
        """full, focal [B, 4, S, S] (normalised views), applied [B] bool (context
        provider runs) -> Z [B, N, C], F [B, N, C] (= Z where not applied), [B, T, H]."""
        x = self.embed(full.to(self.dtype))
        for i in range(self.L):
            x = self.layer(x, i)
        z = x
        feats = z
        idx = torch.nonzero(applied).flatten()
        if len(idx):
            za = z[idx]
            bias = self.key_bias(full[idx, 3]) if self.masked else None
            y = self.embed(focal[idx].to(self.dtype))
            for i in range(self.L):
                y = self.cross_block(self.layer(y, i), za, i, bias)
            feats = z.index_copy(0, idx, y)
        return z, feats, self.projector(feats)


# ------------------------------------------------------------------ check
def read_safetensors(path):
    """The F32 tensors of a safetensors file, as numpy arrays."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name != "__metadata__" and info["dtype"] == "F32":
            a, b = info["data_offsets"]
            out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(info["shape"])
    return out


def rel_err(ours, ref):
    ours, ref = ours.double().numpy(), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def check(args):
    dumps = []
    for path in args.dump:
        d = read_safetensors(path)
        dumps.append((os.path.basename(path), d))
    bad = False
    # One dtype at a time: at DAM-3B size two copies of the weights would not be small.
    for name in ("f32", "bf16"):
        vm = Vision(args.vision, DTYPES[name])
        S, N, C = vm.S, vm.N, vm.C
        for base, d in dumps:
            if d["pixel_values"].size % (8 * S * S):
                raise SystemExit(f"error: {base}: pixel_values {list(d['pixel_values'].shape)} "
                                 f"are not 8 x {S} x {S} views (dumped with another model?)")
            # Single images have no frame axis; several frames are stacked on axis 0.
            pix = torch.from_numpy(d["pixel_values"].reshape(-1, 8, S, S).copy())
            nf = pix.shape[0]
            full, focal = pix[:, :4], pix[:, 4:]
            applied = (full != focal).flatten(1).any(1)
            with torch.inference_mode():
                z, f, p = vm.encode(full, focal, applied)
            errs = {"Z": rel_err(z, d["full_features"].reshape(nf, N, C)),
                    "F": rel_err(f, d["crop_features"].reshape(nf, N, C)),
                    "proj": rel_err(p, d["projector_output"].reshape(nf, -1, vm.H))}
            worst = max(errs.values())
            status = ("OK " if worst <= TOL else "BAD") if name == "f32" else "inf"
            bad |= name == "f32" and worst > TOL
            print(f"{status} {name:4s} {base}: frames {nf} "
                  f"context {''.join('1' if a else '0' for a in applied.tolist())} "
                  + " ".join(f"{k}={v:.2e}" for k, v in errs.items()), flush=True)
        del vm
    if bad:
        print(f"FAILED: f32 error above {TOL}", file=sys.stderr)
    return 1 if bad else 0


# ------------------------------------------------------------------ bench
def random_views(S, n, seed=0):
    """n images: random RGB in [-1, 1], mask -1 outside / +1 inside a rectangle; the
    focal view (a zoomed crop) has other pixels and a larger rectangle."""
    gen = torch.Generator().manual_seed(seed)

    def view(r0, r1):
        v = torch.rand(n, 4, S, S, generator=gen) * 2 - 1
        v[:, 3] = -1.0
        v[:, 3, r0:r1, r0:r1] = 1.0
        return v

    return view(S // 4, S // 2), view(S // 3, 2 * S // 3)


def bench(args):
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    vm = Vision(args.vision, DTYPES[args.dtype])
    load_s = time.perf_counter() - t0
    log(f"loaded {args.vision} ({vm.weight_type} -> {args.dtype}) in {load_s:.2f} s: "
        f"S {vm.S}, C {vm.C}, {vm.L} layers, masked {vm.masked}")
    full, focal = random_views(vm.S, args.images)
    applied = torch.ones(args.images, dtype=torch.bool)
    runs = []
    with torch.inference_mode():
        for r in range(args.warmup + args.runs):
            t = time.perf_counter()
            _, _, emb = vm.encode(full, focal, applied)
            ms = (time.perf_counter() - t) * 1e3
            warm = r < args.warmup
            log(f"{'warmup' if warm else 'run'} {r if warm else r - args.warmup}: {ms:.1f} ms "
                f"-> {list(emb.shape)}")
            if not warm:
                runs.append(ms)
    print(json.dumps({
        "torch_version": torch.__version__, "dtype": args.dtype, "threads": args.threads,
        "load_s": round(load_s, 3), "runs_ms": [round(x, 2) for x in runs],
        "min_ms": round(min(runs), 2), "median_ms": round(statistics.median(runs), 2),
        "images": args.images, "vision_file": os.path.abspath(args.vision),
    }), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check", help="compare with a `dam dump` file")
    c.add_argument("--vision", required=True, help="dam vision GGUF (f32 for the 1e-5 check)")
    c.add_argument("--dump", required=True, nargs="+", help="safetensors file(s) from `dam dump`")
    c.add_argument("--threads", type=int, default=torch.get_num_threads())
    b = sub.add_parser("bench", help="time the vision stage")
    b.add_argument("--vision", required=True)
    b.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    b.add_argument("--threads", type=int, default=torch.get_num_threads())
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--images", type=int, default=1)
    args = ap.parse_args()
    if args.mode == "check":
        torch.set_num_threads(args.threads)
        return check(args)
    if args.runs < 1 or args.images < 1:
        ap.error("--runs and --images must be at least 1")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
