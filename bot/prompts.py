"""Caption prompts: templates, readable label names and the ImageNet class names."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

# A subset of the prompt ensemble from OpenAI's "Prompt Engineering for ImageNet" notebook,
# plus the plain forms; averaging over several templates makes a caption vector steadier.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a bright photo of a {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
    "art of the {}.",
    "itap of a {}.",
    "a {}",
)

# Hugging Face imagenette stores WordNet ids in some revisions; these are its ten classes.
IMAGENETTE_WNIDS: dict[str, str] = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888605": "parachute",
}


def readable_label(label: str) -> str:
    """Turn a class or folder name into words: `red_circle` -> `red circle`, `n01440764` -> `tench`."""
    if label in IMAGENETTE_WNIDS:
        return IMAGENETTE_WNIDS[label]
    return re.sub(r"[\s_\-]+", " ", label).strip()


def templated(name: str) -> list[str]:
    """Every caption template filled with one class name."""
    return [template.format(name) for template in CAPTION_TEMPLATES]


@cache
def imagenet_classnames() -> tuple[str, ...]:
    """The 1,000 ImageNet class names (OpenAI's cleaned-up list, via open_clip)."""
    text = resources.files("bot").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    return names
