"""ctypes declarations of dam's C API (include/dam.h, API 1.2) and the library lookup."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.machinery
import os
import sys
from pathlib import Path

API_VERSION_MAJOR = 1
API_VERSION_MINOR = 4
API_VERSION = (API_VERSION_MAJOR << 16) | API_VERSION_MINOR

# dam_status
OK = 0
INVALID_ARGUMENT = -1
INVALID_REGION = -2
UNSUPPORTED_REGION = -3
INVALID_MODEL = -4
IO = -5
CONTEXT_OVERFLOW = -6
CANCELLED = -7
BACKEND = -8
VERSION_MISMATCH = -9
BUFFER_TOO_SMALL = -10
INTERNAL = -11

# dam_pixel_format
PIXEL_FORMAT_RGB8, PIXEL_FORMAT_RGBA8, PIXEL_FORMAT_BGRA8, PIXEL_FORMAT_GRAY8 = 0, 1, 2, 3
# dam_region_kind
REGION_MASK, REGION_ALPHA, REGION_BOX, REGION_SCRIBBLE, REGION_POINTS = 0, 1, 2, 3, 4
REGION_SEGMENTED_BOX = 5  # API 1.4
# dam_length
LENGTH_NONE, LENGTH_WORDS, LENGTH_ABOUT_WORDS, LENGTH_MORE_THAN_WORDS, LENGTH_SENTENCES = 0, 1, 2, 3, 4
# dam_kv_type, dam_flash_attn, dam_log_level, dam_load_stage
KV_TYPES = {"f16": 0, "f32": 1, "q8_0": 2}  # q8_0: API 1.5
FLASH_ATTN = {"auto": 0, "on": 1, "off": 2}
LOG_LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
LOAD_STAGES = {0: "start", 1: "vision_loaded", 2: "llm_loaded", 3: "done"}

TOKEN_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
BATCH_TOKEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_bool, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p
)
PROGRESS_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_int32, ctypes.c_float, ctypes.c_void_p)
LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)


class ModelParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("n_threads", ctypes.c_int32),
        ("n_ctx", ctypes.c_uint32),
        ("kv_type", ctypes.c_int32),
        ("flash_attn", ctypes.c_int32),
        ("n_gpu_layers", ctypes.c_int32),
        ("progress_callback", PROGRESS_CALLBACK),
        ("progress_user_data", ctypes.c_void_p),
        ("log_callback", LOG_CALLBACK),
        ("log_user_data", ctypes.c_void_p),
        ("log_level", ctypes.c_int32),
        ("n_seq_max", ctypes.c_uint32),  # API 1.1
    ]


class DeviceParams(ctypes.Structure):  # API 1.2
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("main_gpu", ctypes.c_int32),
        ("vision_device", ctypes.c_int32),
        ("repack", ctypes.c_int32),
        ("segmenter_path", ctypes.c_char_p),  # API 1.4
    ]


VISION_DEVICES = {"gpu": 0, "cpu": 1}


class SessionParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("n_threads", ctypes.c_int32)]


class DescribeOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("max_new_tokens", ctypes.c_uint32),
        ("query", ctypes.c_char_p),
        ("length_kind", ctypes.c_int32),
        ("length_value", ctypes.c_uint32),
        ("temperature", ctypes.c_float),
        ("top_p", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("seed", ctypes.c_uint32),
    ]


class ImageView(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("stride_bytes", ctypes.c_size_t),
        ("format", ctypes.c_int32),
    ]


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_float), ("y", ctypes.c_float)]


class Region(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("normalized", ctypes.c_int32),
        ("brush_width", ctypes.c_float),
        ("x0", ctypes.c_float),
        ("y0", ctypes.c_float),
        ("x1", ctypes.c_float),
        ("y1", ctypes.c_float),
        ("mask", ImageView),
        ("points", ctypes.POINTER(Point)),
        ("n_points", ctypes.c_size_t),
        ("point_labels", ctypes.POINTER(ctypes.c_int32)),
    ]


class Timings(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("n_prompt_tokens", ctypes.c_uint32),
        ("n_generated_tokens", ctypes.c_uint32),
        ("preprocess_ms", ctypes.c_double),
        ("vision_ms", ctypes.c_double),
        ("prefill_ms", ctypes.c_double),
        ("decode_ms", ctypes.c_double),
    ]


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    # The library a wheel bundles: built by setuptools-rust as the extension dam._libdam,
    # so it carries the interpreter's extension suffix (_libdam.cpython-311-x86_64-linux-gnu.so).
    found = [here / ("_libdam" + s) for s in importlib.machinery.EXTENSION_SUFFIXES]
    names = {"linux": ["libdam.so"], "darwin": ["libdam.dylib"], "win32": ["dam.dll"]}.get(
        sys.platform, ["libdam.so"]
    )
    # A checkout: bindings/python/dam -> repository root -> target/release.
    repo = here.parent.parent.parent
    dirs = [here, repo / "target" / "release", repo / "target" / "debug"]
    return found + [d / n for d in dirs for n in names]


def find_library() -> str:
    """Where libdam is: $DAM_LIBRARY, else the library bundled in this package (pip
    install), else a checkout's target/release, else the system's library path."""
    env = os.environ.get("DAM_LIBRARY")
    if env:
        if not Path(env).is_file():
            raise OSError(f"DAM_LIBRARY={env}: no such file")
        return env
    for p in _candidates():
        if p.is_file():
            return str(p)
    found = ctypes.util.find_library("dam")
    if found:
        return found
    raise OSError(
        "cannot find libdam: `pip install` the package, set DAM_LIBRARY to its path, "
        "or build it with `cargo build --release`"
    )


def load(path: str | None = None) -> ctypes.CDLL:
    lib = ctypes.CDLL(path or find_library())
    c = ctypes
    status = c.c_int32
    sigs = {
        "dam_version": ([], c.c_char_p),
        "dam_api_version": ([], c.c_uint32),
        "dam_status_string": ([c.c_int32], c.c_char_p),
        "dam_last_error": ([], c.c_char_p),
        "dam_backend_info": ([], c.c_char_p),
        "dam_model_default_params": ([], ModelParams),
        "dam_session_default_params": ([], SessionParams),
        "dam_describe_options_default": ([], DescribeOptions),
        "dam_model_load": (
            [c.c_uint32, c.c_char_p, c.c_char_p, c.POINTER(ModelParams), c.POINTER(c.c_void_p)],
            status,
        ),
        "dam_device_params_init": ([c.POINTER(DeviceParams), c.c_size_t], status),
        "dam_model_load_on": (
            [
                c.c_uint32,
                c.c_char_p,
                c.c_char_p,
                c.POINTER(ModelParams),
                c.POINTER(DeviceParams),
                c.POINTER(c.c_void_p),
            ],
            status,
        ),
        "dam_model_free": ([c.c_void_p], None),
        "dam_model_max_frames": ([c.c_void_p], c.c_uint32),
        "dam_session_new": ([c.c_void_p, c.POINTER(SessionParams), c.POINTER(c.c_void_p)], status),
        "dam_session_free": ([c.c_void_p], None),
        "dam_session_cancel": ([c.c_void_p], status),
        "dam_describe": (
            [
                c.c_void_p,
                c.POINTER(ImageView),
                c.POINTER(Region),
                c.POINTER(DescribeOptions),
                TOKEN_CALLBACK,
                c.c_void_p,
                c.c_char_p,
                c.c_size_t,
                c.POINTER(c.c_size_t),
            ],
            status,
        ),
        "dam_describe_video": (
            [
                c.c_void_p,
                c.POINTER(ImageView),
                c.POINTER(Region),
                c.c_size_t,
                c.POINTER(DescribeOptions),
                TOKEN_CALLBACK,
                c.c_void_p,
                c.c_char_p,
                c.c_size_t,
                c.POINTER(c.c_size_t),
            ],
            status,
        ),
        "dam_session_last_caption": (
            [c.c_void_p, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t)],
            status,
        ),
        "dam_session_timings": ([c.c_void_p, c.POINTER(Timings)], status),
        "dam_describe_batch": (
            [
                c.c_void_p,
                c.POINTER(ImageView),
                c.POINTER(Region),
                c.c_size_t,
                c.POINTER(DescribeOptions),
                BATCH_TOKEN_CALLBACK,
                c.c_void_p,
            ],
            status,
        ),
        "dam_session_caption_count": ([c.c_void_p], c.c_size_t),
        "dam_segmenter_load": ([c.c_uint32, c.c_char_p, c.c_int32, c.POINTER(c.c_void_p)], status),
        "dam_segmenter_free": ([c.c_void_p], None),
        "dam_segment": (
            [
                c.c_void_p,
                c.POINTER(ImageView),
                c.POINTER(Region),
                c.c_int32,
                c.POINTER(c.c_uint8),
                c.c_size_t,
                c.POINTER(c.c_float),
                c.c_size_t,
                c.POINTER(c.c_size_t),
                c.POINTER(c.c_int32),
            ],
            status,
        ),
        "dam_session_caption": (
            [c.c_void_p, c.c_size_t, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t)],
            status,
        ),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = res
    return lib
