#!/usr/bin/env python3
"""PyTorch (CPU or CUDA) reference of dam's vision stage, reading dam's own vision GGUF.

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
         so the context provider always runs. With --device cuda the weights and
         views live on the GPU and each run is bracketed by torch.cuda.synchronize().
         Prints one JSON line on stdout (progress on stderr):
           {"torch_version", "dtype", "device", ["gpu",] "threads", "load_s",
            "runs_ms", "min_ms", "median_ms", "images", "vision_file"}

           benches/torch_vision.py bench --vision V.gguf --dtype bf16 --threads 16 \\
               --runs 5 --warmup 1 [--images 1] [--device cuda]

Weights are converted once at load to the requested dtype, all of them (norms,
biases and position embeddings included), as `model.to(dtype)` would do in a
PyTorch deployment; the two scalar gates are Python floats.

Requirements: torch. `check` also needs numpy, and files with quantized weights
need the gguf package (pip install torch numpy gguf). Without gguf, F32, F16 and
BF16 files are read by a small built-in GGUF reader that gives the same weights;
DAM_TORCH_VISION_NO_GGUF=1 forces that reader (for testing it). Dump files are
read without `safetensors`.
"""
import argparse
import json
import mmap
import os
import re
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

# Optional: a GPU box may have torch only. numpy is needed by `check`, gguf by
# quantized files; F32/F16/BF16 files fall back to read_gguf_builtin().
try:
    import numpy as np
except ImportError:
    np = None
try:
    if os.environ.get("DAM_TORCH_VISION_NO_GGUF") == "1":
        raise ImportError("DAM_TORCH_VISION_NO_GGUF=1")
    import gguf
    from gguf import GGMLQuantizationType as QT
except ImportError:
    gguf = QT = None

TOL = 1e-5
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
ACTS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}  # -> F.gelu(approximate=...)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ loading
def read_gguf(path):
    """(metadata {key: value}, iterator of (name, f32 tensor in PyTorch order)) of a
    GGUF file: through the gguf package when it is there, else read_gguf_builtin().
    Values as gguf's `contents()`: str, int, float, bool, lists for arrays."""
    if gguf is None:
        return read_gguf_builtin(path)
    r = gguf.GGUFReader(path)
    meta = {key: f.contents() for key, f in r.fields.items()}
    return meta, ((t.name, torch.from_numpy(tensor_to_numpy(t))) for t in r.tensors)


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


# GGUF metadata value types with a fixed size -> struct format; 8 string, 9 array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
                10: "Q", 11: "q", 12: "d"}
# The ggml types the built-in reader converts (the exact conversions gguf + numpy do).
BUILTIN_TYPES = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}
GGML_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
              10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


def read_gguf_builtin(path):
    """read_gguf() without the gguf package (nor numpy): little-endian GGUF v2/v3
    whose tensors are F32, F16 or BF16, i.e. dam's unquantized files."""
    with open(path, "rb") as f:
        # ACCESS_COPY: writable (copy-on-write) pages, so torch.frombuffer does not warn.
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v

    def string():
        nonlocal pos
        n = take("Q")[0]
        pos += n
        return buf[pos - n:pos].decode("utf-8")

    def value(vt):
        if vt in GGUF_SCALARS:
            return take(GGUF_SCALARS[vt])[0]
        if vt == 8:
            return string()
        if vt == 9:
            et, n = take("IQ")
            if et in GGUF_SCALARS:  # one unpack for the whole array
                return list(take(f"{n}{GGUF_SCALARS[et]}"))
            # Strings, nested arrays (kept nested; gguf's contents() flattens them,
            # dam's files have none).
            return [value(et) for _ in range(n)]
        raise SystemExit(f"error: {path}: unknown GGUF value type {vt}")

    if buf[:4] != b"GGUF":
        raise SystemExit(f"error: {path} is not a GGUF file")
    pos = 4
    version = take("I")[0]
    if version not in (2, 3):  # a big-endian file reads as a huge version too
        raise SystemExit(f"error: {path}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = take("QQ")
    # The header fields gguf's GGUFReader lists too, so both give the same dict.
    meta = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I")[0])
    infos = []
    for _ in range(n_tensors):
        name = string()
        ne = take(f"{take('I')[0]}Q")
        ty, off = take("IQ")
        if ty not in BUILTIN_TYPES:  # fail before any tensor is converted
            raise SystemExit(f"error: {name}: type {GGML_NAMES.get(ty, ty)} needs the gguf "
                             f"package to be read (pip install gguf numpy)")
        infos.append((name, ne, ty, off))
    align = int(meta.get("general.alignment", 32))
    start = (pos + align - 1) // align * align

    def tensors():
        for name, ne, ty, off in infos:
            count = 1
            for n in ne:
                count *= n
            t = torch.frombuffer(buf, dtype=BUILTIN_TYPES[ty], count=count, offset=start + off)
            # copy=True: one fresh f32 tensor (also for F32), not a view of the file.
            yield name, t.to(torch.float32, copy=True).reshape(tuple(reversed(ne)))

    return meta, tensors()


class Vision:
    """Hyper-parameters and weights of a `dam-vision` GGUF file, as torch tensors."""

    def __init__(self, path, dtype, device=torch.device("cpu")):
        meta, tensors = read_gguf(path)

        def k(key):
            if key not in meta:
                raise SystemExit(f"error: key {key} missing from the vision file")
            return meta[key]

        for key, want in [("general.architecture", "dam-vision"),
                          ("dam.context.type", "cross_attn_end_to_all"),
                          ("dam.projector.type", "mlp_downsample")]:
            if k(key) != want:
                raise SystemExit(f"error: {key} is {k(key)!r}, only {want!r} is supported")
        self.dtype, self.device = dtype, device
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

        # Quantized files may store the matrices that read the C-wide stream
        # with extra input columns (dam pads their inputs with zeros): drop them.
        c_in = int(meta.get("dam.vision.matrix_input_length", self.C))
        self.w = {}
        self.gates = {}
        for name, t in tensors:
            if name.endswith(("attn_factor", "mlp_factor")):
                self.gates[name] = float(t.reshape(-1)[0])
            else:
                if c_in != self.C and t.dim() == 2 and t.shape[1] == c_in:
                    t = t[:, :self.C]
                # Cast on the CPU, then move: the same rounding on every device.
                self.w[name] = t.to(dtype).to(device)
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
        zero = torch.zeros((), dtype=self.dtype, device=s.device)
        return torch.where(s >= 1e-5, zero, torch.full((), float("-inf"), dtype=self.dtype, device=s.device))

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
        idx = torch.nonzero(applied.cpu()).flatten().to(z.device)  # index_copy wants one device
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
    if np is None:
        raise SystemExit("error: check needs numpy (pip install numpy)")
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
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"error: --device cuda but torch {torch.__version__} sees no CUDA GPU "
                         f"(torch.cuda.is_available() is false)")
    device = torch.device(args.device)
    # Kernels run asynchronously on a GPU: wait for them before reading the clock.
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    vm = Vision(args.vision, DTYPES[args.dtype], device)
    sync()
    load_s = time.perf_counter() - t0
    log(f"loaded {args.vision} ({vm.weight_type} -> {args.dtype} on {args.device}, "
        f"{'gguf package' if gguf else 'built-in reader'}) in {load_s:.2f} s: "
        f"S {vm.S}, C {vm.C}, {vm.L} layers, masked {vm.masked}")
    full, focal = (v.to(device) for v in random_views(vm.S, args.images))
    applied = torch.ones(args.images, dtype=torch.bool)
    runs = []
    with torch.inference_mode():
        for r in range(args.warmup + args.runs):
            sync()
            t = time.perf_counter()
            _, _, emb = vm.encode(full, focal, applied)
            sync()
            ms = (time.perf_counter() - t) * 1e3
            warm = r < args.warmup
            log(f"{'warmup' if warm else 'run'} {r if warm else r - args.warmup}: {ms:.1f} ms "
                f"-> {list(emb.shape)}")
            if not warm:
                runs.append(ms)
    out = {"torch_version": torch.__version__, "dtype": args.dtype, "device": args.device}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(device)
    out.update({
        "threads": args.threads,
        "load_s": round(load_s, 3), "runs_ms": [round(x, 2) for x in runs],
        "min_ms": round(min(runs), 2), "median_ms": round(statistics.median(runs), 2),
        "images": args.images, "vision_file": os.path.abspath(args.vision),
    })
    print(json.dumps(out), flush=True)
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
    b.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
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
