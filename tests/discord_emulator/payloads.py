"""Builders for the JSON objects Discord sends: users, guilds, channels, messages, attachments."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import mimetypes
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1420070400000

# Permission bits used to build realistic permission strings.
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
ADD_REACTIONS = 1 << 6
USE_APPLICATION_COMMANDS = 1 << 31
USE_EXTERNAL_EMOJIS = 1 << 18
SEND_MESSAGES_IN_THREADS = 1 << 38
# What Discord gives @everyone in a new server (as of 2024/2025).
DEFAULT_EVERYONE_PERMISSIONS = 2248473465835073
BOT_ROLE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | ADD_REACTIONS
    | USE_APPLICATION_COMMANDS
    | USE_EXTERNAL_EMOJIS
    | SEND_MESSAGES_IN_THREADS
)

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15


class SnowflakeGenerator:
    """Thread-safe generator of strictly increasing, time-based Discord snowflakes."""

    def __init__(self, worker: int = 1) -> None:
        self._worker = worker & 0x1F
        self._lock = threading.Lock()
        self._last = 0
        self._counter = itertools.count()

    def __call__(self) -> int:
        """Return a new snowflake."""
        with self._lock:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            value = (ms << 22) | (self._worker << 17) | (next(self._counter) & 0xFFF)
            if value <= self._last:
                value = self._last + 1
            self._last = value
            return value


def iso_now() -> str:
    """Return the current time as Discord formats timestamps."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def user_payload(
    user_id: int, username: str, *, bot: bool = False, global_name: str | None = None
) -> dict[str, Any]:
    """Return a v10 user object."""
    data: dict[str, Any] = {
        "id": str(user_id),
        "username": username,
        "discriminator": "0",
        "global_name": global_name if global_name is not None else (None if bot else username.title()),
        "avatar": None,
        "avatar_decoration_data": None,
        "banner": None,
        "accent_color": None,
        "public_flags": 0,
        "flags": 0,
        "clan": None,
        "primary_guild": None,
        "collectibles": None,
    }
    if bot:
        data["bot"] = True
    return data


def role_payload(
    role_id: int, name: str, permissions: int, *, position: int = 0, managed: bool = False
) -> dict[str, Any]:
    """Return a role object."""
    return {
        "id": str(role_id),
        "name": name,
        "description": None,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": managed,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def member_payload(
    user: dict[str, Any], roles: list[int], joined_at: str, *, with_user: bool = True
) -> dict[str, Any]:
    """Return a guild member object."""
    data: dict[str, Any] = {
        "avatar": None,
        "banner": None,
        "communication_disabled_until": None,
        "deaf": False,
        "flags": 0,
        "joined_at": joined_at,
        "mute": False,
        "nick": None,
        "pending": False,
        "premium_since": None,
        "roles": [str(r) for r in roles],
    }
    if with_user:
        data["user"] = user
    return data


def text_channel_payload(channel_id: int, guild_id: int, name: str, *, position: int = 0) -> dict[str, Any]:
    """Return a guild text channel object."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "parent_id": None,
        "permission_overwrites": [],
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def dm_channel_payload(channel_id: int, recipient: dict[str, Any]) -> dict[str, Any]:
    """Return a DM channel object."""
    return {"id": str(channel_id), "type": 1, "flags": 0, "last_message_id": None, "recipients": [recipient]}


@dataclass
class GuildState:
    """One emulated guild: its metadata, roles, channels and members."""

    id: int
    name: str
    owner_id: int
    roles: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)
    members: dict[int, dict[str, Any]] = field(default_factory=dict)
    joined_at: str = field(default_factory=iso_now)

    def channel(self, channel_id: int) -> dict[str, Any] | None:
        """Return the channel with this id, if it belongs to the guild."""
        return next((c for c in self.channels if int(c["id"]) == channel_id), None)

    def member_permissions(self, user_id: int) -> int:
        """Return the guild-level permissions of a member (owner and administrators get everything)."""
        if user_id == self.owner_id:
            return (1 << 53) - 1
        member = self.members.get(user_id)
        role_ids = {str(self.id)} | set(member["roles"] if member else [])
        value = 0
        for role in self.roles:
            if role["id"] in role_ids:
                value |= int(role["permissions"])
        if value & 8:  # ADMINISTRATOR
            return (1 << 53) - 1
        return value

    def guild_create(self) -> dict[str, Any]:
        """Return the GUILD_CREATE payload for this guild."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "system_channel_id": self.channels[0]["id"] if self.channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 25000000,
            "max_presences": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "features": [],
            "roles": [dict(r) for r in self.roles],
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
            "latest_onboarding_question_id": None,
            "hub_type": None,
            "home_header": None,
            "inventory_settings": None,
            "version": int(time.time() * 1000),
            # GUILD_CREATE-only fields.
            "joined_at": self.joined_at,
            "large": False,
            "lazy": True,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [],
            "members": [dict(m) for m in self.members.values()],
            "channels": [{k: v for k, v in c.items() if k != "guild_id"} for c in self.channels],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "application_command_counts": {},
        }


def guess_content_type(filename: str, data: bytes) -> str | None:
    """Guess an attachment's content type from its name, then its first bytes, as Discord does."""
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    signatures = {
        b"\x89PNG\r\n\x1a\n": "image/png",
        b"\xff\xd8\xff": "image/jpeg",
        b"GIF8": "image/gif",
        b"RIFF": "image/webp",
    }
    for magic, ctype in signatures.items():
        if data.startswith(magic):
            return ctype
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Return (width, height) of an image, or None when Pillow cannot read it."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a project dependency
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.width), int(image.height)
    except Exception:
        return None
