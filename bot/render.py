"""Results to pictures and text: contact sheets with rank, score and label, and plain-text listings."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from .prompts import readable_label
from .search import CaptionHit, FindResult, ImageHit, SimilarResult

TILE = 256
CAPTION_BAR = 30
GAP = 6
BACKGROUND = (24, 25, 28)
TEXT = (240, 240, 240)
BAR = (0, 0, 0, 170)


def hit_title(hit: ImageHit) -> str:
    """`#1 · 0.312 · red circle`: how a picture is labelled everywhere."""
    return f"#{hit.rank} · {hit.score:.3f} · {readable_label(hit.label)}"


def contact_sheet(
    hits: Sequence[ImageHit], thumbnail: Callable[[int], bytes], *, columns: int | None = None, tile: int = TILE
) -> bytes:
    """A PNG grid of the hits' pictures, each with its rank, score and label."""
    if not hits:
        raise ValueError("a contact sheet needs at least one picture")
    columns = columns or min(len(hits), 5 if len(hits) > 4 else len(hits))
    rows = math.ceil(len(hits) / columns)
    sheet = Image.new("RGB", (columns * tile + (columns + 1) * GAP, rows * tile + (rows + 1) * GAP), BACKGROUND)
    font = _font(15)
    for position, hit in enumerate(hits):
        x = GAP + (position % columns) * (tile + GAP)
        y = GAP + (position // columns) * (tile + GAP)
        sheet.paste(_tile(thumbnail(hit.index), tile, hit_title(hit), font), (x, y))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _tile(jpeg: bytes, size: int, title: str, font) -> Image.Image:
    with Image.open(io.BytesIO(jpeg)) as picture:
        picture = picture.convert("RGB")
        scale = size / max(picture.size)
        fitted = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.Resampling.LANCZOS
        )
    tile = Image.new("RGB", (size, size), BACKGROUND)
    tile.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    overlay = Image.new("RGBA", (size, CAPTION_BAR), BAR)
    tile.paste(overlay, (0, size - CAPTION_BAR), overlay)
    draw = ImageDraw.Draw(tile)
    draw.text((6, size - CAPTION_BAR + 6), _fit(draw, title, font, size - 12), font=font, fill=TEXT)
    return tile


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def image_lines(hits: Sequence[ImageHit]) -> list[str]:
    """One line per picture: rank, score, label and id."""
    return [f"{hit.rank:>3}. {hit.score:.3f}  {readable_label(hit.label):<24} {hit.id}" for hit in hits]


def caption_lines(hits: Sequence[CaptionHit]) -> list[str]:
    """One line per caption: rank, score and text."""
    return [f"{hit.rank:>3}. {hit.score:.3f}  {hit.text}" for hit in hits]


def find_text(result: FindResult) -> str:
    """A find result as plain text for a terminal."""
    header = f"Pictures for {result.query!r}" + (f" (label {result.label})" if result.label else "")
    return "\n".join([header, *image_lines(result.images)] if result.images else [header, "  (no pictures)"])


def similar_text(result: SimilarResult) -> str:
    """A similar result as plain text for a terminal."""
    return "\n".join(["It looks like:", *caption_lines(result.captions), "Nearest pictures:",
                      *image_lines(result.images)])
