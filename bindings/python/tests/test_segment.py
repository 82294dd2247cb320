"""The segmenter from Python (C API 1.4): dam.Segmenter, and points= regions through a model
loaded with segmenter=."""

import subprocess

import numpy as np
import pytest
from PIL import Image

import dam

from conftest import REPO

IMAGE = REPO / "tests/fixtures/geom/cases/c3_image.png"
CLICKS = [(88.0, 66.0), (32.0, 36.0, False)]


def test_segment(segmenter_file):
    with dam.Segmenter(segmenter_file, threads=1) as seg:
        img = Image.open(IMAGE)
        mask, scores, best = seg.segment(img, points=CLICKS)
        assert mask.shape == (img.height, img.width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        assert len(scores) == 3 and best == int(np.argmax(scores))
        again, scores2, _ = seg.segment(np.asarray(img), points=CLICKS)
        assert (again == mask).all() and scores2 == scores
        single = seg.segment(img, points=CLICKS, multimask=False)
        assert len(single[1]) == 1 and single[2] == 0
        assert seg.segment(img, box=(60.8, 42.0, 137.6, 86.4))[0].shape == mask.shape


@pytest.mark.parametrize(
    "kw",
    [
        {"points": [(-1, 5)]},
        {"points": [(float("nan"), 5)]},
        {"points": [(5, float("inf"))]},
        {"points": []},
        {"box": (10, 10, 10, 30)},
        {"box": (10, 10, 1e9, 30)},
    ],
)
def test_segment_bad_input(segmenter_file, kw):
    with dam.Segmenter(segmenter_file, threads=1) as seg:
        with pytest.raises(dam.InvalidArgumentError):
            seg.segment(IMAGE, **kw)


def test_segmenter_files(model_files, tmp_path):
    with pytest.raises(dam.InvalidModelError):
        dam.Segmenter(model_files[0])  # an LLM file, not a segmenter
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(dam.InvalidModelError):
        dam.Segmenter(cut)
    with pytest.raises(dam.DamIOError):
        dam.Segmenter(tmp_path / "missing.gguf")


def test_points_through_the_model(model_files, segmenter_file):
    with dam.Model(*model_files, threads=1, segmenter=segmenter_file) as m:
        caption = m.describe(IMAGE, points=CLICKS, greedy=True, max_tokens=4)
        assert caption
        with pytest.raises(dam.InvalidArgumentError):
            m.describe(IMAGE, points=[(88, 66)], normalized=True, max_tokens=4)


def test_segmented_box_through_the_model(model_files, segmenter_file, cli):
    """box= with segment_box=True is the segmenter's mask of the box: the caption of
    `dam describe --box ... --segment-box`, in describe, stream and describe_batch."""
    box = (60.8, 42.0, 137.6, 86.4)
    llm, vision = model_files
    out = subprocess.run(
        [cli, "describe", "--llm", llm, "--vision", vision, "-i", str(IMAGE), "--greedy", "-n", "4", "-t", "1",
         "--box", ",".join(map(str, box)), "--segment-box", "--segmenter", segmenter_file],
        check=True, capture_output=True, text=True,
    ).stdout.rstrip("\n")
    with dam.Model(*model_files, threads=1, segmenter=segmenter_file) as m:
        caption = m.describe(IMAGE, box=box, segment_box=True, greedy=True, max_tokens=4)
        assert caption == out, (caption, out)
        assert "".join(m.stream(IMAGE, box=box, segment_box=True, greedy=True, max_tokens=4)) == out
        both = m.describe_batch(IMAGE, [{"box": box, "segment_box": True}, {"points": CLICKS}],
                                greedy=True, max_tokens=4)
        assert both == [out, m.describe(IMAGE, points=CLICKS, greedy=True, max_tokens=4)]
        with pytest.raises(dam.InvalidArgumentError):
            m.describe(IMAGE, box=(10, 10, 10, 30), segment_box=True, max_tokens=4)  # degenerate
        with pytest.raises(dam.InvalidArgumentError):
            m.describe(IMAGE, box=(0.1, 0.1, 0.5, 0.5), segment_box=True, normalized=True, max_tokens=4)
        with pytest.raises(ValueError):
            m.describe(IMAGE, points=CLICKS, segment_box=True)
    with dam.Model(*model_files, threads=1) as m:
        with pytest.raises(dam.UnsupportedRegionError):
            m.describe(IMAGE, box=box, segment_box=True, max_tokens=4)
