"""Client checks of `dam serve`, run by tests/server.rs against a running server.

usage: client.py MODE URL EXPECTED_JSON CASES_DIR
  MODE main:  the official `openai` client in both compat modes, streaming and
              not; raw HTTP for the SSE bytes; extension fields; concurrent
              requests; the bad-input corpus, each case followed by a good
              request; a client that disconnects mid-stream.
  MODE busy:  a server with --queue 1: a burst gets 503 + Retry-After;
              with --max-images 1, two images are refused.
  MODE remote: a server with --allow-remote-images: http:// images from a
              loopback http.server, and every way such a fetch fails.
  MODE segment: a server with --segmenter: clicks and segmented boxes (top
              level and in `regions`) answer as dam describe --points /
              --segment-box, and their bad inputs, each followed by a good request.
EXPECTED_JSON: {"alpha": greedy caption of c2 with its mask (dam describe),
                "box": the same for --box 10,10,60,50, "max_tokens": N};
               segment: {"points": the same for --points 30,30;70,40
                --labels 1,0, "segment_box": for --box 10,10,60,50 --segment-box,
                "max_tokens": N}
Every call has a timeout; loops are bounded; loopback only.
"""

import base64
import concurrent.futures as cf
import http.client
import http.server
import io
import json
import struct
import sys
import threading
import time
import urllib.parse
import zlib

from PIL import Image

import openai

TIMEOUT = 60


def png_bytes(img):
    b = io.BytesIO()
    img.save(b, "PNG")
    return b.getvalue()


def data_url(raw, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


class Server:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        assert u.hostname == "127.0.0.1", url
        self.host, self.port, self.url = u.hostname, u.port, url

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body bytes) of one request on a fresh connection."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def chat(self, body):
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.request("POST", "/v1/chat/completions", raw)

    def metric(self, name):
        _, _, m = self.request("GET", "/metrics")
        for line in m.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")


def message(url, text="<image>\nDescribe the masked region in detail.", extra=()):
    items = [{"type": "image_url", "image_url": {"url": url}}, *extra]
    return [{"role": "user", "content": items + [{"type": "text", "text": text}]}]


class Main:
    def __init__(self, server, expected, cases):
        self.s = server
        self.exp = expected
        self.n = expected["max_tokens"]
        rgb = Image.open(f"{cases}/c2_image.png").convert("RGB")
        mask = Image.open(f"{cases}/c2_mask.png").convert("L")
        rgba = rgb.convert("RGBA")
        rgba.putalpha(mask)
        self.rgb_url = data_url(png_bytes(rgb))
        self.rgba_url = data_url(png_bytes(rgba))
        self.mask_url = data_url(png_bytes(mask))
        empty = rgb.convert("RGBA")
        empty.putalpha(0)
        self.empty_url = data_url(png_bytes(empty))
        # Other images of the fixture, each with its mask as alpha.
        self.others = []
        for c in ["c2", "c3", "c4", "c5"]:
            im = Image.open(f"{cases}/{c}_image.png").convert("RGBA")
            im.putalpha(Image.open(f"{cases}/{c}_mask.png").convert("L"))
            self.others.append(data_url(png_bytes(im)))
        self.client = openai.OpenAI(
            base_url=server.url + "/v1", api_key="none", timeout=TIMEOUT, max_retries=0
        )

    def good(self, **kw):
        """A request (greedy unless `kw` says otherwise) through the openai client."""
        args = dict(model="describe_anything_model", messages=message(self.rgba_url),
                    temperature=0, max_tokens=self.n)
        args.update(kw)
        return self.client.chat.completions.create(**args)

    def openai_modes(self):
        r = self.good()
        c = r.choices[0]
        assert c.message.role == "assistant", r
        assert c.message.content == self.exp["alpha"], (c.message.content, self.exp["alpha"])
        assert c.finish_reason in ("stop", "length"), c
        assert isinstance(r.created, int) and r.usage.completion_tokens > 0, r
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        # The loaded model's own name works too.
        r = self.client.chat.completions.create(
            model="tiny", messages=message(self.rgba_url), temperature=0, max_tokens=self.n
        )
        assert r.choices[0].message.content == self.exp["alpha"]
        # Streaming, OpenAI spelling: delta.content is a string.
        text, finish = "", None
        for ch in self.good(stream=True, extra_body={"compat": "openai"}):
            for c in ch.choices:
                if c.delta.content:
                    assert isinstance(c.delta.content, str), c
                    text += c.delta.content
                finish = c.finish_reason or finish
        assert text == self.exp["alpha"] and finish in ("stop", "length"), (text, finish)
        # Streaming, the reference's spelling (the default): a list of text items.
        text, finish = "", None
        for ch in self.good(stream=True):
            for c in ch.choices:
                content = c.delta.content
                if content:
                    assert isinstance(content, list), content
                    text += "".join(i["text"] for i in content)
                finish = c.finish_reason or finish
        assert text == self.exp["alpha"] and finish in ("stop", "length"), (text, finish)

    def sse_bytes(self):
        body = {
            "model": "describe_anything_model",
            "messages": message(self.rgba_url),
            "temperature": 0,
            "max_tokens": self.n,
            "stream": True,
        }
        status, headers, raw = self.s.chat(body)
        assert status == 200, (status, raw)
        assert headers["content-type"].startswith("text/event-stream"), headers
        text = raw.decode()
        assert text.endswith("data: [DONE]\n\n"), text[-200:]
        events = text.split("\n\n")[:-1]
        assert all(e.startswith("data: ") and "\n" not in e for e in events), events[:3]
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length"), chunks[-1]
        assert chunks[-1]["choices"][0]["delta"] == {}, chunks[-1]
        pieces = [c["choices"][0]["delta"]["content"] for c in chunks[:-1]]
        assert all(p[0]["type"] == "text" for p in pieces), pieces[:2]
        assert "".join(p[0]["text"] for p in pieces) == self.exp["alpha"]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)

    def extensions(self):
        def ask(**extra):
            r = self.client.chat.completions.create(
                model="describe_anything_model",
                messages=message(self.rgb_url),
                temperature=0,
                max_tokens=self.n,
                extra_body=extra,
            )
            return [c.message.content for c in r.choices]

        assert ask(box=[10, 10, 60, 50]) == [self.exp["box"]]
        frac = ask(box=[10 / 97, 10 / 61, 60 / 97, 50 / 61], normalized=True)
        assert frac == [self.exp["box"]], frac
        # Many regions of one image: one choice each, as alone.
        many = ask(regions=[{"box": [10, 10, 60, 50]}, {"mask": self.mask_url}])
        assert many == [self.exp["box"], self.exp["alpha"]], many
        # A mask item next to the image.
        r = self.client.chat.completions.create(
            model="describe_anything_model",
            messages=message(self.rgb_url, extra=[{"type": "mask_url", "mask_url": {"url": self.mask_url}}]),
            temperature=0,
            max_tokens=self.n,
        )
        assert r.choices[0].message.content == self.exp["alpha"]
        assert ask(scribble=[[20, 20], [50, 40]], brush=8)[0]
        # The length option: the CLI's spelling or an object, one parser.
        assert ask(box=[10, 10, 60, 50], length="about:20") == ask(
            box=[10, 10, 60, 50], length={"about_words": 20})
        # Sampling parameters are honoured: a seed reproduces its caption.
        a = self.good(temperature=0.9, seed=7, top_p=0.9)
        b = self.good(temperature=0.9, seed=7, top_p=0.9)
        assert a.choices[0].message.content == b.choices[0].message.content
        r = self.good(max_tokens=3)
        assert r.usage.completion_tokens <= 3 and r.choices[0].finish_reason in ("stop", "length")
        # ignore_eos: exactly max_tokens, past where the caption ends.
        n = self.n + 9
        r = self.good(max_tokens=n, extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == n and r.choices[0].finish_reason == "length", r.usage
        assert r.choices[0].message.content.startswith(self.exp["alpha"]), r.choices[0].message.content

    def concurrent(self):
        """Concurrent requests (batched by the server) give the lone answer,
        with the same image or with different ones."""
        with cf.ThreadPoolExecutor(8) as ex:
            outs = list(ex.map(lambda _: self.good().choices[0].message.content, range(8)))
        assert all(o == self.exp["alpha"] for o in outs), outs
        # Different images, each request with its own length and sampling
        # (greedy or seeded; the server batches them all the same): each
        # one's caption alone (one request at a time), then all at once,
        # twice each; until a batch mixed requests (the metrics say so), at
        # most 3 rounds.
        # Long enough answers (ignore_eos) that requests arriving while one
        # runs queue up and share the next batch, on a fast machine too.
        def slow(k):
            kw = dict(max_tokens=40 + 4 * k, extra_body={"ignore_eos": True})
            if k % 2:
                kw.update(temperature=0.8, top_p=0.9, seed=k)
            return kw

        asks = list(enumerate(self.others))
        lone = {k: self.good(messages=message(u), **slow(k)).choices[0].message.content for k, u in asks}
        assert len(set(lone.values())) > 1, lone
        asks = asks * 2
        for _ in range(3):
            b0, r0 = self.s.metric("dam_batches_total"), self.s.metric("dam_batched_regions_total")
            with cf.ThreadPoolExecutor(len(asks)) as ex:
                outs = list(ex.map(lambda a: self.good(messages=message(a[1]), **slow(a[0])).choices[0].message.content, asks))
            assert outs == [lone[k] for k, _ in asks], (outs, lone)
            b1, r1 = self.s.metric("dam_batches_total"), self.s.metric("dam_batched_regions_total")
            if r1 - r0 > b1 - b0:
                return
        raise AssertionError("no batch held more than one request")

    def corpus(self):
        big = json.dumps({"model": "x", "pad": "a" * (2 << 20)})
        bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 6, 0, 0, 0))
        bomb += chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
        ok = {"model": "describe_anything_model", "max_tokens": 2}

        def req(url=None, **kw):
            b = dict(ok, messages=message(url or self.rgba_url))
            b.update(kw)
            return b

        cases = [
            ("invalid json", "{not json", 400, "invalid_json"),
            ("not an object", "[1, 2]", 400, "invalid_request"),
            ("wrong model", req(model="gpt-4o"), 404, "model_not_found"),
            ("no image", dict(ok, messages=[{"role": "user", "content": "Describe."}]), 400, "no_image"),
            ("nine frames", dict(ok, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": self.rgba_url}}] * 9}]), 400, "too_many_images"),
            ("rgb without alpha", req(self.rgb_url), 400, "no_alpha"),
            ("empty alpha", req(self.empty_url), 400, "empty_alpha"),
            ("bad base64", req("data:image/png;base64,@@@not-base64@@@"), 400, "invalid_base64"),
            ("not an image", req(data_url(b"hello, I am text")), 400, "invalid_image"),
            ("truncated png", req(data_url(png_bytes(Image.new("RGBA", (8, 8)))[:40])), 400, "invalid_image"),
            ("decompression bomb", req(data_url(bomb)), 400, "image_too_large"),
            ("body over the limit", big, 413, "body_too_large"),
            ("http url", req("http://169.254.169.254/latest/meta-data"), 400, "remote_url_refused"),
            ("https url", req("https://example.com/a.png"), 400, "remote_url_refused"),
            ("file url", req("file:///etc/passwd"), 400, "invalid_image_url"),
            ("negative temperature", req(temperature=-1), 400, "invalid_parameter"),
            ("zero max_tokens", req(max_tokens=0), 400, "invalid_parameter"),
            ("zero length", req(length={"words": 0}), 400, "invalid_request"),
            ("bad length kind", req(length="lines:2"), 400, "invalid_request"),
            ("box outside", req(self.rgb_url, box=[500, 500, 600, 600]), 400, "invalid_region"),
            ("inverted box", req(self.rgb_url, box=[50, 50, 10, 10]), 400, "invalid_region"),
            ("two region kinds", req(self.rgb_url, box=[1, 1, 9, 9], scribble=[[1, 1]]), 400, "invalid_region"),
            ("too many regions", req(self.rgb_url, regions=[{"box": [1, 1, 9, 9]}] * 65), 400, "invalid_region"),
            ("empty messages", dict(ok, messages=[]), 400, "no_image"),
            ("messages not a list", dict(ok, messages="hi"), 400, "invalid_request"),
            # No --segmenter: clicks and segmented boxes say how to start the server.
            ("points without a segmenter", req(self.rgb_url, points=[[30, 30]]), 400, "no_segmenter"),
            ("segment_box without a segmenter", req(self.rgb_url, box=[10, 10, 60, 50], segment_box=True),
             400, "no_segmenter"),
            ("points region without a segmenter", req(self.rgb_url, regions=[{"points": [[30, 30]]}]),
             400, "no_segmenter"),
        ]
        self.check_errors(cases)
        status, _, raw = self.s.chat(req(self.rgb_url, points=[[30, 30]]))
        assert "--segmenter" in json.loads(raw)["error"]["message"], raw
        return len(cases)

    def check_errors(self, cases):
        """Each (name, body, status, code) is answered so; a good request follows each."""
        for name, body, want, code in cases:
            status, headers, raw = self.s.chat(body)
            assert status == want, (name, status, raw[:300])
            err = json.loads(raw)["error"]
            assert err["code"] == code and err["message"] and err["type"], (name, err)
            # The server keeps serving.
            r = self.good(max_tokens=2)
            assert r.choices[0].message.content is not None, name

    def disconnect(self):
        """A client that leaves mid-stream cancels its generation."""
        before = self.s.metric("dam_requests_cancelled_total")
        # ignore_eos: the tiny model's caption would end (EOS) in a few tokens,
        # before the client leaves; this one runs until it is cancelled.
        body = json.dumps({
            "model": "describe_anything_model", "messages": message(self.rgba_url),
            "max_tokens": 1800, "temperature": 0, "ignore_eos": True, "stream": True,
        })
        c = http.client.HTTPConnection(self.s.host, self.s.port, timeout=TIMEOUT)
        c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200
        assert r.readline().startswith(b"data: ")
        c.sock.close()
        c.close()
        for _ in range(100):
            if self.s.metric("dam_requests_cancelled_total") > before:
                break
            time.sleep(0.1)
        assert self.s.metric("dam_requests_cancelled_total") > before
        self.good(max_tokens=2)

    def endpoints(self):
        status, _, raw = self.s.request("GET", "/health")
        assert status == 200 and json.loads(raw)["status"] == "ok"
        assert json.loads(raw)["segmenter"] is False, raw
        ids = [m.id for m in self.client.models.list()]
        assert "describe_anything_model" in ids and "tiny" in ids, ids
        _, headers, m = self.s.request("GET", "/metrics")
        m = m.decode()
        for name in ["dam_requests_total", "dam_queue_depth", "dam_tokens_per_second",
                     'dam_errors_total{code="no_alpha"}', "dam_time_to_first_token_seconds_bucket"]:
            assert name in m, name
        assert self.s.metric("dam_time_to_first_token_seconds_count") > 0
        status, _, raw = self.s.request("POST", "/chat/completions", json.dumps({
            "model": "describe_anything_model", "messages": message(self.rgba_url),
            "temperature": 0, "max_tokens": self.n}))
        assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == self.exp["alpha"]


class Segment(Main):
    """Against --segmenter (sam-tiny): clicks and segmented boxes."""

    CLICKS, LABELS, BOX = [[30, 30], [70, 40]], [1, 0], [10, 10, 60, 50]

    def ask(self, **extra):
        r = self.client.chat.completions.create(
            model="describe_anything_model", messages=message(self.rgb_url),
            temperature=0, max_tokens=self.n, extra_body=extra)
        return [c.message.content for c in r.choices]

    def run(self):
        status, _, raw = self.s.request("GET", "/health")
        assert status == 200 and json.loads(raw)["segmenter"] is True, raw
        pts, sbox = self.exp["points"], self.exp["segment_box"]
        assert self.ask(points=self.CLICKS, labels=self.LABELS) == [pts]
        assert self.ask(box=self.BOX, segment_box=True) == [sbox]
        # Labels default to positive clicks.
        assert self.ask(points=self.CLICKS, labels=[1, 1]) == self.ask(points=self.CLICKS)
        many = self.ask(regions=[{"points": self.CLICKS, "labels": self.LABELS},
                                 {"box": self.BOX, "segment_box": True}])
        assert many == [pts, sbox], many
        # Streamed the same, and concurrent requests (batched) give the lone answer.
        text = ""
        for ch in self.good(messages=message(self.rgb_url), stream=True,
                            extra_body={"compat": "openai", "points": self.CLICKS, "labels": self.LABELS}):
            text += "".join(c.delta.content or "" for c in ch.choices)
        assert text == pts, (text, pts)
        with cf.ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(lambda k: self.ask(**[dict(points=self.CLICKS, labels=self.LABELS),
                                                     dict(box=self.BOX, segment_box=True)][k % 2]), range(4)))
        assert outs == [[pts], [sbox]] * 2, outs
        return self.bad_inputs()

    def bad_inputs(self):
        ok = {"model": "describe_anything_model", "max_tokens": 2, "messages": message(self.rgb_url)}
        clicks = json.dumps(dict(ok, points=[[30, 30]]))
        cases = [
            ("labels of the wrong count", dict(ok, points=self.CLICKS, labels=[1]), "invalid_region"),
            ("too many labels", dict(ok, points=self.CLICKS, labels=[1, 0, 1]), "invalid_region"),
            ("label not 0/1", dict(ok, points=self.CLICKS, labels=[1, 2]), "invalid_region"),
            ("label not a number", dict(ok, points=self.CLICKS, labels=["yes", 0]), "invalid_request"),
            ("NaN click (Python's json)", clicks.replace("30, 30", "NaN, 30"), "invalid_json"),
            ("infinite click", clicks.replace("30, 30", "1e39, 30"), "invalid_region"),
            ("click not a number", dict(ok, points=[["a", 30]]), "invalid_request"),
            ("click of one coordinate", dict(ok, points=[[30]]), "invalid_request"),
            ("click outside the image", dict(ok, points=[[500, 30]]), "invalid_region"),
            ("negative click", dict(ok, points=[[-1, 30]]), "invalid_region"),
            ("empty points", dict(ok, points=[]), "invalid_region"),
            ("normalized points", dict(ok, points=[[0.5, 0.5]], normalized=True), "invalid_region"),
            ("labels without points", dict(ok, labels=[1]), "invalid_region"),
            ("segment_box without a box", dict(ok, segment_box=True), "invalid_region"),
            ("degenerate segmented box", dict(ok, box=[10, 10, 10, 30], segment_box=True), "invalid_region"),
            ("segmented box outside", dict(ok, box=[10, 10, 500, 30], segment_box=True), "invalid_region"),
            ("points and a box", dict(ok, points=[[30, 30]], box=self.BOX), "invalid_region"),
            ("bad click in regions", dict(ok, regions=[{"box": self.BOX},
                                                       {"points": [[30, 30]], "labels": [3]}]), "invalid_region"),
            ("click outside in regions", dict(ok, regions=[{"points": [[30, 99]]}]), "invalid_region"),
        ]
        self.check_errors([(name, body, 400, code) for name, body, code in cases])
        return len(cases)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def busy(server, cases):
    """Against --queue 1 --max-batch 1 --max-images 1: a burst overflows the queue."""
    rgba = Image.open(f"{cases}/c2_image.png").convert("RGBA")
    rgba.putalpha(Image.open(f"{cases}/c2_mask.png").convert("L"))
    body = {"model": "describe_anything_model", "messages": message(data_url(png_bytes(rgba))),
            "max_tokens": 64, "temperature": 0, "ignore_eos": True}
    with cf.ThreadPoolExecutor(12) as ex:
        outs = list(ex.map(lambda _: server.chat(body), range(12)))
    busy = [(h, b) for s, h, b in outs if s == 503]
    assert busy, [s for s, _, _ in outs]
    assert all(s in (200, 503) for s, _, _ in outs), [s for s, _, _ in outs]
    h, b = busy[0]
    assert h.get("retry-after") or h.get("Retry-After"), h
    assert json.loads(b)["error"]["code"] == "queue_full"
    status, _, _ = server.chat(body)
    assert status in (200, 503)
    # --max-images 1 (an image model): two images are refused.
    two = dict(body, messages=[{"role": "user", "content": body["messages"][0]["content"][:1] * 2}])
    status, _, raw = server.chat(two)
    assert status == 400 and json.loads(raw)["error"]["code"] == "too_many_images", raw
    print(f"busy: {len(busy)} of {len(outs)} answered 503")


class Images(http.server.BaseHTTPRequestHandler):
    """The loopback image server of `remote` (paths: see `remote`)."""

    routes = {}  # path -> (status, headers, body, delay s)

    def do_GET(self):
        status, headers, body, delay = self.routes.get(self.path, (404, {}, b"", 0))
        time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def remote(server, cases):
    """Against --allow-remote-images --max-body-mib 1 --remote-timeout 2: http://
    images from a loopback server (bounded: it stops at the end), and each way
    a fetch can fail, each answered 4xx and followed by a good request."""
    rgba = Image.open(f"{cases}/c2_image.png").convert("RGBA")
    rgba.putalpha(Image.open(f"{cases}/c2_mask.png").convert("L"))
    png = png_bytes(rgba)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 6, 0, 0, 0))
    bomb += chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    big = png + b"\0" * (2 << 20)
    image = {"Content-Type": "image/png"}
    Images.routes = {
        "/ok.png": (200, dict(image, **{"Content-Length": str(len(png))}), png, 0),
        "/redirect": (302, {"Location": "/ok.png"}, b"", 0),
        "/loop": (302, {"Location": "/loop"}, b"", 0),
        "/page": (200, {"Content-Type": "text/html"}, b"<html></html>", 0),
        "/declared-big.png": (200, dict(image, **{"Content-Length": str(len(big))}), big, 0),
        "/undeclared-big.png": (200, image, big, 0),  # HTTP/1.0: the body ends at close
        "/bomb.png": (200, image, bomb, 0),
        "/text.png": (200, image, b"hello, I am text", 0),
        "/slow.png": (200, image, png, 5),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    httpd.daemon_threads = True
    httpd.timeout = TIMEOUT
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    ok = {"model": "describe_anything_model", "max_tokens": 8, "temperature": 0}

    def ask(url):
        status, _, raw = server.chat(dict(ok, messages=message(url)))
        return status, json.loads(raw)

    try:
        status, inline = ask(data_url(png))
        assert status == 200, inline
        want = inline["choices"][0]["message"]["content"]
        for path in ["/ok.png", "/redirect"]:
            status, r = ask(base + path)
            assert status == 200 and r["choices"][0]["message"]["content"] == want, (path, r)
        bad = [
            ("/loop", 400, "remote_image_fetch_failed"),
            ("/missing.png", 400, "remote_image_fetch_failed"),
            ("/page", 400, "invalid_image"),
            ("/declared-big.png", 413, "remote_image_too_large"),
            ("/undeclared-big.png", 413, "remote_image_too_large"),
            ("/bomb.png", 400, "image_too_large"),
            ("/text.png", 400, "invalid_image"),
            ("/slow.png", 400, "remote_image_fetch_failed"),
            ("https://127.0.0.1:9/a.png", 400, "remote_image_fetch_failed"),
            ("http://127.0.0.1:9/a.png", 400, "remote_image_fetch_failed"),
        ]
        for path, want_status, code in bad:
            t0 = time.monotonic()
            status, r = ask(base + path if path.startswith("/") else path)
            assert status == want_status and r["error"]["code"] == code, (path, status, r)
            assert time.monotonic() - t0 < 15, (path, "the fetch outlived its timeout")
            status, r = ask(base + "/ok.png")
            assert status == 200, (path, r)
    finally:
        httpd.shutdown()
        httpd.server_close()
    print(f"remote: ok ({len(bad)} failing fetches, each followed by a good request)")


def main():
    mode, url, expected, cases = sys.argv[1:5]
    server = Server(url)
    if mode == "busy":
        busy(server, cases)
        return
    if mode == "remote":
        remote(server, cases)
        return
    if mode == "segment":
        n = Segment(server, json.loads(expected), cases).run()
        print(f"segment: ok ({n} bad inputs, each followed by a good request)")
        return
    m = Main(server, json.loads(expected), cases)
    m.openai_modes()
    m.sse_bytes()
    m.extensions()
    m.concurrent()
    n = m.corpus()
    m.disconnect()
    m.endpoints()
    print(f"client: ok ({n} bad inputs, each followed by a good request)")


if __name__ == "__main__":
    main()
