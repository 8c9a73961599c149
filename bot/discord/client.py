"""The bot: owns the executor, admission control and metrics; loads the commands and syncs them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from ..config import Settings
from ..engine import Engine
from ..errors import ClipbotError
from ..metrics import Metrics
from ..priorities import lower_this_thread
from ..query_vectors import QueryVectors
from .errors import report_error
from .gateway import resolve_gateway
from .limits import Admission

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClipTree(app_commands.CommandTree):
    """The command tree with clipbot's single error handler."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        name = interaction.command.qualified_name if interaction.command else "command"
        self.client.metrics.error(name, type(error).__name__)
        await report_error(interaction, error, name)


class ClipBot(commands.Bot):
    """A Discord client over the search engine; encoding and search always run in `self.executor`."""

    def __init__(self, settings: Settings, engine: Engine, *, encoder_queue_depth: Callable[[], int] = lambda: 0):
        # Slash commands need no privileged intents; guilds lets discord.py resolve channels and members.
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, tree_cls=ClipTree,
                         help_command=None, allowed_mentions=discord.AllowedMentions.none())
        self.settings = settings
        self.engine = engine
        # Decoding, search and rendering only: encoding is awaited on the loop (QueryVectors), holding no thread.
        self.executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="clip-search",
            initializer=functools.partial(lower_this_thread, settings.worker_nice),
        )
        self.queries = QueryVectors(engine.service, self.executor)
        self.admission = Admission(cooldown_seconds=settings.cooldown_seconds, max_in_flight=settings.queue_limit)
        self.metrics = Metrics(queue_depth=lambda: self.admission.in_flight)
        self.encoder_queue_depth = encoder_queue_depth
        self.started = time.monotonic()
        self.commands_synced = asyncio.Event()
        self._in_flight_tasks: set[asyncio.Task] = set()

    async def setup_hook(self) -> None:
        from .commands import SearchCog

        await resolve_gateway(self.http, self.settings.discord_api_base, self.settings.discord_gateway_url)
        await self.add_cog(SearchCog(self))
        guild_id = self.settings.discord_guild_id
        if guild_id:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands (they can take up to an hour to appear)", len(synced))
        self.commands_synced.set()

    async def on_ready(self) -> None:
        log.info("ready as %s (id %s) in %d guilds; %d pictures searchable",
                 self.user, self.user.id if self.user else "?", len(self.guilds), len(self.engine.store))

    @contextlib.asynccontextmanager
    async def serving(self, command: str) -> AsyncIterator[None]:
        """Count the block as one `command` in flight, time it, and count its clipbot errors."""
        started = time.perf_counter()
        with self.admission:
            try:
                yield
            except ClipbotError as error:
                self.metrics.error(command, type(error).__name__)
                raise
        self.metrics.observe(command, time.perf_counter() - started)

    async def run_blocking(self, func: Callable[..., T], *args, **kwargs) -> T:
        """Run blocking `func` in the executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(func, *args, **kwargs))

    async def serve(self, command: str, func: Callable[..., T], *args, **kwargs) -> T:
        """Run blocking `func` in the executor as one `command` (see `serving`)."""
        async with self.serving(command):
            return await self.run_blocking(func, *args, **kwargs)

    def track(self, task: asyncio.Task) -> None:
        """Remember a command's task so that shutdown can wait for it."""
        self._in_flight_tasks.add(task)
        task.add_done_callback(self._in_flight_tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for commands already running to finish their replies."""
        pending = [t for t in self._in_flight_tasks if not t.done() and t is not asyncio.current_task()]
        waiting = self.admission.in_flight
        if not pending and not waiting:
            return
        log.info("waiting up to %.0f s for %d replies in flight", timeout, max(len(pending), waiting))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.admission.in_flight or any(not t.done() for t in pending)):
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await super().close()
        self.executor.shutdown(wait=False, cancel_futures=True)
