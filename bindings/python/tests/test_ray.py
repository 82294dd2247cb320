"""dam.ray on a local Ray (2 CPUs): 40 rows of the fixture images with masks, boxes, scribbles
and bad rows. Greedy captions equal direct dam calls, bad rows carry their error, the output
has the documented schema; the CLI resumes; an actor killed mid-run loses and repeats no row."""

import io
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

ray = pytest.importorskip("ray")  # tests/python_pkg.rs checks that ray is installed

import dam  # noqa: E402
import dam.ray as dam_ray  # noqa: E402
from dam import ray_caption  # noqa: E402

N = 8  # tokens per caption
OPTS = {"greedy": True, "max_tokens": N}
CASES = Path(__file__).resolve().parent.parent.parent.parent / "tests" / "fixtures" / "tiny" / "cases"
BAD = {5: "no region", 13: "no such image file", 22: "box outside the image", 31: "two regions"}


def rows() -> list:
    """40 regions: images by path (the small one shared by many rows: describe_batch), masks as
    PNG bytes, boxes, scribbles; BAD's rows fail."""
    small, small_mask = str(CASES / "c2_image.png"), (CASES / "c2_mask.png").read_bytes()
    out = []
    for i in range(40):
        r = {"id": i, "image": small, "mask": None, "box": None, "scribble": None}
        if i % 10 == 9:
            r.update(image=str(CASES / "c1_image.png"), mask=(CASES / "c1_mask.png").read_bytes())
        elif i % 3 == 0:
            r["mask"] = small_mask
        elif i % 3 == 1:
            r["box"] = [float(i % 20), 5.0, 60.0 + i % 30, 50.0]
        else:
            r["scribble"] = [[10.0 + i, 10.0], [50.0, 20.0 + i % 20], [80.0, 50.0]]
        out.append(r)
    out[5].update(mask=None, box=None, scribble=None)
    out[13]["image"] = str(CASES / "no-such-image.png")
    out[22].update(mask=None, scribble=None, box=[500.0, 500.0, 600.0, 600.0])
    out[31].update(box=[1.0, 1.0, 20.0, 20.0], mask=small_mask)
    return out


def table() -> pa.Table:
    return pa.Table.from_pylist(rows())


def dataset():
    """The rows in blocks of 8: one task per block, so both actors get work."""
    t = table()
    return ray.data.from_arrow([t.slice(i, 8) for i in range(0, t.num_rows, 8)])


@pytest.fixture(scope="module")
def local_ray():
    env = {}
    if os.environ.get("DAM_TEST_INSTALLED") != "1":  # the workers import dam from the checkout
        env["PYTHONPATH"] = os.pathsep.join([str(Path(dam.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20,
             runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def expected(model):
    """Each good row's caption from a direct dam call, by id."""
    want = {}
    for r in rows():
        if r["id"] in BAD:
            continue
        image = r["image"]
        mask = Image.open(io.BytesIO(r["mask"])) if r["mask"] is not None else None
        region = {k: v for k, v in {"mask": mask, "box": r["box"], "scribble": r["scribble"]}.items() if v is not None}
        want[r["id"]] = model.describe(image, **region, **OPTS)
    return want


def check(result: pa.Table, expected: dict) -> None:
    assert result.schema.names == table().schema.names + dam_ray.OUTPUT_SCHEMA.names
    for name in dam_ray.OUTPUT_SCHEMA.names:
        assert result.schema.field(name).type == dam_ray.OUTPUT_SCHEMA.field(name).type, name
    got = {r["id"]: r for r in result.to_pylist()}
    assert sorted(got) == list(range(40)) and result.num_rows == 40  # none lost, none twice
    for i, r in got.items():
        if i in BAD:
            assert r["caption"] is None and r["error"], (i, BAD[i], r["error"])
        else:
            assert r["error"] is None, (i, r["error"])
            assert r["caption"] == expected[i], i
            assert r["n_generated_tokens"] >= 1 and r["vision_ms"] > 0 and r["call_regions"] >= 1
    assert "ValueError" in got[5]["error"] and "InvalidRegionError" in got[22]["error"]
    assert max(r["call_regions"] for r in got.values() if r["call_regions"]) > 1  # describe_batch ran


def model_args(model_files) -> dict:
    return {"llm": model_files[0], "vision": model_files[1], "options": OPTS}


def test_captions_errors_schema(local_ray, model_files, expected):
    ds = dataset()
    out = dam_ray.caption_dataset(ds, **model_args(model_files), actors=2, threads=1, batch_size=8)
    check(pa.concat_tables(ray.get(out.to_arrow_refs())), expected)


class CrashOnce(dam_ray.Captioner):
    """Dies (as a killed process: no clean-up) in its second batch, once per test."""

    marker = ""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches = 0

    def __call__(self, batch):
        self.batches += 1
        if self.batches == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(batch)


def test_actor_killed_mid_run(local_ray, model_files, expected, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    CrashOnce.marker = str(tmp_path / "crashed")
    ds = dataset()
    out = dam_ray.caption_dataset(ds, **model_args(model_files), actors=1, threads=1, batch_size=8, cls=CrashOnce)
    check(pa.concat_tables(ray.get(out.to_arrow_refs())), expected)
    assert os.path.exists(CrashOnce.marker)  # it did die


def test_cli_resumes(local_ray, model_files, expected, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    t = table()
    pq.write_table(t.slice(0, 24), src / "a.parquet")
    argv = ["--input", str(src), "--output", str(dst), "-m", model_files[0], "--vision", model_files[1],
            "--actors", "1", "--batch-size", "8", "--greedy", "--max-tokens", str(N)]
    assert ray_caption.main(argv) == 24
    # More input arrives, and a crash left a file without its footer: only new rows run.
    pq.write_table(t.slice(24), src / "b.parquet")
    (dst / "run-crashed").mkdir()
    (dst / "run-crashed" / "x.parquet").write_bytes(b"PAR1 cut short")
    assert ray_caption.main(argv) == 16
    assert (dst / "run-crashed" / "x.parquet.partial").exists()
    names = t.schema.names + dam_ray.OUTPUT_SCHEMA.names
    check(pa.concat_tables([pq.read_table(f).select(names) for f in dst.rglob("*.parquet")]), expected)
