"""Captions a Parquet data set of regions on Ray: ``python -m dam.ray_caption``.

    python -m dam.ray_caption --input regions/ --output captions/ -m models/ --actors 4 \\
        --threads 2 --greedy --max-tokens 64

Input rows as ``dam.ray`` documents them, plus a unique id column (``--id-column``). Each run
writes its rows into a new ``run-*`` folder of ``--output``; a run skips the ids that any
readable Parquet file under ``--output`` already holds, so an interrupted job resumes where it
stopped (a file cut short by a crash has no footer, is set aside as ``*.partial`` and its rows
are captioned again). Output columns: the input's plus ``dam.ray.OUTPUT_SCHEMA``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import List, Optional, Set

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import ray as dam_ray


def done_ids(output: Path, id_column: str) -> Set:
    """The ids already captioned under ``output``; unreadable files are renamed *.partial."""
    ids: Set = set()
    for f in sorted(output.rglob("*.parquet")):
        try:
            ids.update(pq.read_table(f, columns=[id_column]).column(id_column).to_pylist())
        except Exception as e:  # a file cut short by a crash
            print(f"dam.ray_caption: {f}: unreadable ({e}); its rows are captioned again", file=sys.stderr)
            f.rename(f.with_name(f.name + ".partial"))
    return ids


def _args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dam.ray_caption", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="a Parquet file or folder")
    p.add_argument("--output", required=True, help="output folder (resumable)")
    p.add_argument("-m", "--model", required=True, help="model folder, or the LLM GGUF with --vision")
    p.add_argument("--vision", help="vision GGUF (when --model is the LLM file)")
    p.add_argument("--actors", type=int, default=1,
                   help="model copies (Ray actors); leave one CPU free: actors x threads < the cluster's CPUs")
    p.add_argument("--threads", type=int, default=1, help="threads (and Ray CPUs) per actor")
    p.add_argument("--gpus", type=float, default=0, help="GPUs per actor (1: one actor per GPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--id-column", default="id")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray or RAY_ADDRESS)")
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--query")
    p.add_argument("--length", help="words:N, about:N, more-than:N or sentences:N")
    p.add_argument("--seed", type=int)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the CLI; returns the number of rows captioned by this run."""
    import ray

    a = _args(argv)
    if not ray.is_initialized():
        ray.init(address=a.address)
    output = Path(a.output)
    output.mkdir(parents=True, exist_ok=True)
    skip = done_ids(output, a.id_column)
    # Reading, filtering and writing reserve no CPU, so they run beside the actors; Ray's
    # file listing still takes one: leave one CPU of the cluster free (actors x threads < CPUs).
    light = {"num_cpus": 0}
    ds = ray.data.read_parquet(a.input, num_cpus=0)
    if skip:
        value_set = pa.array(sorted(skip))

        def todo(t: pa.Table) -> pa.Table:
            return t.filter(pc.invert(pc.is_in(t[a.id_column], value_set=value_set)))

        ds = ds.map_batches(todo, batch_format="pyarrow", **light)
    options = {
        k: v
        for k, v in {"greedy": a.greedy, "max_tokens": a.max_tokens, "query": a.query, "length": a.length,
                     "seed": a.seed}.items()
        if v not in (None, False)
    }
    out = dam_ray.caption_dataset(
        ds, a.model, a.vision, actors=a.actors, threads=a.threads, num_gpus=a.gpus, batch_size=a.batch_size,
        options=options,
    )
    run = output / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    out.write_parquet(str(run), ray_remote_args=light)
    n = sum(pq.read_metadata(f).num_rows for f in run.rglob("*.parquet")) if run.exists() else 0
    print(f"dam.ray_caption: {n} rows captioned into {run} ({len(skip)} skipped as done)", file=sys.stderr)
    return n


if __name__ == "__main__":
    main()
