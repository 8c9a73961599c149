"""The `clipbot` command line through a subprocess: build, find, similar, info, and its error lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.clirun import clipbot
from tests.fixtures.shapes import make_image_folder

CLASSES = ("red_circle", "blue_square", "yellow_cross")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip_dir: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    folder = make_image_folder(root / "pictures", per_class=4, seed=5, classes=CLASSES)
    captions = root / "captions.txt"
    captions.write_text("a sunny beach\na snowy mountain\n")
    result = clipbot("build", "--dataset", str(folder), "--out", str(root / "store"), "--model", str(tiny_clip_dir),
                     "--captions", str(captions), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"built {root / 'store'}" in result.stdout
    return root / "store", folder


def test_find_prints_the_json_contract(built, tmp_path: Path) -> None:
    store, _ = built
    sheet = tmp_path / "sheet.png"
    result = clipbot("find", "a red circle", "--store", str(store), "--k", "3", "--json", "--sheet", str(sheet))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["query"] == "a red circle"
    assert [hit["rank"] for hit in data["images"]] == [1, 2, 3]
    assert set(data["images"][0]) == {"rank", "score", "id", "label"}
    assert all(hit["label"] in CLASSES for hit in data["images"])
    scores = [hit["score"] for hit in data["images"]]
    assert scores == sorted(scores, reverse=True)
    with Image.open(sheet) as picture:
        assert picture.format == "PNG" and picture.width > 3 * 200


def test_similar_prints_captions_and_images(built) -> None:
    store, folder = built
    result = clipbot("similar", str(folder / "blue_square" / "0.jpg"), "--store", str(store), "--k", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"captions", "images"}
    assert set(data["captions"][0]) == {"rank", "score", "text"}
    assert {c["text"] for c in data["captions"]} <= {"red circle", "blue square", "yellow cross", "a sunny beach",
                                                     "a snowy mountain"}
    assert len(data["images"]) == 2


def test_info_describes_the_store(built) -> None:
    store, _ = built
    data = json.loads(clipbot("info", "--store", str(store), "--json").stdout)
    assert data["images"] == 12 and data["captions"] == 5 and data["dim"] == 16
    assert sorted(data["labels"]) == sorted(CLASSES)


def test_text_output_is_readable(built) -> None:
    store, _ = built
    result = clipbot("find", "a yellow cross", "--store", str(store), "--k", "2")
    assert result.stdout.startswith("Pictures for 'a yellow cross'")
    assert len(result.stdout.strip().splitlines()) == 3


def test_missing_store_is_one_clear_line(tmp_path: Path) -> None:
    result = clipbot("find", "a dog", "--store", str(tmp_path / "none"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"clipbot: Store {tmp_path / 'none'} does not exist; build one with `clipbot build --out {tmp_path / 'none'}`."
    )
    assert "Traceback" not in result.stderr


def test_bad_input_is_refused_with_its_reason(built, tmp_path: Path) -> None:
    store, _ = built
    assert "prompt is empty" in clipbot("find", "  ", "--store", str(store)).stderr
    assert "between 1 and 50" in clipbot("find", "dog", "--store", str(store), "--k", "0").stderr
    not_a_picture = tmp_path / "notes.jpg"
    not_a_picture.write_text("hello")
    result = clipbot("similar", str(not_a_picture), "--store", str(store))
    assert result.returncode == 1 and "not a picture" in result.stderr and "Traceback" not in result.stderr


def test_store_of_another_model_is_refused(built, tmp_path: Path) -> None:
    from tests.fixtures.models import make_tiny_clip

    store, _ = built
    other = make_tiny_clip(tmp_path / "other", seed=3)
    result = clipbot("find", "a dog", "--store", str(store), "--model", str(other))
    assert result.returncode == 1 and "was built with another model" in result.stderr
