"""Search results as Discord messages: text with rank, score and label, and the pictures as attachments."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import discord
from discord.utils import escape_markdown, escape_mentions

from ..prompts import readable_label
from ..search import CaptionHit, FindResult, ImageHit, SimilarResult

# Discord caps message content at 2,000 characters and attachments at 10 per message.
MAX_CONTENT = 2000
MAX_FILES = 10
PROMPT_ECHO_CHARS = 200
NO_MENTIONS = discord.AllowedMentions.none()


@dataclass
class Reply:
    """A message to send: its text and its pictures (filename, JPEG bytes), in rank order."""

    content: str
    pictures: list[tuple[str, bytes]] = field(default_factory=list)

    def files(self) -> list[discord.File]:
        """Fresh discord.File objects (each can be sent once)."""
        return [discord.File(io.BytesIO(data), filename=name) for name, data in self.pictures[:MAX_FILES]]


def safe_echo(text: str, limit: int = PROMPT_ECHO_CHARS) -> str:
    """User text made inert: one line, markdown and mentions escaped, shortened."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return escape_mentions(escape_markdown(flat))


def picture_filename(hit: ImageHit) -> str:
    """`01-red_circle-train-12.jpg`: rank first so clients list them in order."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", hit.label).strip("_")[:40] or "picture"
    item = re.sub(r"[^A-Za-z0-9]+", "-", hit.id).strip("-")[:40]
    return f"{hit.rank:02d}-{slug}-{item}.jpg"


def image_line(hit: ImageHit) -> str:
    """`#1 · **red circle** · 0.312`"""
    return f"`#{hit.rank}` **{escape_markdown(readable_label(hit.label))}** · {hit.score:.3f}"


def caption_line(hit: CaptionHit) -> str:
    """`1.` a red circle — 0.301"""
    return f"`{hit.rank}.` {escape_markdown(hit.text)} — {hit.score:.3f}"


def _pictures(hits: Sequence[ImageHit], thumbnail: Callable[[int], bytes]) -> list[tuple[str, bytes]]:
    return [(picture_filename(hit), thumbnail(hit.index)) for hit in hits[:MAX_FILES]]


def _clip(content: str) -> str:
    return content if len(content) <= MAX_CONTENT else content[: MAX_CONTENT - 1] + "…"


def find_reply(result: FindResult, thumbnail: Callable[[int], bytes]) -> Reply:
    """The reply to /find and to its "More" button. Reads thumbnails: call from the executor."""
    title = f"**Pictures for** “{safe_echo(result.query)}”"
    if result.label:
        title += f" · label **{escape_markdown(readable_label(result.label))}**"
    if not result.images:
        return Reply(_clip(f"{title}\nNo more pictures match."))
    lines = [title, *(image_line(hit) for hit in result.images)]
    return Reply(_clip("\n".join(lines)), _pictures(result.images, thumbnail))


def similar_reply(result: SimilarResult, thumbnail: Callable[[int], bytes], heading: str = "") -> Reply:
    """The reply to /similar, the context menu and "Similar to #n". Reads thumbnails: call from the executor."""
    lines = [heading] if heading else []
    if result.source is not None:
        lines.append(f"**Similar to** `{escape_markdown(result.source.id)}` "
                     f"({escape_markdown(readable_label(result.source.label))})")
    if result.captions:
        lines.append("**It looks like**")
        lines.extend(caption_line(hit) for hit in result.captions)
    lines.append("**Nearest pictures**")
    lines.extend(image_line(hit) for hit in result.images)
    return Reply(_clip("\n".join(lines)), _pictures(result.images, thumbnail))


def random_reply(result: SimilarResult, thumbnail: Callable[[int], bytes]) -> Reply:
    """The reply to /random: one picture and what CLIP thinks it shows."""
    source = result.source
    assert source is not None
    lines = [f"**A random picture** · `{escape_markdown(source.id)}` · "
             f"**{escape_markdown(readable_label(source.label))}**", "**It looks like**"]
    lines.extend(caption_line(hit) for hit in result.captions)
    hit = ImageHit(rank=1, score=1.0, id=source.id, label=source.label, index=source.index)
    return Reply(_clip("\n".join(lines)), _pictures([hit], thumbnail))
