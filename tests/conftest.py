"""Shared fixtures: a tiny random CLIP, a trained shapes CLIP and a folder of shape pictures, all offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub, transformers or datasets: nothing in the tests may reach the hub.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

# `tests/` has no __init__.py, so plain `pytest` puts only tests/ on sys.path; the repository root makes
# `tests.fixtures` importable however pytest is started.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

from bot.batching import BatchingEncoder  # noqa: E402
from tests.encoderkit import FakeEncoder  # noqa: E402
from tests.fixtures import SHAPES_FOLDER_SEED, make_image_folder, make_tiny_clip, trained_shapes_clip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny CLIP checkpoint (projection 16, 32 px pictures)."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def shapes_clip_dir() -> Path:
    """The CLIP trained on coloured shapes (trained once, then reused from the on-disk cache)."""
    return trained_shapes_clip()


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An `imagefolder` of 6 fresh pictures per shapes class, jpg and png mixed."""
    return make_image_folder(tmp_path_factory.mktemp("shapes-folder"), per_class=6, seed=SHAPES_FOLDER_SEED)


@pytest.fixture(scope="session")
def shapes_store(tmp_path_factory: pytest.TempPathFactory, shapes_clip_dir: Path) -> Path:
    """A store of 8 fresh pictures per shapes class, built by `clipbot build` with the trained shapes CLIP."""
    from tests.clirun import clipbot

    root = tmp_path_factory.mktemp("shapes-store")
    folder = make_image_folder(root / "pictures", per_class=8, seed=1234)
    result = clipbot("build", "--dataset", str(folder), "--out", str(root / "store"), "--model", str(shapes_clip_dir),
                     "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    return root / "store"


@pytest.fixture
def fake() -> FakeEncoder:
    """A fake encoder that records its batches and can be held busy (tests/encoderkit.py)."""
    return FakeEncoder()


@pytest.fixture
def batching(fake: FakeEncoder):
    """The micro-batching front over `fake`, closed after the test."""
    front = BatchingEncoder(fake, max_batch=32, max_wait_ms=5.0, queue_limit=64)
    yield front
    fake.release()
    front.close()
