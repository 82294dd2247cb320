"""Captioning a data set with dam on Ray Data: one model per actor, errors per row.

    import ray, dam.ray
    ds = ray.data.read_parquet("regions/")                  # rows: image + one region each
    out = dam.ray.caption_dataset(ds, "models/", actors=4, threads=2,
                                  options={"greedy": True, "max_tokens": 64})
    out.write_parquet("captions/")

or ``ds.map_batches(dam.ray.Captioner, fn_constructor_kwargs={"llm": "models/"},
compute=ray.data.ActorPoolStrategy(size=4), num_cpus=2, batch_format="pyarrow")`` directly.

Input columns (one row = one region):

- ``image``: encoded image bytes (PNG/JPEG), a path, or a nested list / array of uint8 pixels.
- exactly one region, the others null or absent: ``mask`` (bytes, path or array; pixel > 0),
  ``box`` ([x0, y0, x1, y1]), ``scribble`` ([[x, y], ...], with optional ``brush``),
  ``alpha`` (true: the image's alpha channel); optional ``normalized`` (fractions of the size).

Every input column is kept; ``OUTPUT_SCHEMA`` lists the columns added. A bad row (undecodable
image, no region, a region outside the image) gets its ``error`` and a null ``caption``; it
never fails the job. Rows of a batch that share an image are captioned by one
``describe_batch`` call (batched vision, parallel decoding), up to ``MAX_REGIONS`` at a time.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

import dam

# The columns Captioner adds. Timings and token counts are those of the C call that made the
# caption: when rows shared an image (``call_regions`` > 1) they are the call's totals.
OUTPUT_SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("error", pa.string()),
        ("call_regions", pa.int32()),
        ("n_prompt_tokens", pa.int64()),
        ("n_generated_tokens", pa.int64()),
        ("preprocess_ms", pa.float64()),
        ("vision_ms", pa.float64()),
        ("prefill_ms", pa.float64()),
        ("decode_ms", pa.float64()),
    ]
)

MAX_REGIONS = 64  # dam_describe_batch's limit per call
_REGION_KEYS = ("mask", "box", "scribble", "alpha")
_TIMING_KEYS = ("n_prompt_tokens", "n_generated_tokens", "preprocess_ms", "vision_ms", "prefill_ms", "decode_ms")


def _pixels(value: Any, what: str) -> Any:
    """A path stays a path; bytes are decoded with PIL; nested lists become a uint8 array."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(bytes(value))) as im:
                im.load()
                return im.copy()
        except Exception as e:  # PIL raises several types for bad data
            raise ValueError(f"{what}: cannot decode the image bytes ({e})") from None
    return np.asarray(value, dtype=np.uint8)


def _image_key(value: Any) -> Tuple[str, Any]:
    """Rows with equal keys share one image (and one describe_batch call)."""
    if isinstance(value, str):
        return ("path", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", hashlib.blake2b(bytes(value), digest_size=16).digest())
    a = np.asarray(value)
    return ("array", (a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest()))


def _region(row: Dict[str, Any]) -> Dict[str, Any]:
    """The region dict of ``Session.describe_batch`` from a row's region columns."""
    given = [k for k in _REGION_KEYS if row.get(k) is not None and row.get(k) is not False]
    if len(given) != 1:
        raise ValueError(f"give exactly one region column of {list(_REGION_KEYS)}, got {given or 'none'}")
    k = given[0]
    r: Dict[str, Any] = {"normalized": bool(row.get("normalized") or False)}
    if k == "mask":
        r["mask"] = _pixels(row["mask"], "mask")
    elif k == "alpha":
        r["alpha"] = True
    else:
        r[k] = row[k]
        if k == "scribble" and row.get("brush") is not None:
            r["brush"] = float(row["brush"])
    return r


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class Captioner:
    """A callable class for ``Dataset.map_batches`` (``batch_format="pyarrow"``): loads the
    model once per actor and adds the ``OUTPUT_SCHEMA`` columns to each batch.

    ``llm``/``vision`` as ``dam.Model`` (a folder or the two GGUF paths; they must exist on
    every node). ``threads``: the session's threads (give the actor as many ``num_cpus``).
    ``options``: ``describe`` keywords (``greedy``, ``max_tokens``, ``query``, ``length``,
    ``temperature``, ``seed``, ...). ``model_options``: ``dam.Model`` keywords."""

    def __init__(
        self,
        llm: str,
        vision: Optional[str] = None,
        *,
        threads: int = 1,
        options: Optional[Dict[str, Any]] = None,
        model_options: Optional[Dict[str, Any]] = None,
    ):
        self.model = dam.Model(llm, vision, threads=threads, **(model_options or {}))
        self.session = self.model.session(threads=threads)
        self.options = dict(options or {})

    def __call__(self, batch: "pa.Table | Dict[str, Any]") -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else pa.table(batch)
        rows = table.to_pylist()
        out: List[Dict[str, Any]] = [{"caption": None, "error": None} for _ in rows]
        groups: Dict[Tuple[str, Any], List[int]] = {}
        for i, row in enumerate(rows):
            try:
                groups.setdefault(_image_key(row.get("image")), []).append(i)
            except Exception as e:
                out[i]["error"] = _error_text(e)
        for idx in groups.values():
            self._caption_group(rows, idx, out)
        for name in OUTPUT_SCHEMA.names:
            table = table.append_column(
                OUTPUT_SCHEMA.field(name), pa.array([o.get(name) for o in out], OUTPUT_SCHEMA.field(name).type)
            )
        return table

    def _caption_group(self, rows: List[Dict[str, Any]], idx: List[int], out: List[Dict[str, Any]]) -> None:
        """Captions the rows ``idx`` that share one image; errors stay in their rows."""
        try:
            image = _pixels(rows[idx[0]]["image"], "image")
        except Exception as e:
            for i in idx:
                out[i]["error"] = _error_text(e)
            return
        ok: List[Tuple[int, Dict[str, Any]]] = []
        for i in idx:
            try:
                ok.append((i, _region(rows[i])))
            except Exception as e:
                out[i]["error"] = _error_text(e)
        for start in range(0, len(ok), MAX_REGIONS):
            chunk = ok[start : start + MAX_REGIONS]
            if len(chunk) > 1:
                try:
                    captions = self.session.describe_batch(image, [r for _, r in chunk], **self.options)
                    self._fill(out, [i for i, _ in chunk], captions)
                    continue
                except Exception:
                    pass  # one bad region fails the whole call: caption one by one for the errors
            for i, r in chunk:
                try:
                    text = self.session.describe(image, **r, **self.options)
                    self._fill(out, [i], [text])
                except Exception as e:
                    out[i]["error"] = _error_text(e)

    def _fill(self, out: List[Dict[str, Any]], idx: List[int], captions: List[str]) -> None:
        t = self.session.timings()
        for i, text in zip(idx, captions):
            out[i].update({k: t[k] for k in _TIMING_KEYS}, caption=text, call_regions=len(idx))


def caption_dataset(
    ds: Any,
    llm: str,
    vision: Optional[str] = None,
    *,
    actors: int = 1,
    threads: int = 1,
    num_gpus: float = 0,
    batch_size: int = 16,
    options: Optional[Dict[str, Any]] = None,
    model_options: Optional[Dict[str, Any]] = None,
    cls: type = Captioner,
) -> Any:
    """``ds.map_batches`` with ``actors`` Captioner actors of ``threads`` CPUs (and
    ``num_gpus`` GPUs) each. Ray Data restarts a dead actor and retries its batch (its actor
    pools default to max_restarts=-1, max_task_retries=-1), so no row is lost or written
    twice."""
    import ray

    return ds.map_batches(
        cls,
        fn_constructor_kwargs={
            "llm": llm,
            "vision": vision,
            "threads": threads,
            "options": options,
            "model_options": model_options,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=num_gpus,
    )
