"""A segmenter on its own (C API 1.4): clicks and/or a box to a mask.

    seg = dam.Segmenter("sam-segmenter-f32.gguf")
    mask, scores, best = seg.segment("photo.jpg", points=[(120, 80), (10, 10, False)])

A second call on the same image reuses its embedding (only the mask decoder runs).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Optional, Sequence

from . import _L, _Closing, _as_array, _check, _ffi, _np, _view, InvalidArgumentError


class Segmenter(_Closing):
    """A loaded dam-segmenter GGUF file (thread-safe: calls are serialised)."""

    def __init__(self, path: "str | os.PathLike[str]", threads: int = 0):
        out = ctypes.c_void_p()
        _check(_L().dam_segmenter_load(_ffi.API_VERSION, os.fsencode(path), threads, ctypes.byref(out)))
        self._handle = out
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._handle:
                _L().dam_segmenter_free(self._handle)
                self._handle = ctypes.c_void_p()

    def segment(
        self,
        image: Any,
        points: Optional[Sequence[Sequence[Any]]] = None,
        box: Optional[Sequence[float]] = None,
        multimask: bool = True,
    ):
        """The mask (H x W uint8, 1 = inside) of ``points`` ``[(x, y[, positive]), ...]`` or
        ``box`` ``(x0, y0, x1, y1)`` (pixels; one of them), every candidate's predicted IoU
        and the selected candidate's index."""
        if (points is None) == (box is None):
            raise ValueError("give points= or box=")
        np = _np()
        img = _as_array(image, "image")
        r = _ffi.Region()
        r.struct_size = ctypes.sizeof(_ffi.Region)
        keep: list = []
        if box is not None:
            r.kind = _ffi.REGION_SEGMENTED_BOX
            r.x0, r.y0, r.x1, r.y1 = (float(v) for v in box)
        else:
            r.kind = _ffi.REGION_POINTS
            pts = [_ffi.Point(float(p[0]), float(p[1])) for p in points]
            labels = [1 if (len(p) < 3 or p[2]) else 0 for p in points]
            arr = (_ffi.Point * max(1, len(pts)))(*pts)
            la = (ctypes.c_int32 * max(1, len(labels)))(*labels)
            keep += [arr, la]
            r.points = ctypes.cast(arr, ctypes.POINTER(_ffi.Point))
            r.n_points = len(pts)
            r.point_labels = ctypes.cast(la, ctypes.POINTER(ctypes.c_int32))
        mask = np.zeros(img.shape[:2], dtype=np.uint8)
        scores = (ctypes.c_float * 16)()
        n = ctypes.c_size_t()
        best = ctypes.c_int32()
        with self._lock:
            if not self._handle:
                raise InvalidArgumentError(_ffi.INVALID_ARGUMENT, "the segmenter is closed")
            st = _L().dam_segment(
                self._handle,
                ctypes.byref(_view(img)),
                ctypes.byref(r),
                1 if multimask else 0,
                mask.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                mask.size,
                scores,
                len(scores),
                ctypes.byref(n),
                ctypes.byref(best),
            )
        _check(st)
        return mask, [scores[i] for i in range(n.value)], best.value
