"""Pointing discord.py at another REST base (a proxy or an emulator) and at that base's gateway."""

from __future__ import annotations

import logging

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

log = logging.getLogger(__name__)

DISCORD_API_BASE = Route.BASE
DISCORD_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY


def use_api_base(api_base: str | None, gateway_url: str | None = None) -> None:
    """Send REST calls to `api_base` (which includes the version, e.g. .../api/v10); unset means Discord."""
    Route.BASE = api_base or DISCORD_API_BASE
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url) if gateway_url else DISCORD_GATEWAY
    if api_base:
        log.info("REST base is %s", api_base)


async def resolve_gateway(http: discord.http.HTTPClient, api_base: str | None, gateway_url: str | None) -> None:
    """With a custom REST base and no explicit gateway, ask that base's `GET /gateway/bot` for the gateway URL."""
    if not api_base or gateway_url:
        return
    _shards, url, _limits = await http.get_bot_gateway()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    log.info("gateway is %s", url)
