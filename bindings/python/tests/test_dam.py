"""The Python bindings on the tiny test model: captions equal the CLI's, every input kind,
streaming, typed errors, sessions, callbacks."""

import ctypes
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dam

N = 24  # tokens per caption


def cli_caption(cli, model_files, *args):
    llm, vision = model_files
    out = subprocess.run(
        [cli, "describe", "--llm", llm, "--vision", vision, "--threads", "1", "--greedy", "--max-tokens", str(N),
         *map(str, args)],
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")
    assert out.endswith("\n")
    return out[:-1]


def test_library_and_version():
    assert dam.version()
    assert Path(dam.library_path()).name.startswith(("libdam.", "_libdam.", "dam.dll"))
    info = dam.backend_info()
    v = dam._L().dam_api_version()
    assert info["api_version"] == f"{v >> 16}.{v & 0xFFFF}"
    assert (v >> 16, v & 0xFFFF) >= (1, 3)  # the 1.3 names exist
    assert any(b["name"] for b in info["backends"])
    assert isinstance(info["simd"], list) and info["threads"] >= 1


def test_find_library_env(monkeypatch, tmp_path):
    from dam import _ffi

    monkeypatch.setenv("DAM_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(OSError):
        _ffi.find_library()
    monkeypatch.setenv("DAM_LIBRARY", dam.library_path())
    assert _ffi.find_library() == dam.library_path()


def test_mask_caption_matches_cli(model, model_files, cli, case):
    want = cli_caption(cli, model_files, "-i", case["image"], "--mask", case["mask"])
    assert want
    # Paths, PIL images and numpy arrays all give the CLI's caption.
    assert model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N) == want
    img, mask = Image.open(case["image"]), Image.open(case["mask"])
    assert model.describe(img, mask=mask, greedy=True, max_tokens=N) == want
    assert model.describe(np.asarray(img), mask=np.asarray(mask) > 0, greedy=True, max_tokens=N) == want
    # A non-contiguous view (every pixel's channels reversed twice) is handled.
    rgb = np.asarray(img.convert("RGB"))[:, :, ::-1][:, :, ::-1]
    assert model.describe(rgb, mask=mask, greedy=True, max_tokens=N) == want


def test_box_and_scribble_match_cli(model, model_files, cli, case):
    want = cli_caption(cli, model_files, "-i", case["image"], "--box", "100,200,900,800")
    assert model.describe(case["image"], box=(100, 200, 900, 800), greedy=True, max_tokens=N) == want
    want = cli_caption(cli, model_files, "-i", case["image"], "--box", "0.1,0.2,0.5,0.7", "--normalized")
    got = model.describe(case["image"], box=(0.1, 0.2, 0.5, 0.7), normalized=True, greedy=True, max_tokens=N)
    assert got == want
    want = cli_caption(cli, model_files, "-i", case["image"], "--scribble", "100,100;600,500;900,300", "--brush", "40")
    got = model.describe(case["image"], scribble=[(100, 100), (600, 500), (900, 300)], brush=40, greedy=True,
                         max_tokens=N)
    assert got == want


def test_describe_batch_equals_single_calls(model, case):
    regions = [
        {"mask": case["mask"]},
        {"box": (100, 200, 900, 800)},
        {"box": (0.1, 0.2, 0.5, 0.7), "normalized": True},
        {"scribble": [(100, 100), (600, 500), (900, 300)], "brush": 40},
    ]
    single = [model.describe(case["image"], greedy=True, max_tokens=N, **r) for r in regions]
    pieces = {}
    got = model.describe_batch(case["image"], regions, greedy=True, max_tokens=N,
                               on_token=lambda k, p: pieces.setdefault(k, []).append(p))
    assert got == single
    assert ["".join(pieces.get(k, [])) for k in range(len(regions))] == single
    with pytest.raises(dam.InvalidRegionError):
        model.describe_batch(case["image"], regions + [{"box": (2, 2, 3, 3), "normalized": True}])
    with pytest.raises(ValueError):
        model.describe_batch(case["image"], [])


def test_alpha_region(model, case):
    img = np.asarray(Image.open(case["image"]).convert("RGB"))
    mask = np.asarray(Image.open(case["mask"]).convert("L"))
    rgba = np.dstack([img, mask])
    assert model.describe(rgba, alpha=True, greedy=True, max_tokens=N) == model.describe(
        img, mask=mask, greedy=True, max_tokens=N
    )


def test_video_matches_cli(model, model_files, cli):
    from conftest import CASES

    frames = [CASES / f"v1_image_f{k}.png" for k in range(3)]
    masks = [CASES / f"v1_mask_f{k}.png" for k in range(3)]
    args = []
    for f, m in zip(frames, masks):
        args += ["-i", f, "--mask", m]
    want = cli_caption(cli, model_files, *args)
    assert model.describe_video(frames, masks, greedy=True, max_tokens=N) == want
    assert model.max_frames == 8


def test_stream(model, case):
    full = model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
    pieces = list(model.stream(case["image"], mask=case["mask"], greedy=True, max_tokens=N))
    assert len(pieces) > 1 and "".join(pieces) == full
    # Closing early stops generation; the model stays usable.
    gen = model.stream(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
    first = next(gen)
    gen.close()
    assert full.startswith(first)
    assert model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N) == full


def test_on_token_and_stop(model, case):
    full = model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
    seen = []
    assert model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N, on_token=seen.append) == full
    assert "".join(seen) == full
    got = model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N, on_token=lambda p: False)
    assert full.startswith(got) and len(got) < len(full)


def test_sampling_options(model, case):
    a = model.describe(case["image"], mask=case["mask"], temperature=0.8, seed=3, max_tokens=8)
    b = model.describe(case["image"], mask=case["mask"], temperature=0.8, seed=3, max_tokens=8)
    assert a == b
    assert model.describe(case["image"], mask=case["mask"], query="What is it?", length="words:5", greedy=True,
                          max_tokens=4)


def test_errors(model, case, tmp_path):
    img = Image.open(case["image"])
    with pytest.raises(dam.UnsupportedRegionError) as e:
        model.describe(img, points=[(10, 10)])
    assert e.value.status == -3 and "segmenter" in e.value.message
    with pytest.raises(dam.InvalidRegionError):
        model.describe(img, mask=np.zeros((img.height, img.width), np.uint8))
    with pytest.raises(dam.InvalidRegionError):
        model.describe(img, mask=np.ones((10, 10), np.uint8))
    with pytest.raises(dam.InvalidRegionError):
        model.describe(img, alpha=True)
    with pytest.raises(dam.InvalidRegionError):
        model.describe(img, box=(5000, 5000, 6000, 6000))
    with pytest.raises(dam.InvalidArgumentError):
        model.describe(img, mask=case["mask"], top_p=0.0)
    with pytest.raises(dam.InvalidArgumentError):
        model.describe(img, mask=case["mask"], query="<image> what?")
    with pytest.raises(dam.InvalidArgumentError):
        model.describe(np.zeros((4, 4), np.float32), box=(0, 0, 2, 2))
    with pytest.raises(ValueError):
        model.describe(img)
    with pytest.raises(ValueError):
        model.describe(img, mask=case["mask"], box=(0, 0, 1, 1))
    with pytest.raises(dam.DamIOError) as e:
        dam.Model(tmp_path / "x-llm-f32.gguf", tmp_path / "x-vision-f32.gguf")
    assert isinstance(e.value, OSError) and e.value.status == -5
    # The model is still usable after all these errors.
    assert model.describe(img, mask=case["mask"], greedy=True, max_tokens=2)


def test_swapped_files(model_files):
    llm, vision = model_files
    with pytest.raises(dam.InvalidModelError):
        dam.Model(vision, llm)


def test_session_cancel_and_timings(model, case):
    with model.session(threads=1) as s:
        s.cancel()
        with pytest.raises(dam.CancelledError):
            s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
        text = s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
        assert s.last_caption() == text
        t = s.timings()
        assert t["n_generated_tokens"] > 0 and t["n_prompt_tokens"] > 0 and t["vision_ms"] > 0
        # Cancel from another thread during generation.
        started = threading.Event()

        def on_token(_piece):
            started.set()
            threading.Thread(target=s.cancel).start()
            threading.Event().wait(0.2)
            return True

        with pytest.raises(dam.CancelledError):
            s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N, on_token=on_token)
        assert started.is_set()
        assert s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N) == text


def test_sessions_in_threads(model, case):
    want = model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
    got = []

    def work():
        with model.session(threads=1) as s:
            got.append(s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N))

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want, want]


def test_gil_released_while_describing(model, case):
    """Two Python threads caption at once while a third keeps running Python: ctypes drops the
    GIL around each C call (CDLL, not PyDLL), so the middle of every call sees the ticker run."""
    assert not dam._L().dam_describe._flags_ & ctypes._FUNCFLAG_PYTHONAPI
    image = np.asarray(Image.open(case["image"]).convert("RGB"))
    mask = np.asarray(Image.open(case["mask"]).convert("L"))
    want = model.describe(image, mask=mask, greedy=True, max_tokens=N)
    calls, got, ticks = [], [], []
    done = threading.Event()

    def work():
        with model.session(threads=1) as s:
            for _ in range(2):
                t0 = time.perf_counter()
                got.append(s.describe(image, mask=mask, greedy=True, max_tokens=N))
                calls.append((t0, time.perf_counter()))

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.set()
    ticker.join()
    assert got == [want] * 4
    for t0, t1 in calls:  # the middle half of a call is inside the C library
        q = (t1 - t0) / 4
        assert any(t0 + q < t < t1 - q for t in ticks), (t0, t1)


def test_log_and_progress(model_files):
    lines, stages = [], []
    m = dam.Model(*model_files, threads=1, log=lambda lvl, text: lines.append((lvl, text)), log_level="debug",
                  progress=lambda stage, f: stages.append((stage, f)))
    m.close()
    assert [s for s, _ in stages] == ["start", "vision_loaded", "llm_loaded", "done"]
    assert stages[-1][1] == 1.0
    assert lines and all(lvl in ("debug", "info", "warn", "error") for lvl, _ in lines)
    with pytest.raises(dam.CancelledError):
        dam.Model(*model_files, progress=lambda stage, f: stage != "llm_loaded")


def test_device_choices(model_files, case):
    # Without a GPU both vision devices run on the CPU (an info line says so) and
    # give the same caption; bad choices are typed errors.
    lines = []
    caps = []
    for dev, repack in (("gpu", True), ("cpu", False)):
        with dam.Model(*model_files, threads=1, vision_device=dev, repack=repack,
                       log=lambda l, t: lines.append(t), log_level="info") as m:
            caps.append(m.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N))
    assert caps[0] == caps[1] and caps[0]
    if not any(b.get("type") == "gpu" for b in dam.backend_info()["backends"]):
        assert any("no GPU found" in t for t in lines)
    with pytest.raises(ValueError):
        dam.Model(*model_files, vision_device="tpu")
    with pytest.raises(dam.InvalidArgumentError):
        dam.Model(*model_files, main_gpu=-1)


def test_model_from_folder(model_files):
    from pathlib import Path

    folder = Path(model_files[0]).parent
    with dam.Model(folder, threads=1) as m:
        assert m.max_frames == 8


def test_session_threading_rules(model, case):
    full = model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
    s = model.session(threads=1)
    # A nested call from a callback is refused (it would deadlock or corrupt the session).
    errors = []

    def nested(_piece):
        try:
            s.describe(case["image"], mask=case["mask"], max_tokens=2)
        except dam.InvalidArgumentError as e:
            errors.append(e)
        return True

    assert s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N, on_token=nested) == full
    assert errors
    # describe() inside a stream loop of the same session waits for the stream's call.
    pieces = []
    for piece in s.stream(case["image"], mask=case["mask"], greedy=True, max_tokens=N):
        pieces.append(piece)
        if len(pieces) == 1:
            assert s.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N) == full
    assert "".join(pieces) == full
    # model.describe inside a model.stream loop uses another session.
    for piece in model.stream(case["image"], mask=case["mask"], greedy=True, max_tokens=4):
        assert model.describe(case["image"], mask=case["mask"], greedy=True, max_tokens=N) == full
    # close() from inside a stream loop cancels the running call, then frees.
    gen = s.stream(case["image"], mask=case["mask"], greedy=True, max_tokens=N)
    next(gen)
    s.close()
    with pytest.raises((dam.CancelledError, StopIteration)):
        while True:
            next(gen)
    with pytest.raises(dam.InvalidArgumentError):
        s.describe(case["image"], mask=case["mask"])


def test_package_layout():
    """py.typed ships; the public API has docstrings; installed, the bundled library loads."""
    pkg = Path(dam.__file__).parent
    assert (pkg / "py.typed").is_file()
    for name in dam.__all__:
        assert getattr(dam, name).__doc__, name
    if os.environ.get("DAM_TEST_INSTALLED") == "1":
        assert "bindings" not in pkg.parts, pkg  # the wheel's copy, not the checkout
        assert "DAM_LIBRARY" not in os.environ
        assert Path(dam.library_path()).parent == pkg
