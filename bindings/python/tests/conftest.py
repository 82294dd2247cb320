"""Fixtures of the bindings' tests: the tiny test model and the dam CLI.

tests/capi.rs runs this suite on the source tree with DAM_LIBRARY, DAM_CLI, DAM_TEST_LLM and
DAM_TEST_VISION set; tests/python_pkg.rs runs it on the wheel installed in a fresh venv
(DAM_TEST_INSTALLED=1: the package and its bundled library, not this checkout's). Standalone,
the model is converted from tests/fixtures/tiny with the CLI in target/release.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INSTALLED = os.environ.get("DAM_TEST_INSTALLED") == "1"
if not INSTALLED:
    sys.path.insert(0, str(HERE.parent))  # the package in bindings/python/dam

REPO = HERE.parent.parent.parent
CASES = REPO / "tests" / "fixtures" / "tiny" / "cases"


@pytest.fixture(scope="session")
def cli() -> str:
    path = os.environ.get("DAM_CLI") or str(REPO / "target" / "release" / "dam")
    assert Path(path).is_file(), f"{path}: build the CLI with cargo build --release, or set DAM_CLI"
    return path


@pytest.fixture(scope="session")
def model_files(cli, tmp_path_factory):
    llm, vision = os.environ.get("DAM_TEST_LLM"), os.environ.get("DAM_TEST_VISION")
    if llm and vision:
        return llm, vision
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run(
        [cli, "convert", str(REPO / "tests/fixtures/tiny/checkpoint"), "--outdir", str(out), "--type", "f32",
         "--name", "tiny"],
        check=True,
        capture_output=True,
    )
    return str(out / "tiny-llm-f32.gguf"), str(out / "tiny-vision-f32.gguf")


@pytest.fixture(scope="session")
def segmenter_file(cli, tmp_path_factory) -> str:
    """The sam-tiny fixture segmenter ($DAM_TEST_SEGMENTER, else converted with the CLI)."""
    path = os.environ.get("DAM_TEST_SEGMENTER")
    if path:
        return path
    out = tmp_path_factory.mktemp("sam")
    res = subprocess.run(
        [cli, "convert", str(REPO / "tests/fixtures/segmenter/sam-tiny/checkpoint"), "--outdir", str(out),
         "--type", "f32", "--name", "sam-tiny"],
        check=True,
        capture_output=True,
        text=True,
    )
    return res.stdout.strip()


@pytest.fixture(scope="session")
def model(model_files):
    import dam

    # One thread: fast and steady on a small, busy CI machine.
    m = dam.Model(*model_files, threads=1)
    yield m
    m.close()


@pytest.fixture(scope="session")
def case():
    return {
        "image": CASES / "c1_image.png",
        "mask": CASES / "c1_mask.png",
        "image2": CASES / "c2_image.png",
        "mask2": CASES / "c2_mask.png",
    }
