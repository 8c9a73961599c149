"""Known answers: a tiny CLIP trained by the suite must find the right shapes through the bot's own path.

Random weights cannot show that preprocessing, the projected output, normalisation and ranking are right;
a model that learnt "a red circle" can. The store (conftest's `shapes_store`) is built with `clipbot build` from
fresh pictures, with the default captions: the 32 classes plus ImageNet's 1,000 names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.engine import load_engine
from bot.prompts import readable_label
from tests.clirun import clipbot
from tests.fixtures.shapes import CLASSES, make_pictures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(shapes_store: Path):
    return load_engine(shapes_store, precision="fp32")


def test_text_to_image_precision_at_5(engine) -> None:
    precisions = []
    for name in CLASSES:
        hits = engine.service.find(f"a photo of a {readable_label(name)}", 5).images
        precisions.append(sum(hit.label == name for hit in hits) / 5)
    assert sum(precisions) / len(precisions) >= 0.9, precisions


def test_image_to_caption_top_1(engine) -> None:
    pictures = make_pictures(3, seed=98765)
    correct = sum(engine.service.similar(picture, 1).captions[0].text == readable_label(name)
                  for picture, name in pictures)
    assert correct / len(pictures) >= 0.9


def test_command_line_finds_red_circles(shapes_store: Path) -> None:
    result = clipbot("find", "a red circle", "--store", str(shapes_store), "--k", "5", "--json")
    labels = [hit["label"] for hit in json.loads(result.stdout)["images"]]
    assert labels.count("red_circle") >= 4, labels


def test_negative_terms_change_the_answer(engine) -> None:
    plain = [h.label for h in engine.service.find("a red circle", 8).images]
    assert plain.count("red_circle") >= 7
    steered = [h.label for h in engine.service.find("a red shape -circle", 8).images]
    assert steered.count("red_circle") < plain.count("red_circle")
