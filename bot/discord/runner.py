"""Start-up and shutdown of the bot process: load everything, connect, stop gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import discord

from ..batching import BatchingEncoder
from ..config import Settings
from ..engine import Engine, load_engine
from ..errors import ConfigError
from ..priorities import lower_other_threads
from .client import ClipBot
from .gateway import use_api_base

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Load the model and store, then serve Discord until SIGTERM or SIGINT; returns the exit code."""
    token = settings.require_token()
    use_api_base(settings.discord_api_base, settings.discord_gateway_url)
    engine = load_engine(
        settings.store, model=settings.model, device=settings.device, precision=settings.precision,
        verify=settings.verify, backend=settings.backend, milvus_uri=settings.milvus_uri,
        milvus_token=settings.milvus_token.reveal() or None,
    )
    batching = BatchingEncoder(engine.encoder, max_batch=settings.max_batch, max_wait_ms=settings.batch_wait_ms,
                               queue_limit=settings.queue_limit * 4)
    engine.service.encoder = batching
    # This thread runs the event loop; the encoder's thread and OpenMP's pool exist by now.
    lower_other_threads(settings.worker_nice)
    try:
        asyncio.run(_serve(settings, engine, batching, token))
    finally:
        batching.close()
        close_index = getattr(engine.index, "close", None)
        if close_index is not None:  # frees a Milvus Lite file for the next process at once
            close_index()
    log.info("stopped")
    return 0


async def _serve(settings: Settings, engine: Engine, batching: BatchingEncoder, token: str) -> None:
    bot = ClipBot(settings, engine, encoder_queue_depth=lambda: batching.queue_depth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    health = None
    if settings.health_port is not None:
        from ..health import HealthServer

        health = HealthServer(bot, settings.health_port)
        await health.start()
    async with bot:
        connection = asyncio.create_task(bot.start(token), name="discord-connection")
        stopping = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            log.info("shutting down: finishing replies in flight (up to %.0f s)", settings.shutdown_grace_seconds)
            await bot.drain(settings.shutdown_grace_seconds)
            await bot.close()
        stopping.cancel()
        try:
            await connection
        except discord.LoginFailure as error:
            raise ConfigError("Discord rejected DISCORD_TOKEN; copy the bot token again from the Developer Portal.") \
                from error
        except discord.PrivilegedIntentsRequired as error:
            raise ConfigError("Discord refused the gateway intents; clipbot needs no privileged intents.") from error
    if health is not None:
        await health.stop()
