"""A loopback Discord (REST API v10, CDN, gateway) for end-to-end tests, validated against the spec."""

from .gateway import Gateway, GatewaySession
from .payloads import GuildState
from .records import FaultRule, GatewayFrame, InteractionState, RecordedRequest, UploadedFile
from .schema import OpenAPISpec, Violation, load_spec
from .server import APPLICATION_ID, CHANNEL_ID, GUILD_ID, OWNER_ID, DiscordEmulator

__all__ = [
    "APPLICATION_ID",
    "CHANNEL_ID",
    "GUILD_ID",
    "OWNER_ID",
    "DiscordEmulator",
    "FaultRule",
    "Gateway",
    "GatewayFrame",
    "GatewaySession",
    "GuildState",
    "InteractionState",
    "OpenAPISpec",
    "RecordedRequest",
    "UploadedFile",
    "Violation",
    "load_spec",
]
