"""dam.ray on one machine: the same regions captioned by 1 and by 2 actors of 1 thread.

    cargo build --release && target/release/dam convert tests/fixtures/geom/checkpoint \\
        --outdir models/geom --type f32 --name geom
    PYTHONPATH=bindings/python .venv/bin/python benches/ray_scaling.py models/geom [ROWS]

Prints a Markdown table: wall time (actor start and model load included), rows/s, and the actors' CPU time (user+sys of their
processes while captioning, summed), which stays meaningful on a machine others load too.
"""

import sys
import time
from pathlib import Path

import pyarrow as pa
import ray

import dam.ray as dam_ray

CASES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "geom" / "cases"
OPTS = {"greedy": True, "max_tokens": 32}


class Timed(dam_ray.Captioner):
    """Adds the actor's CPU seconds spent on each batch."""

    def __call__(self, batch):
        t0 = time.process_time()
        out = super().__call__(batch)
        return out.append_column("cpu_s", pa.array([time.process_time() - t0] + [0.0] * (out.num_rows - 1)))


def rows(n: int) -> pa.Table:
    out = []
    for i in range(n):
        case = "c1" if i % 2 else "c2"
        r = {"id": i, "image": str(CASES / f"{case}_image.png"), "mask": None, "box": None, "normalized": i % 4 >= 2}
        if i % 4 < 2:
            r["mask"] = (CASES / f"{case}_mask.png").read_bytes()
        else:
            r["box"] = [0.1 + 0.01 * (i % 10), 0.2, 0.7, 0.8]
        out.append(r)
    return pa.Table.from_pylist(out)


def main() -> None:
    model, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 32
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print("| actors x threads | rows | wall s | rows/s | actors' CPU s |")
    print("|---|---|---|---|---|")
    for actors in (1, 2):
        t = rows(n)  # blocks of 4 rows: one task each, so every actor gets work
        ds = ray.data.from_arrow([t.slice(i, 4) for i in range(0, n, 4)])
        out = dam_ray.caption_dataset(
            ds, model, actors=actors, threads=1, batch_size=4, options=OPTS, cls=Timed
        )
        t0 = time.perf_counter()
        result = pa.concat_tables(ray.get(out.to_arrow_refs()))
        wall = time.perf_counter() - t0
        assert result.column("error").null_count == n, result.column("error").to_pylist()
        cpu = sum(result.column("cpu_s").to_pylist())
        print(f"| {actors} x 1 | {n} | {wall:.1f} | {n / wall:.2f} | {cpu:.1f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
