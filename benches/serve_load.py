"""Bounded load test of `dam serve` (loopback only; stops by itself).

Starts `target/release/dam serve` on 127.0.0.1 (a free port) with MODEL, then
for each concurrency N in --levels runs N client threads, each sending
--per-client greedy streaming requests of fixed length ("ignore_eos": exactly
--max-tokens tokens each, so that every level does the same work; a different
image region per client, so that batches mix images), and reports throughput
(captions/s), time to first token p50/p99 (client side: request sent -> first
content chunk), errors, the regions per engine call (the batching),
the server's CPU time per caption (user + sys: comparable on a loaded machine,
where wall time is not) and its RSS. --soak R then sends R more requests at concurrency 4 and
reports the RSS every 100 requests (memory must stay flat).

usage: .venv/bin/python benches/serve_load.py -m MODEL_DIR [--levels 1,4,16]
       [--per-client 4] [--max-tokens 32] [--threads 2] [--soak 0]
Prints a Markdown table on stdout.
"""

import argparse
import base64
import concurrent.futures as cf
import http.client
import io
import json
import os
import subprocess
import sys
import time

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid):
    """User + system CPU seconds of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bodies(max_tokens, n):
    """n request bodies: the geom fixture's images with shifted boxes."""
    cases = os.path.join(ROOT, "tests/fixtures/geom/cases")
    imgs = []
    for c in sorted(f for f in os.listdir(cases) if f.endswith("_image.png")):
        im = Image.open(os.path.join(cases, c)).convert("RGB")
        im.thumbnail((640, 640))
        b = io.BytesIO()
        im.save(b, "PNG")
        imgs.append((im.size, "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()))
    out = []
    for k in range(n):
        (w, h), url = imgs[k % len(imgs)]
        d = (k // len(imgs)) % 8
        box = [w * (0.1 + 0.02 * d), h * (0.1 + 0.03 * d), w * (0.7 + 0.02 * d), h * (0.8 + 0.02 * d)]
        out.append(json.dumps({
            "model": "describe_anything_model", "stream": True, "compat": "openai",
            "temperature": 0, "max_tokens": max_tokens, "ignore_eos": True, "box": box,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "<image>\nDescribe the masked region in detail."}]}],
        }))
    return out


def one(port, body):
    """(ok, ttft s, total s) of one streamed request."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            r.read()
            return False, None, time.perf_counter() - t0
        ttft, done = None, False
        for _ in range(100000):
            line = r.readline()
            if not line:
                break
            if line.startswith(b"data: [DONE]"):
                done = True
                break
            if ttft is None and line.startswith(b"data: ") and b'"content"' in line:
                ttft = time.perf_counter() - t0
        return done, ttft, time.perf_counter() - t0
    except OSError:
        return False, None, time.perf_counter() - t0
    finally:
        c.close()


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    return {k: float(v) for k, v in (l.split(" ", 1) for l in text.splitlines() if l and l[0] != "#")}


def level(port, reqs, n):
    """Runs `reqs` split over n threads; (captions/s, ttfts, errors, wall)."""
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as ex:
        res = list(ex.map(lambda b: one(port, b), reqs))
    wall = time.perf_counter() - t0
    ok = [r for r in res if r[0]]
    ttfts = sorted(r[1] for r in ok if r[1] is not None)
    return len(ok) / wall, ttfts, len(res) - len(ok), wall


def pct(v, p):
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--soak", type=int, default=0)
    ap.add_argument("--extra", default="", help="more `dam serve` flags")
    a = ap.parse_args()
    exe = os.path.join(ROOT, "target/release/dam")
    cmd = [exe, "serve", "-m", a.model, "--port", "0", "-t", str(a.threads), "--queue", "256", *a.extra.split()]
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(srv.stdout.readline().strip().rsplit(":", 1)[1])
        one(port, bodies(a.max_tokens, 1)[0])  # warm-up
        rss0 = rss_mib(srv.pid)
        print(f"`{' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}`, "
              f"max_tokens {a.max_tokens}, greedy, streaming; RSS after warm-up {rss0:.0f} MiB\n")
        print("| clients | requests | captions/s | x one client | server CPU s / caption | CPU gain "
              "| TTFT p50 (s) | TTFT p99 (s) | errors | regions / engine call | RSS after (MiB) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        base = None
        for n in [int(x) for x in a.levels.split(",")]:
            reqs = bodies(a.max_tokens, n * a.per_client)
            c0, m0 = cpu_s(srv.pid), metrics(port)
            tput, ttfts, errs, _ = level(port, reqs, n)
            cpu = (cpu_s(srv.pid) - c0) / max(1, len(reqs) - errs)
            m1 = metrics(port)
            per_call = (m1["dam_batched_regions_total"] - m0["dam_batched_regions_total"]) / max(
                1, m1["dam_batches_total"] - m0["dam_batches_total"])
            base = base or (tput, cpu)
            print(f"| {n} | {len(reqs)} | {tput:.3g} | {tput / base[0]:.2f} | {cpu:.3f} | {base[1] / cpu:.2f} "
                  f"| {pct(ttfts, 50):.2f} | {pct(ttfts, 99):.2f} | {errs} | {per_call:.2f} | {rss_mib(srv.pid):.0f} |",
                  flush=True)
        if a.soak:
            # In chunks of 100, the RSS after each (flat = no growth per request).
            rss, errs, wall, done = [rss_mib(srv.pid)], 0, 0.0, 0
            while done < a.soak:
                k = min(100, a.soak - done)
                _, _, e, w = level(port, bodies(a.max_tokens, k), 4)
                errs, wall, done = errs + e, wall + w, done + k
                rss.append(rss_mib(srv.pid))
            print(f"\nsoak: {a.soak} requests at 4 clients in {wall:.0f} s ({a.soak / wall:.2f}/s), {errs} errors; "
                  f"RSS every 100 requests: {' -> '.join(f'{r:.0f}' for r in rss)} MiB")
        m = metrics(port)
        print(f"\n{m['dam_generated_tokens_total'] / m['dam_requests_completed_total']:.1f} tokens per caption "
              f"on average; {m['dam_batched_regions_total'] / m['dam_batches_total']:.2f} regions per engine call; "
              f"server CPU {cpu_s(srv.pid):.1f} s in all")
    finally:
        srv.terminate()
        try:
            code = srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()
            code = "killed"
        print(f"\nserver exit after SIGTERM: {code}", file=sys.stderr)


if __name__ == "__main__":
    main()
