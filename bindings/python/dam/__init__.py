"""Python bindings of dam, an inference engine for NVIDIA's Describe Anything Model.

A thin ctypes layer over the C API (include/dam.h). The library is $DAM_LIBRARY when set,
else the one `pip install` bundled in this package, else a checkout's target/release.

    import dam
    model = dam.Model("models/m-llm-f16.gguf", "models/m-vision-f16.gguf")
    print(model.describe("photo.jpg", mask="mask.png", greedy=True))
    for piece in model.stream(image, box=(10, 20, 200, 180)):
        print(piece, end="", flush=True)

Images: a PIL image, a numpy array (H x W gray, H x W x 3 RGB, H x W x 4 RGBA, uint8), or a
path. Regions (exactly one): ``mask=`` (same kinds; pixel > 0 = region), ``box=(x0, y0, x1,
y1)``, ``scribble=[(x, y), ...]`` with ``brush=``, ``alpha=True`` (the image's alpha channel),
``points=[(x, y[, positive]), ...]`` in pixels, or ``box=`` with ``segment_box=True`` (the
segmenter's mask of the box; pixels), both needing ``Model(..., segmenter=S.gguf)``, else
UnsupportedRegionError. ``normalized=True`` makes box/scribble coordinates fractions of the size.
``dam.Segmenter(S.gguf).segment(image, points=..., box=...)`` gives the mask alone.

Errors raise a subclass of DamError carrying ``status`` and ``message``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from . import _ffi

__all__ = [
    "Model",
    "Session",
    "DamError",
    "InvalidArgumentError",
    "InvalidRegionError",
    "UnsupportedRegionError",
    "InvalidModelError",
    "DamIOError",
    "ContextOverflowError",
    "CancelledError",
    "BackendError",
    "VersionMismatchError",
    "BufferTooSmallError",
    "InternalError",
    "Segmenter",
    "version",
    "backend_info",
    "library_path",
]

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None


def _L() -> ctypes.CDLL:
    global _lib, _lib_path
    with _lock:
        if _lib is None:
            _lib_path = _ffi.find_library()
            _lib = _ffi.load(_lib_path)
            got = _lib.dam_api_version()
            if got >> 16 != _ffi.API_VERSION_MAJOR or (got & 0xFFFF) < _ffi.API_VERSION_MINOR:
                raise VersionMismatchError(
                    _ffi.VERSION_MISMATCH,
                    f"{_lib_path} implements C API {got >> 16}.{got & 0xFFFF}, "
                    f"these bindings need {_ffi.API_VERSION_MAJOR}.{_ffi.API_VERSION_MINOR}",
                )
        return _lib


# ------------------------------------------------------------------ errors


class DamError(Exception):
    """A failed dam call: ``status`` (a negative dam_status) and ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidArgumentError(DamError, ValueError):
    """A bad argument (a null pointer, a value out of range, a closed handle)."""


class InvalidRegionError(DamError, ValueError):
    """A region that selects nothing, or does not fit the image."""


class UnsupportedRegionError(DamError, NotImplementedError):
    """A region kind this build cannot use (clicks need a segmenter)."""


class InvalidModelError(DamError):
    """GGUF files that are not a DAM model pair, or do not match each other."""


class DamIOError(DamError, OSError):
    """A file that cannot be read."""


class ContextOverflowError(DamError):
    """The prompt and caption do not fit the context (raise ``n_ctx``)."""


class CancelledError(DamError):
    """The call was cancelled (``Session.cancel`` or a callback returning False)."""


class BackendError(DamError):
    """The compute backend failed (device out of memory, driver error)."""


class VersionMismatchError(DamError):
    """The library implements another C API version than these bindings."""


class BufferTooSmallError(DamError):
    """An output buffer was too small (handled inside the bindings)."""


class InternalError(DamError):
    """A bug in dam: please report it."""


_ERRORS = {
    _ffi.INVALID_ARGUMENT: InvalidArgumentError,
    _ffi.INVALID_REGION: InvalidRegionError,
    _ffi.UNSUPPORTED_REGION: UnsupportedRegionError,
    _ffi.INVALID_MODEL: InvalidModelError,
    _ffi.IO: DamIOError,
    _ffi.CONTEXT_OVERFLOW: ContextOverflowError,
    _ffi.CANCELLED: CancelledError,
    _ffi.BACKEND: BackendError,
    _ffi.VERSION_MISMATCH: VersionMismatchError,
    _ffi.BUFFER_TOO_SMALL: BufferTooSmallError,
    _ffi.INTERNAL: InternalError,
}


def _error(status: int, message: Optional[str] = None) -> DamError:
    if message is None:
        message = (_L().dam_last_error() or b"").decode("utf-8", "replace")
    return _ERRORS.get(status, DamError)(status, message)


def _check(status: int) -> None:
    if status != _ffi.OK:
        raise _error(status)


# ------------------------------------------------------------------ module functions


def version() -> str:
    """The library's version."""
    return _L().dam_version().decode()


def library_path() -> str:
    """The path of the loaded libdam."""
    _L()
    assert _lib_path is not None
    return _lib_path


def backend_info() -> dict:
    """Backends, devices, threads, SIMD features (dam_backend_info() parsed)."""
    return json.loads(_L().dam_backend_info().decode())


# ------------------------------------------------------------------ inputs


def _np():
    import numpy

    return numpy


def _as_array(img: Any, what: str):
    """A C-contiguous uint8 array (H, W) or (H, W, C) from PIL / numpy / a path."""
    np = _np()
    if isinstance(img, (str, os.PathLike)):
        from PIL import Image

        with Image.open(img) as im:
            im.load()
            img = im.copy()
    try:
        from PIL import Image

        if isinstance(img, Image.Image):
            if img.mode == "1":
                img = img.convert("L")
            elif img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            img = np.asarray(img)
    except ImportError:
        pass
    a = np.asarray(img)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.dtype != np.uint8:
        raise InvalidArgumentError(_ffi.INVALID_ARGUMENT, f"{what}: expected uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InvalidArgumentError(
            _ffi.INVALID_ARGUMENT, f"{what}: expected H x W, H x W x 3 or H x W x 4, got shape {a.shape}"
        )
    return np.ascontiguousarray(a)


def _view(a) -> _ffi.ImageView:
    if a.ndim == 2:
        fmt = _ffi.PIXEL_FORMAT_GRAY8
    elif a.shape[2] == 3:
        fmt = _ffi.PIXEL_FORMAT_RGB8
    else:
        fmt = _ffi.PIXEL_FORMAT_RGBA8
    v = _ffi.ImageView()
    v.data = a.ctypes.data
    v.width = a.shape[1]
    v.height = a.shape[0]
    v.stride_bytes = a.strides[0]
    v.format = fmt
    return v


class _Frame:
    """One image + region, with the memory the C structs point to kept alive."""

    def __init__(self, image, mask, box, scribble, brush, alpha, points, normalized, segment_box=False):
        if segment_box and box is None:
            raise ValueError("segment_box=True goes with box=")
        given = [x is not None for x in (mask, box, scribble, points)] + [bool(alpha)]
        if sum(given) != 1:
            raise ValueError("give exactly one region: mask=, box=, scribble=, alpha=True or points=")
        self.image = _as_array(image, "image")
        self.view = _view(self.image)
        r = _ffi.Region()
        r.struct_size = ctypes.sizeof(_ffi.Region)
        r.normalized = 1 if normalized else 0
        self.keep: list = []
        if mask is not None:
            m = _as_array(mask, "mask")
            self.keep.append(m)
            r.kind = _ffi.REGION_MASK
            r.mask = _view(m)
        elif box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            r.kind = _ffi.REGION_SEGMENTED_BOX if segment_box else _ffi.REGION_BOX
            r.x0, r.y0, r.x1, r.y1 = x0, y0, x1, y1
        elif scribble is not None or points is not None:
            pts = [(float(p[0]), float(p[1])) for p in (scribble if scribble is not None else points)]
            arr = (_ffi.Point * max(1, len(pts)))(*[_ffi.Point(x, y) for x, y in pts])
            self.keep.append(arr)
            r.points = ctypes.cast(arr, ctypes.POINTER(_ffi.Point))
            r.n_points = len(pts)
            if scribble is not None:
                r.kind = _ffi.REGION_SCRIBBLE
                r.brush_width = float(brush)
            else:
                r.kind = _ffi.REGION_POINTS
                labels = [1 if (len(p) < 3 or p[2]) else 0 for p in points]
                la = (ctypes.c_int32 * max(1, len(labels)))(*labels)
                self.keep.append(la)
                r.point_labels = ctypes.cast(la, ctypes.POINTER(ctypes.c_int32))
        else:
            r.kind = _ffi.REGION_ALPHA
        self.region = r


_LENGTHS = {
    "words": _ffi.LENGTH_WORDS,
    "about": _ffi.LENGTH_ABOUT_WORDS,
    "more-than": _ffi.LENGTH_MORE_THAN_WORDS,
    "sentences": _ffi.LENGTH_SENTENCES,
}


def _options(
    query: Optional[str],
    length: Optional[str],
    greedy: bool,
    temperature: Optional[float],
    top_p: Optional[float],
    top_k: Optional[int],
    seed: Optional[int],
    max_tokens: Optional[int],
) -> tuple[_ffi.DescribeOptions, Any]:
    o = _L().dam_describe_options_default()
    keep = None
    if query is not None:
        keep = query.encode("utf-8")
        o.query = keep
    if length is not None:
        kind, _, n = str(length).partition(":")
        if kind not in _LENGTHS or not n.isdigit():
            raise ValueError(f"length {length!r}: expected words:N, about:N, more-than:N or sentences:N")
        o.length_kind = _LENGTHS[kind]
        o.length_value = int(n)
    if temperature is not None:
        o.temperature = temperature
    if greedy:
        o.temperature = 0.0
    if top_p is not None:
        o.top_p = top_p
    if top_k is not None:
        o.top_k = top_k
    if seed is not None:
        o.seed = seed
    if max_tokens is not None:
        if max_tokens < 0 or max_tokens > 0xFFFFFFFF:
            raise ValueError(f"max_tokens {max_tokens} out of range")
        o.max_new_tokens = max_tokens
    return o, keep


# ------------------------------------------------------------------ session


class Session:
    """A session: KV cache and compute buffers for one thread at a time. Create one per
    thread; ``Model.describe`` uses a shared one behind a lock."""

    def __init__(self, model: "Model", threads: int = 0):
        lib = _L()
        p = lib.dam_session_default_params()
        p.n_threads = threads
        out = ctypes.c_void_p()
        _check(lib.dam_session_new(model._ptr(), ctypes.byref(p), ctypes.byref(out)))
        self._model = model  # keeps callbacks alive
        self._handle = out
        # Serialises the C calls of this session across Python threads (the C API would
        # refuse a concurrent call) and keeps close() from freeing it under a running call.
        self._busy = threading.Lock()
        self._owner: Optional[int] = None
        self._free_lock = threading.Lock()  # cancel() never races with the free

    @contextlib.contextmanager
    def _using(self) -> Iterator[ctypes.c_void_p]:
        if self._owner == threading.get_ident():
            raise InvalidArgumentError(
                _ffi.INVALID_ARGUMENT, "the session is in use by this thread (called from its own callback?)"
            )
        with self._busy:
            self._owner = threading.get_ident()
            try:
                yield self._ptr()
            finally:
                self._owner = None

    def close(self) -> None:
        """Frees the session; a running call on another thread is cancelled first."""
        if not self._handle:
            return
        if self._owner == threading.get_ident():
            raise InvalidArgumentError(_ffi.INVALID_ARGUMENT, "cannot close a session from its own callback")
        if not self._busy.acquire(blocking=False):
            self.cancel()  # the running call ends within one token
            self._busy.acquire()
        try:
            with self._free_lock:
                if self._handle:
                    _L().dam_session_free(self._handle)
                    self._handle = ctypes.c_void_p()
        finally:
            self._busy.release()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ptr(self) -> ctypes.c_void_p:
        if not self._handle:
            raise InvalidArgumentError(_ffi.INVALID_ARGUMENT, "the session is closed")
        return self._handle

    def cancel(self) -> None:
        """Cancels the running (or the next) describe call; any thread."""
        with self._free_lock:
            _check(_L().dam_session_cancel(self._ptr()))

    def last_caption(self) -> str:
        """The caption of the last successful describe call ("" if none)."""
        with self._using() as h:
            return self._last_caption(h)

    @staticmethod
    def _last_caption(h, index: int = 0) -> str:
        lib = _L()
        n = ctypes.c_size_t(0)
        st = lib.dam_session_caption(h, index, None, 0, ctypes.byref(n))
        if st != _ffi.BUFFER_TOO_SMALL:
            _check(st)
        buf = ctypes.create_string_buffer(n.value)
        _check(lib.dam_session_caption(h, index, buf, n.value, ctypes.byref(n)))
        return buf.raw[: n.value - 1].decode("utf-8")

    def timings(self) -> dict:
        """Timings of the last successful describe call."""
        t = _ffi.Timings()
        t.struct_size = ctypes.sizeof(_ffi.Timings)
        with self._using() as h:
            _check(_L().dam_session_timings(h, ctypes.byref(t)))
        return {
            "preprocess_ms": t.preprocess_ms,
            "vision_ms": t.vision_ms,
            "prefill_ms": t.prefill_ms,
            "decode_ms": t.decode_ms,
            "n_prompt_tokens": t.n_prompt_tokens,
            "n_generated_tokens": t.n_generated_tokens,
        }

    # One C call; returns (status, caption or None, error message or None). Reads the
    # thread-local error message on the calling thread.
    def _call(self, frames: Sequence[_Frame], opts, on_piece: Optional[Callable[[str], bool]]):
        if on_piece is None:
            cb = _ffi.TOKEN_CALLBACK()
        else:

            def trampoline(ptr, n, _ud):
                try:
                    return bool(on_piece(ctypes.string_at(ptr, n).decode("utf-8")))
                except BaseException:  # never let an exception reach C
                    return False

            cb = _ffi.TOKEN_CALLBACK(trampoline)
        with self._using() as h:
            return self._call_locked(h, frames, opts, cb)

    def _call_locked(self, h, frames, opts, cb):
        lib = _L()
        buf = ctypes.create_string_buffer(4096)
        n = ctypes.c_size_t(0)
        if len(frames) == 1:
            st = lib.dam_describe(
                h,
                ctypes.byref(frames[0].view),
                ctypes.byref(frames[0].region),
                ctypes.byref(opts),
                cb,
                None,
                buf,
                len(buf),
                ctypes.byref(n),
            )
        else:
            views = (_ffi.ImageView * len(frames))(*[f.view for f in frames])
            regions = (_ffi.Region * len(frames))(*[f.region for f in frames])
            st = lib.dam_describe_video(
                h, views, regions, len(frames), ctypes.byref(opts), cb, None, buf, len(buf),
                ctypes.byref(n),
            )
        if st == _ffi.BUFFER_TOO_SMALL:
            return _ffi.OK, self._last_caption(h), None
        if st != _ffi.OK:
            return st, None, (lib.dam_last_error() or b"").decode("utf-8", "replace")
        return st, buf.raw[: n.value - 1].decode("utf-8"), None

    def describe(
        self,
        image: Any,
        mask: Any = None,
        *,
        box: Optional[Sequence[float]] = None,
        scribble: Optional[Sequence[Sequence[float]]] = None,
        brush: float = 10.0,
        alpha: bool = False,
        points: Optional[Sequence[Sequence[float]]] = None,
        normalized: bool = False,
        segment_box: bool = False,
        query: Optional[str] = None,
        length: Optional[str] = None,
        greedy: bool = False,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        max_tokens: Optional[int] = None,
        on_token: Optional[Callable[[str], Any]] = None,
    ) -> str:
        """Describes one region of ``image``; returns the caption. ``on_token(piece)`` is
        called with each piece; returning False stops generation (None goes on)."""
        frame = _Frame(image, mask, box, scribble, brush, alpha, points, normalized, segment_box)
        opts, _keep = _options(query, length, greedy, temperature, top_p, top_k, seed, max_tokens)
        cb = None
        if on_token is not None:

            def cb(piece: str) -> bool:
                return on_token(piece) is not False

        st, text, msg = self._call([frame], opts, cb)
        if st != _ffi.OK:
            raise _error(st, msg)
        assert text is not None
        return text

    def describe_video(
        self,
        images: Sequence[Any],
        masks: Sequence[Any],
        *,
        query: Optional[str] = None,
        length: Optional[str] = None,
        greedy: bool = False,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        max_tokens: Optional[int] = None,
    ) -> str:
        """Describes the object masked in up to ``model.max_frames`` frames (one mask each)."""
        if len(images) != len(masks):
            raise ValueError("give one mask per image")
        frames = [_Frame(i, m, None, None, 0.0, False, None, False) for i, m in zip(images, masks)]
        opts, _keep = _options(query, length, greedy, temperature, top_p, top_k, seed, max_tokens)
        st, text, msg = self._call(frames, opts, None)
        if st != _ffi.OK:
            raise _error(st, msg)
        assert text is not None
        return text

    def describe_batch(
        self,
        image: Any,
        regions: Sequence[dict],
        *,
        query: Optional[str] = None,
        length: Optional[str] = None,
        greedy: bool = False,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        max_tokens: Optional[int] = None,
        on_token: Optional[Callable[[int, str], Any]] = None,
    ) -> list[str]:
        """Describes several regions of one image in one call (batched vision, captions
        decoded in parallel); returns one caption per region, each the one ``describe``
        gives for that region. Each region is a dict with one of ``mask``, ``box``,
        ``scribble`` (+ ``brush``), ``alpha`` or ``points``, and optionally
        ``normalized`` or ``segment_box``. ``on_token(k, piece)`` streams region ``k``;
        returning False stops that region only."""
        frames = [
            _Frame(
                image,
                r.get("mask"),
                r.get("box"),
                r.get("scribble"),
                r.get("brush", 10.0),
                r.get("alpha", False),
                r.get("points"),
                r.get("normalized", False),
                r.get("segment_box", False),
            )
            for r in regions
        ]
        if not frames:
            raise ValueError("give at least one region")
        opts, _keep = _options(query, length, greedy, temperature, top_p, top_k, seed, max_tokens)
        if on_token is None:
            cb = _ffi.BATCH_TOKEN_CALLBACK()
        else:

            def trampoline(k, ptr, n, _ud):
                try:
                    piece = ctypes.string_at(ptr, n).decode("utf-8")
                    return on_token(int(k), piece) is not False
                except BaseException:  # never let an exception reach C
                    return False

            cb = _ffi.BATCH_TOKEN_CALLBACK(trampoline)
        lib = _L()
        regs = (_ffi.Region * len(frames))(*[f.region for f in frames])
        with self._using() as h:
            st = lib.dam_describe_batch(
                h, ctypes.byref(frames[0].view), regs, len(frames), ctypes.byref(opts), cb, None
            )
            if st != _ffi.OK:
                raise _error(st, (lib.dam_last_error() or b"").decode("utf-8", "replace"))
            return [self._last_caption(h, k) for k in range(lib.dam_session_caption_count(h))]

    def stream(self, image: Any, mask: Any = None, **kw) -> Iterator[str]:
        """As ``describe``, yielding the caption's pieces as they are generated. Closing the
        generator early stops generation."""
        frame = _Frame(
            image,
            mask,
            kw.pop("box", None),
            kw.pop("scribble", None),
            kw.pop("brush", 10.0),
            kw.pop("alpha", False),
            kw.pop("points", None),
            kw.pop("normalized", False),
            kw.pop("segment_box", False),
        )
        opts, keep = _options(
            kw.pop("query", None),
            kw.pop("length", None),
            kw.pop("greedy", False),
            kw.pop("temperature", None),
            kw.pop("top_p", None),
            kw.pop("top_k", None),
            kw.pop("seed", None),
            kw.pop("max_tokens", None),
        )
        if kw:
            raise TypeError(f"unexpected arguments: {sorted(kw)}")
        return self._stream([frame], opts, keep)

    def _stream(self, frames, opts, keep) -> Iterator[str]:
        q: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        stop = threading.Event()

        def on_piece(piece: str) -> bool:
            q.put(("piece", piece))
            return not stop.is_set()

        def work():
            try:
                q.put(("end", self._call(frames, opts, on_piece)))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                q.put(("raise", e))

        t = threading.Thread(target=work, name="dam-stream", daemon=True)
        t.start()
        try:
            while True:
                kind, value = q.get()
                if kind == "piece":
                    yield value
                elif kind == "raise":
                    raise value
                else:
                    st, _text, msg = value
                    if st != _ffi.OK:
                        raise _error(st, msg)
                    return
        finally:
            stop.set()
            t.join()
            del keep


# ------------------------------------------------------------------ model


def _find_pair(folder: Path) -> tuple[str, str]:
    llm = sorted(folder.glob("*-llm-*.gguf"))
    vis = sorted(folder.glob("*-vision-*.gguf"))
    if len(llm) != 1 or len(vis) != 1:
        raise ValueError(f"{folder}: expected one *-llm-*.gguf and one *-vision-*.gguf")
    return str(llm[0]), str(vis[0])


class Model:
    """Both GGUF files of a DAM model, loaded once (thread-safe, shareable).

    ``Model(llm, vision)`` or ``Model(folder)``. Options: ``threads`` (0 = all cores),
    ``n_ctx``, ``kv_type`` ("f16"/"f32"/"q8_0"; q8_0 needs flash attention),
    ``flash_attn`` ("auto"/"on"/"off"),
    ``n_gpu_layers`` (-1 = all on the GPU when there is one), ``main_gpu`` (index of
    the GPU), ``vision_device`` ("gpu": on the main GPU when there is one; "cpu"),
    ``repack`` (False keeps CPU weights in the file's layout: no AMX/repacked copies),
    ``segmenter`` (a dam-segmenter GGUF: ``points=`` regions become its masks),
    ``log=fn(level, text)`` with ``log_level`` ("debug".."error"), ``progress=fn(stage,
    fraction) -> bool`` (False cancels the load)."""

    def __init__(
        self,
        llm: "str | os.PathLike[str]",
        vision: "Optional[str | os.PathLike[str]]" = None,
        *,
        threads: int = 0,
        n_ctx: int = 0,
        kv_type: str = "f16",
        flash_attn: str = "auto",
        n_gpu_layers: int = -1,
        main_gpu: int = 0,
        vision_device: str = "gpu",
        repack: bool = True,
        segmenter: "Optional[str | os.PathLike[str]]" = None,
        log: Optional[Callable[[str, str], None]] = None,
        log_level: str = "warn",
        progress: Optional[Callable[[str, float], Any]] = None,
    ):
        lib = _L()
        if vision is None:
            llm, vision = _find_pair(Path(llm))
        p = lib.dam_model_default_params()
        p.n_threads = threads
        p.n_ctx = n_ctx
        p.n_gpu_layers = n_gpu_layers
        try:
            p.kv_type = _ffi.KV_TYPES[kv_type]
            p.flash_attn = _ffi.FLASH_ATTN[flash_attn]
            p.log_level = _ffi.LOG_LEVELS[log_level]
            vision_code = _ffi.VISION_DEVICES[vision_device]
        except KeyError as e:
            raise ValueError(f"unknown setting {e}") from None
        d = _ffi.DeviceParams()
        _check(lib.dam_device_params_init(ctypes.byref(d), ctypes.sizeof(d)))
        d.main_gpu = main_gpu
        d.vision_device = vision_code
        d.repack = 1 if repack else 0
        self._segmenter_path = None if segmenter is None else os.fsencode(segmenter)
        d.segmenter_path = self._segmenter_path
        names = {v: k for k, v in _ffi.LOG_LEVELS.items()}
        self._callbacks: list = []
        if log is not None:

            def on_log(level, text, _ud):
                try:
                    log(names.get(level, "info"), (text or b"").decode("utf-8", "replace"))
                except BaseException:
                    pass

            p.log_callback = _ffi.LOG_CALLBACK(on_log)
            self._callbacks.append(p.log_callback)
        if progress is not None:

            def on_progress(stage, fraction, _ud):
                try:
                    return progress(_ffi.LOAD_STAGES.get(stage, str(stage)), fraction) is not False
                except BaseException:
                    return False

            p.progress_callback = _ffi.PROGRESS_CALLBACK(on_progress)
            self._callbacks.append(p.progress_callback)
        out = ctypes.c_void_p()
        st = lib.dam_model_load_on(
            _ffi.API_VERSION,
            os.fsencode(llm),
            os.fsencode(vision),
            ctypes.byref(p),
            ctypes.byref(d),
            ctypes.byref(out),
        )
        _check(st)
        self._handle = out
        self._session: Optional[Session] = None
        self._session_lock = threading.Lock()

    def _ptr(self) -> ctypes.c_void_p:
        if not self._handle:
            raise InvalidArgumentError(_ffi.INVALID_ARGUMENT, "the model is closed")
        return self._handle

    def close(self) -> None:
        """Frees the model (sessions keep working until they are closed)."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._handle:
            _L().dam_model_free(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def max_frames(self) -> int:
        return int(_L().dam_model_max_frames(self._ptr()))

    def session(self, threads: int = 0) -> Session:
        """A new session (one per thread)."""
        return Session(self, threads)

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[Session]:
        """The model's shared session when it is free, else a temporary one (so that a
        describe call inside a ``stream`` loop, or from another thread, never waits)."""
        if self._session_lock.acquire(blocking=False):
            try:
                if self._session is None:
                    self._session = Session(self)
                yield self._session
            finally:
                self._session_lock.release()
        else:
            s = Session(self)
            try:
                yield s
            finally:
                s.close()

    def describe(self, image: Any, mask: Any = None, **kw) -> str:
        """Describes one region (see ``Session.describe``)."""
        with self._borrow() as s:
            return s.describe(image, mask, **kw)

    def describe_batch(self, image: Any, regions: Sequence[dict], **kw) -> list[str]:
        """Describes several regions of one image in one call (see ``Session.describe_batch``)."""
        with self._borrow() as s:
            return s.describe_batch(image, regions, **kw)

    def describe_video(self, images: Sequence[Any], masks: Sequence[Any], **kw) -> str:
        """Describes the object masked in up to ``max_frames`` frames."""
        with self._borrow() as s:
            return s.describe_video(images, masks, **kw)

    def stream(self, image: Any, mask: Any = None, **kw) -> Iterator[str]:
        """Yields the caption's pieces as they are generated (see ``Session.stream``)."""
        with self._borrow() as s:
            yield from s.stream(image, mask, **kw)


class _Closing:
    """close() on garbage collection and at the end of a ``with`` block."""

    def close(self) -> None:
        raise NotImplementedError

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


from .segment import Segmenter  # noqa: E402  (uses the helpers above)
