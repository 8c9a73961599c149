"""Slash commands, the context menu and button actions: each defers, runs the service in the executor, replies."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from ..errors import ImageTooLargeError, InvalidImageError, InvalidQueryError
from ..images import MAX_IMAGE_BYTES
from ..prompts import readable_label
from ..search import MAX_PROMPT_CHARS, FindResult, ImageHit, SimilarResult
from .errors import report_error
from .replies import NO_MENTIONS, Reply, find_reply, random_reply, similar_reply
from .views import ResultsView

if TYPE_CHECKING:
    from .client import ClipBot

log = logging.getLogger(__name__)

MAX_COUNT = 10  # Discord allows 10 attachments per message
DEFAULT_COUNT = 4
DOWNLOAD_TIMEOUT_SECONDS = 20.0
IMAGE_TYPES = ("image/",)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


def check_count(count: int) -> int:
    """Counts arrive validated by Discord, but a modified client can send anything."""
    if not 1 <= count <= MAX_COUNT:
        raise InvalidQueryError(f"`count` must be between 1 and {MAX_COUNT} (got {count}).")
    return count


def check_prompt(prompt: str) -> str:
    """A prompt with something to search for, within Discord's option limit."""
    if not prompt or not prompt.strip():
        raise InvalidQueryError("The prompt is empty; describe what you want to see, e.g. `a dog in the snow`.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidQueryError(f"The prompt is longer than {MAX_PROMPT_CHARS} characters.")
    return prompt


def check_attachment(attachment: discord.Attachment) -> None:
    """Refuse what cannot be a picture or is too big, before downloading a byte."""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    looks_like_image = content_type.startswith(IMAGE_TYPES) or (
        not content_type and attachment.filename.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not looks_like_image:
        kind = content_type or "an unknown type"
        raise InvalidImageError(f"`{attachment.filename}` is not a picture ({kind}); attach a JPEG, PNG, GIF or WebP.")
    if attachment.size > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(
            f"`{attachment.filename}` is {attachment.size / 1e6:.1f} MB; the limit is {MAX_IMAGE_BYTES // 10**6} MB."
        )


async def download(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes, with a time limit; never written to disk."""
    try:
        data = await asyncio.wait_for(attachment.read(), DOWNLOAD_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        raise InvalidImageError("Downloading the picture took too long; please try again.") from None
    except discord.HTTPException as error:
        raise InvalidImageError(f"The picture could not be downloaded from Discord ({error.status}).") from error
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(f"The picture is larger than {MAX_IMAGE_BYTES // 10**6} MB.")
    return data


def first_picture(message: discord.Message) -> discord.Attachment:
    """The first attachment of a message that can be a picture."""
    for attachment in message.attachments:
        try:
            check_attachment(attachment)
        except InvalidImageError:
            continue
        return attachment
    raise InvalidImageError("That message has no attached picture to search with.")


class SearchCog(commands.Cog):
    """/find, /similar, /random, /about and "Find similar images"."""

    def __init__(self, bot: ClipBot) -> None:
        self.bot = bot
        self.service = bot.engine.service
        self.store = bot.engine.store
        self.context_menu = app_commands.ContextMenu(name="Find similar images", callback=self.similar_message)
        self.context_menu.error(self._context_menu_error)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.context_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.context_menu.name, type=self.context_menu.type)

    # --- commands ----------------------------------------------------------------------------------------

    @app_commands.command(name="find", description="Find pictures that match a description")
    @app_commands.describe(
        prompt="What to look for, e.g. a dog in the snow (add -word to steer away from something)",
        count=f"How many pictures (1-{MAX_COUNT}, default {DEFAULT_COUNT})",
        label="Only pictures with this label",
    )
    async def find(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        count: app_commands.Range[int, 1, MAX_COUNT] = DEFAULT_COUNT,
        label: str | None = None,
    ) -> None:
        """Defer, search in the executor, reply with the pictures and buttons."""
        self.bot.track(asyncio.current_task())
        self._admit(interaction)
        check_prompt(prompt)
        check_count(count)
        await interaction.response.defer(thinking=True)
        async with self.bot.serving("find"):
            vector, query = await self.bot.queries.text(prompt)
            result, reply = await self.bot.run_blocking(self._page, vector, count, query, label, 0)
        await self._send(interaction, reply, self._find_view(interaction.user.id, result, count))

    @find.autocomplete("label")
    async def _label_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        wanted = current.strip().lower()
        names = [n for n in self.store.label_names if wanted in readable_label(n).lower()]
        return [app_commands.Choice(name=readable_label(n)[:100], value=n[:100]) for n in names[:25]]

    @app_commands.command(name="similar", description="What does this picture show, and which pictures look like it?")
    @app_commands.describe(image="A picture (JPEG, PNG, GIF or WebP)", count=f"How many pictures (1-{MAX_COUNT})")
    async def similar(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        count: app_commands.Range[int, 1, MAX_COUNT] = DEFAULT_COUNT,
    ) -> None:
        """Check the attachment, defer, download, decode and search in the executor, reply."""
        self.bot.track(asyncio.current_task())
        self._admit(interaction)
        check_count(count)
        check_attachment(image)
        await interaction.response.defer(thinking=True)
        await self._similar_to_upload(interaction, image, count)

    async def similar_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Context menu: the same as /similar with the message's first picture."""
        self.bot.track(asyncio.current_task())
        self._admit(interaction)
        attachment = first_picture(message)
        await interaction.response.defer(thinking=True)
        await self._similar_to_upload(interaction, attachment, DEFAULT_COUNT)

    async def _context_menu_error(self, interaction: discord.Interaction, error: Exception) -> None:
        self.bot.metrics.error("Find similar images", type(error).__name__)
        await report_error(interaction, error, "Find similar images")

    @app_commands.command(name="random", description="Show a random picture and what CLIP thinks it shows")
    async def random(self, interaction: discord.Interaction) -> None:
        """Defer, pick and describe a picture in the executor, reply with buttons."""
        self.bot.track(asyncio.current_task())
        self._admit(interaction)
        await interaction.response.defer(thinking=True)
        result, reply = await self.bot.serve("random", self._random)
        await self._send(interaction, reply, self._random_view(interaction.user.id, result))

    @app_commands.command(name="about", description="The model, the collection and how fast clipbot is answering")
    async def about(self, interaction: discord.Interaction) -> None:
        """Describe the model, the store and recent latency."""
        await interaction.response.send_message(self._about_text(), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)

    # --- button actions ----------------------------------------------------------------------------------

    def _similar_action(self, hit: ImageHit):
        async def action(interaction: discord.Interaction) -> None:
            try:
                self._admit(interaction)
                await interaction.response.defer(thinking=True)
                result, reply = await self.bot.serve("similar_to", self._similar_to_item, hit.index)
                await self._send(interaction, reply, self._similar_view(interaction.user.id, result))
            except Exception as error:  # buttons have no tree handler: report here
                await report_error(interaction, error, "Similar to")

        return action

    def _more_action(self, result: FindResult):
        async def action(interaction: discord.Interaction) -> None:
            try:
                self._admit(interaction)
                await interaction.response.defer()
                count = len(result.images)
                offset = result.offset + count
                page, reply = await self.bot.serve(
                    "more", self._page, result.vector, count, result.query, result.label, offset
                )
                view = self._find_view(interaction.user.id, page, count)
                message = await interaction.edit_original_response(
                    content=reply.content, attachments=reply.files(), view=view, allowed_mentions=NO_MENTIONS
                )
                view.message = message
            except Exception as error:
                await report_error(interaction, error, "More")

        return action

    # --- blocking work, run in the executor --------------------------------------------------------------

    def _page(self, vector, count: int, query: str, label: str | None, offset: int) -> tuple[FindResult, Reply]:
        result = self.service.find_by_vector(vector, count, query=query, label=label, offset=offset)
        return result, find_reply(result, self.store.thumbnail)

    def _similar_to_vector(self, vector, count: int) -> tuple[SimilarResult, Reply]:
        result = self.service.similar_to_vector(vector, count)
        return result, similar_reply(result, self.store.thumbnail)

    def _similar_to_item(self, index: int) -> tuple[SimilarResult, Reply]:
        result = self.service.similar_to_item(index, DEFAULT_COUNT)
        return result, similar_reply(result, self.store.thumbnail)

    def _random(self) -> tuple[SimilarResult, Reply]:
        result = self.service.random_item(k_captions=3)
        return result, random_reply(result, self.store.thumbnail)

    # --- helpers -----------------------------------------------------------------------------------------

    def _admit(self, interaction: discord.Interaction) -> None:
        self.bot.admission.check(interaction.user.id)

    async def _similar_to_upload(self, interaction, attachment: discord.Attachment, count: int) -> None:
        data = await download(attachment)
        async with self.bot.serving("similar"):
            vector = await self.bot.queries.picture(data)
            result, reply = await self.bot.run_blocking(self._similar_to_vector, vector, count)
        await self._send(interaction, reply, self._similar_view(interaction.user.id, result))

    def _find_view(self, owner_id: int, result: FindResult, count: int) -> ResultsView:
        full_page = len(result.images) == count and result.offset + count < len(self.store)
        more = self._more_action(result) if full_page else None
        return ResultsView.for_results(owner_id, result.images, self._similar_action, more=more)

    def _random_view(self, owner_id: int, result: SimilarResult) -> ResultsView:
        view = ResultsView(owner_id)
        view.add_item(_RerollButton(self))
        view.add_item(_PivotButton(self, result.source))
        return view

    def _similar_view(self, owner_id: int, result: SimilarResult) -> ResultsView:
        return ResultsView.for_results(owner_id, result.images, self._similar_action)

    async def _send(self, interaction: discord.Interaction, reply: Reply, view: ResultsView) -> None:
        message = await interaction.followup.send(
            reply.content, files=reply.files(), view=view, allowed_mentions=NO_MENTIONS, wait=True
        )
        view.message = message

    def _about_text(self) -> str:
        engine, metrics = self.bot.engine, self.bot.metrics
        info, manifest = engine.encoder.info, engine.store.manifest
        lines = [
            "**clipbot**: search pictures with words and pictures (OpenAI CLIP)",
            f"Model: `{info.model_id}` on {info.device} ({info.dtype}, {info.dim}-d)",
            f"Collection: {len(engine.store):,} pictures, {len(engine.store.captions):,} captions, "
            f"{len(engine.store.label_names)} labels; built {manifest.created[:10]}",
            f"Search back end: {engine.index.name}",
        ]
        for command in ("find", "similar", "more", "similar_to", "random"):
            summary = metrics.summary(command)
            if summary:
                lines.append(f"/{command}: p50 {summary.p50_ms:.0f} ms, p99 {summary.p99_ms:.0f} ms "
                             f"over the last {summary.count}")
        uptime = time.monotonic() - self.bot.started
        lines.append(f"Up for {uptime / 3600:.1f} h")
        return "\n".join(lines)


class _RerollButton(discord.ui.Button):
    """"Another" under /random."""

    def __init__(self, cog: SearchCog) -> None:
        super().__init__(label="Another", style=discord.ButtonStyle.primary, row=2)
        self.cog = cog

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            self.cog._admit(interaction)
            await interaction.response.defer(thinking=True)
            result, reply = await self.cog.bot.serve("random", self.cog._random)
            await self.cog._send(interaction, reply, self.cog._random_view(interaction.user.id, result))
        except Exception as error:
            await report_error(interaction, error, "Another")


class _PivotButton(discord.ui.Button):
    """"Similar pictures" under /random."""

    def __init__(self, cog: SearchCog, hit: ImageHit) -> None:
        super().__init__(label="Similar pictures", style=discord.ButtonStyle.secondary, row=2)
        self.action = cog._similar_action(hit)

    async def callback(self, interaction: discord.Interaction) -> None:
        await self.action(interaction)
