"""DiscordEmulator: an in-process aiohttp server standing in for Discord's REST API, CDN and gateway."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web

from .gateway import OP_INVALID_SESSION, OP_RECONNECT, Gateway
from .interactions import (
    COMMAND_MESSAGE,
    COMMAND_USER,
    COMPONENT_BUTTON,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    SELECT_TYPES,
    command_data,
    find_command,
    find_component,
    interaction_member,
    interaction_token,
    modal_submit_components,
)
from .messages import DiscordError, create_message
from .payloads import (
    BOT_ROLE_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    FLAG_EPHEMERAL,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    INTENT_MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    GuildState,
    SnowflakeGenerator,
    dm_channel_payload,
    guess_content_type,
    image_size,
    iso_now,
    member_payload,
    role_payload,
    text_channel_payload,
    user_payload,
)
from .records import FaultRule, InteractionState, RecordedRequest, UploadedFile
from .rest import RequestContext, RestApi
from .schema import SPEC_PATH, Violation, discord_form_errors, load_spec

log = logging.getLogger(__name__)

T = TypeVar("T")
API_PREFIX = "/api/v10"
APPLICATION_ID = 1300000000000000001
OWNER_ID = 1300000000000000002
GUILD_ID = 1300000000000000100
CHANNEL_ID = 1300000000000000101
BOT_ROLE_ID = 1300000000000000102
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
NO_AUTH_PREFIXES = (
    "/interactions/{interaction_id}/{interaction_token}",
    "/webhooks/{webhook_id}/{webhook_token}",
)
Matcher = Callable[[RecordedRequest], bool] | tuple[str, str]
InteractionRef = dict[str, Any] | str | InteractionState


class JsonResponse(web.Response):
    """A JSON response that remembers the object it carries (for recording)."""

    payload: Any = None


class DiscordEmulator:
    """A loopback Discord: REST API v10 validated against the OpenAPI spec, CDN, and a gateway websocket."""

    def __init__(
        self,
        *,
        token: str | None = None,
        heartbeat_interval_ms: int = 41250,
        application_id: int = APPLICATION_ID,
        bot_username: str = "clipbot",
        interaction_ack_timeout: float | None = 3.0,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT,
        privileged_intents: int = PRIVILEGED_INTENTS,
        echo_message_events: bool = True,
        validate: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        spec_path: Path = SPEC_PATH,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.application_id = application_id
        self.bot_id = application_id
        self.interaction_ack_timeout = interaction_ack_timeout
        self.attachment_size_limit = attachment_size_limit
        self.privileged_intents = privileged_intents
        self.echo_message_events = echo_message_events
        self.validate = validate
        self.spec = load_spec(str(spec_path))
        self.snowflake = SnowflakeGenerator()
        self.bot_user = user_payload(application_id, bot_username, bot=True)
        self.default_user = user_payload(OWNER_ID, "tester")
        self.users: dict[int, dict[str, Any]] = {application_id: self.bot_user, OWNER_ID: self.default_user}
        self.guilds: dict[int, GuildState] = {}
        self.dm_channels: dict[int, dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.command_syncs = 0
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted_messages: list[dict[str, Any]] = []
        self.attachments: dict[int, dict[str, Any]] = {}
        self._blobs: dict[int, tuple[bytes, str | None, str]] = {}
        self.interactions: dict[str, InteractionState] = {}
        self.requests: list[RecordedRequest] = []
        self.schema_errors: list[str] = []
        self.protocol_errors: list[str] = []
        self.unknown_requests: list[str] = []
        self.faults: list[FaultRule] = []
        self.gateway = Gateway(self, heartbeat_interval_ms)
        self.rest = RestApi(self)
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.guild = self.add_guild(
            "Emulator Guild", guild_id=GUILD_ID, channel_id=CHANNEL_ID, owner=self.default_user
        )
        self.guild_id = self.guild.id
        self.channel_id = CHANNEL_ID

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> DiscordEmulator:
        """Start listening on host:port (port 0 picks a free one)."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_api)
        for prefix in ("", "/media"):
            for kind in ("attachments", "ephemeral-attachments"):
                app.router.add_get(
                    prefix + "/" + kind + "/{channel_id}/{attachment_id}/{filename}", self._serve_attachment
                )
        app.router.add_route("*", "/{tail:.*}", self._handle_other)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("Discord emulator listening on %s", self.base_url)
        return self

    async def close(self) -> None:
        """Close gateway connections and stop the server."""
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """Return http://host:port."""
        if not self.port:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Return the value for discord.http.Route.BASE (http://127.0.0.1:PORT/api/v10)."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """Return the gateway websocket URL (without query)."""
        return f"ws://{self.host}:{self.port}/gateway"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's Route.BASE and default gateway at the emulator, restoring them on exit."""
        import discord.gateway
        import discord.http
        import yarl

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # -- world setup ----------------------------------------------------------------------------

    def add_user(
        self, username: str, *, bot: bool = False, guild_ids: list[int] | None = None
    ) -> dict[str, Any]:
        """Create a user and make it a member of the given guilds (default: the default guild)."""
        user = user_payload(self.snowflake(), username, bot=bot)
        self.users[int(user["id"])] = user
        for gid in guild_ids if guild_ids is not None else list(self.guilds)[:1]:
            guild = self.guilds[gid]
            guild.members[int(user["id"])] = member_payload(user, [], iso_now())
        return user

    def add_guild(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        owner: dict[str, Any] | None = None,
        channel_names: tuple[str, ...] = ("general",),
    ) -> GuildState:
        """Create a guild with text channels, @everyone, a bot role, the owner and the bot as members."""
        gid = guild_id or self.snowflake()
        owner = owner or self.default_user
        bot_role = BOT_ROLE_ID if gid == GUILD_ID else self.snowflake()
        guild = GuildState(id=gid, name=name, owner_id=int(owner["id"]))
        guild.roles = [
            role_payload(gid, "@everyone", DEFAULT_EVERYONE_PERMISSIONS),
            role_payload(bot_role, self.bot_user["username"], BOT_ROLE_PERMISSIONS, position=1, managed=True),
        ]
        guild.roles[1]["tags"] = {"bot_id": str(self.bot_id)}
        for i, cname in enumerate(channel_names):
            cid = channel_id if (i == 0 and channel_id) else self.snowflake()
            guild.channels.append(text_channel_payload(cid, gid, cname, position=i))
        guild.members[int(owner["id"])] = member_payload(owner, [], guild.joined_at)
        guild.members[self.bot_id] = member_payload(self.bot_user, [bot_role], guild.joined_at)
        self.guilds[gid] = guild
        return guild

    def add_text_channel(self, name: str, *, guild_id: int | None = None) -> dict[str, Any]:
        """Add a text channel to a guild (before the bot connects, or dispatch CHANNEL_CREATE yourself)."""
        guild = self.guilds[guild_id or self.guild_id]
        channel = text_channel_payload(self.snowflake(), guild.id, name, position=len(guild.channels))
        guild.channels.append(channel)
        return channel

    def dm_channel(self, user: dict[str, Any]) -> dict[str, Any]:
        """Return (creating it if needed) the DM channel between the bot and a user."""
        uid = int(user["id"])
        if uid not in self.dm_channels:
            self.dm_channels[uid] = dm_channel_payload(self.snowflake(), user)
        return self.dm_channels[uid]

    def _find_channel(self, channel_id: int) -> dict[str, Any] | None:
        """Return a guild or DM channel by id."""
        for guild in self.guilds.values():
            channel = guild.channel(channel_id)
            if channel is not None:
                return channel
        return next((c for c in self.dm_channels.values() if int(c["id"]) == channel_id), None)

    def _guild_of_channel(self, channel_id: int) -> int | None:
        """Return the guild id of a channel (None for DMs)."""
        return next((g.id for g in self.guilds.values() if g.channel(channel_id) is not None), None)

    def _user(self, user: dict[str, Any] | int | None) -> dict[str, Any]:
        """Resolve a user argument (dict, id or None for the default user)."""
        if user is None:
            return self.default_user
        if isinstance(user, dict):
            return user
        return self.users[int(user)]

    def application_info(self) -> dict[str, Any]:
        """Return the application object (GET /oauth2/applications/@me)."""
        return {
            "id": str(self.application_id),
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "is_monetized": False,
            "is_verified": False,
            "is_discoverable": False,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(),
            "owner": self.default_user,
            "flags": self.application_flags,
            "team": None,
            "bot": self.bot_user,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "integration_types_config": {"0": {}},
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
        }

    @property
    def application_flags(self) -> int:
        """Return application flags matching the allowed privileged intents (the *_LIMITED variants)."""
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.privileged_intents & INTENT_GUILD_PRESENCES:
            flags |= 1 << 13
        if self.privileged_intents & INTENT_GUILD_MEMBERS:
            flags |= 1 << 15
        if self.privileged_intents & INTENT_MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    def _ready_payload(self, session: Any) -> dict[str, Any]:
        """Return the READY event data for a new session."""
        data: dict[str, Any] = {
            "v": 10,
            "user_settings": {},
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "session_type": "normal",
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east", "us-central"],
            "game_relationships": [],
            "auth": {},
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "_trace": ['["gateway-prd-emulator-0",{"micros":0}]'],
        }
        if session.shard is not None:
            data["shard"] = session.shard
        return data

    # -- attachments ----------------------------------------------------------------------------

    def _make_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None,
        channel_id: int,
        *,
        kind: str = "attachments",
        description: str | None = None,
        ephemeral: bool = False,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Store bytes and return the Discord attachment object serving them."""
        att_id = self.snowflake()
        safe = re.sub(r"\s+", "_", filename)
        ctype = content_type or guess_content_type(safe, data)
        if ctype and ctype.startswith("text/") and "charset" not in ctype:
            ctype += "; charset=utf-8"
        now = int(time.time())
        query = f"ex={now + 86400:08x}&is={now:08x}&hm={secrets.token_hex(32)}&"
        path = f"/{kind}/{channel_id}/{att_id}/{quote(safe)}"
        att: dict[str, Any] = {
            "id": str(att_id),
            "filename": safe,
            "size": len(data),
            "url": f"{self.base_url}{path}?{query}",
            "proxy_url": f"{self.base_url}/media{path}?{query}",
        }
        if ctype:
            att["content_type"] = ctype
        if ctype and ctype.startswith("image/"):
            size = (width, height) if width and height else image_size(data)
            if size:
                att["width"], att["height"] = size
                att["placeholder_version"] = 1
        if description is not None:
            att["description"] = description
        if ephemeral:
            att["ephemeral"] = True
        self._blobs[att_id] = (bytes(data), ctype, safe)
        self.attachments[att_id] = att
        return att

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        width: int | None = None,
        height: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Register bytes a user "uploads" (e.g. for an ATTACHMENT option); return the attachment object."""
        return self._make_attachment(
            filename,
            data,
            content_type,
            self.channel_id,
            kind="ephemeral-attachments",
            description=description,
            ephemeral=True,
            width=width,
            height=height,
        )

    def _store_upload(
        self, channel_id: int, up: UploadedFile, entry: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Turn one uploaded file of the bot into a stored attachment."""
        if len(up.data) > self.attachment_size_limit:
            raise DiscordError(
                413,
                {"message": "Request entity too large", "code": 40005},
                f"file {up.filename!r} is {len(up.data)} bytes (limit {self.attachment_size_limit})",
            )
        entry = entry or {}
        ctype = None if up.content_type in ("application/octet-stream", "") else up.content_type
        return self._make_attachment(
            entry.get("filename") or up.filename,
            up.data,
            ctype,
            channel_id,
            description=entry.get("description"),
        )

    def _as_attachment(self, value: Any) -> dict[str, Any]:
        """Resolve an attachment argument: attachment dict, its id, or (filename, bytes[, content_type])."""
        if isinstance(value, tuple):
            return self.add_attachment(*value)
        att_id = int(value["id"]) if isinstance(value, dict) else int(value)
        if att_id not in self.attachments:
            raise LookupError(f"unknown attachment {att_id}; register it with add_attachment()")
        return self.attachments[att_id]

    def attachment_bytes(self, attachment: dict[str, Any] | int | str) -> bytes:
        """Return the bytes behind an attachment (object, id, or url)."""
        if isinstance(attachment, str) and attachment.startswith("http"):
            att_id = int(attachment.split("?")[0].split("/")[-2])
        else:
            att_id = int(attachment["id"]) if isinstance(attachment, dict) else int(attachment)
        return self._blobs[att_id][0]

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        """Serve attachment bytes like the CDN."""
        record = self._record_plain(request)
        fault = self._take_fault(record.method, record.path)
        if fault is not None:
            return self._finish(record, self._fault_response(fault, record.path))
        blob = (
            self._blobs.get(int(request.match_info["attachment_id"]))
            if request.match_info["attachment_id"].isdigit()
            else None
        )
        if blob is None or unquote(request.match_info["filename"]) != blob[2]:
            return self._finish(record, web.Response(status=404, text="404: Not Found"))
        data, ctype, _ = blob
        return self._finish(
            record, web.Response(body=data, headers={"Content-Type": ctype or "application/octet-stream"})
        )

    # -- recording and waiting ------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake everything waiting for a state change."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _protocol_error(self, text: str) -> None:
        """Record a misuse of the API that Discord would refuse."""
        log.warning("protocol error: %s", text)
        self.protocol_errors.append(text)

    async def wait_for(self, condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
        """Wait until condition() is truthy and return its value."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._changed
            value = condition()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.5))

    async def wait_for_request(
        self, matcher: Matcher, timeout: float = 10.0, *, start: int = 0
    ) -> RecordedRequest:
        """Return the first answered request at index >= start matching (method, path regex) or predicate."""
        if isinstance(matcher, tuple):
            method, pattern = matcher[0].upper(), re.compile(matcher[1])

            def predicate(r: RecordedRequest) -> bool:
                return r.method == method and pattern.search(r.path) is not None

            what = f"{method} {pattern.pattern}"
        else:
            predicate, what = matcher, getattr(matcher, "__name__", "predicate")

        def find() -> RecordedRequest | None:
            return next((r for r in self.requests[start:] if r.done and predicate(r)), None)

        try:
            return await self.wait_for(find, timeout, f"request {what}")
        except TimeoutError:
            seen = "\n".join(f"  {r.method} {r.path} -> {r.status}" for r in self.requests[start:][-20:])
            raise TimeoutError(
                f"no request matching {what} within {timeout}s; requests since {start}:\n{seen}"
            ) from None

    def mark(self) -> int:
        """Return the current number of recorded requests (for wait_for_request(start=...))."""
        return len(self.requests)

    def requests_matching(self, method: str, pattern: str) -> list[RecordedRequest]:
        """Return all recorded requests with this method whose path matches the regex."""
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method.upper() and rx.search(r.path)]

    async def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Wait until the bot has identified and received READY."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def wait_for_resume(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the gateway has accepted `count` RESUMEs in total."""
        await self.wait_for(lambda: self.gateway.resumes >= count, timeout, f"{count} gateway resume(s)")

    async def wait_for_identify(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the bot has sent `count` IDENTIFYs in total."""
        await self.wait_for(lambda: len(self.gateway.identifies) >= count, timeout, f"{count} identify(s)")

    async def wait_for_command_sync(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until `count` bulk command overwrites (PUT) have succeeded."""
        await self.wait_for(lambda: self.command_syncs >= count, timeout, f"{count} command sync(s)")

    async def wait_for_response(self, interaction: InteractionRef, timeout: float = 10.0) -> InteractionState:
        """Wait until the bot has acknowledged an interaction; return its state."""
        state = self.interaction_state(interaction)
        return await self.wait_for(
            lambda: state if state.acknowledged else None, timeout, f"a response to interaction {state.id}"
        )

    def interaction_state(self, interaction: InteractionRef) -> InteractionState:
        """Return the emulator's state for an interaction (its payload dict, token, or state)."""
        if isinstance(interaction, InteractionState):
            return interaction
        token = interaction["token"] if isinstance(interaction, dict) else interaction
        return self.interactions[token]

    def original_message(self, interaction: InteractionRef) -> dict[str, Any] | None:
        """Return the interaction's @original message, if any."""
        state = self.interaction_state(interaction)
        return self.messages.get(state.original_message_id) if state.original_message_id else None

    def followup_messages(self, interaction: InteractionRef) -> list[dict[str, Any]]:
        """Return the interaction's follow-up messages still existing."""
        state = self.interaction_state(interaction)
        return [self.messages[m] for m in state.followup_message_ids if m in self.messages]

    def channel_messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Return a channel's messages, oldest first (ephemeral ones included)."""
        cid = str(channel_id or self.channel_id)
        return sorted(
            (m for m in self.messages.values() if m["channel_id"] == cid), key=lambda m: int(m["id"])
        )

    @property
    def heartbeats(self) -> list[float]:
        """Return the monotonic times of every heartbeat received."""
        return self.gateway.heartbeats

    def max_heartbeat_gap(self) -> float:
        """Return the longest interval between consecutive heartbeats (0 with fewer than two)."""
        beats = self.gateway.heartbeats
        return max((b - a for a, b in itertools.pairwise(beats)), default=0.0)

    @property
    def identify_payloads(self) -> list[dict[str, Any]]:
        """Return every IDENTIFY payload (token redacted)."""
        return self.gateway.identifies

    @property
    def intents(self) -> int | None:
        """Return the intents of the last IDENTIFY."""
        return self.gateway.identifies[-1]["intents"] if self.gateway.identifies else None

    def assert_clean(self) -> None:
        """Raise AssertionError if any schema error, protocol error or unknown request was recorded."""
        problems = (
            [f"schema: {e}" for e in self.schema_errors]
            + [f"protocol: {e}" for e in self.protocol_errors]
            + [f"unknown: {e}" for e in self.unknown_requests]
        )
        if problems:
            raise AssertionError("Discord emulator recorded problems:\n" + "\n".join(problems))

    # -- fault injection ------------------------------------------------------------------------

    def rate_limit_next(
        self,
        method: str,
        path_regex: str,
        times: int = 1,
        retry_after: float = 0.5,
        *,
        is_global: bool = False,
    ) -> FaultRule:
        """Answer the next `times` matching requests with 429 (regex searched in the path after /api/v10)."""
        rule = FaultRule(
            "ratelimit", method.upper(), re.compile(path_regex), times, 429, retry_after, is_global
        )
        self.faults.append(rule)
        return rule

    def fail_next(
        self, method: str, path_regex: str, status: int = 500, times: int = 1, body: Any = None
    ) -> FaultRule:
        """Answer the next `times` matching requests with an error status."""
        rule = FaultRule("fail", method.upper(), re.compile(path_regex), times, status, body=body)
        self.faults.append(rule)
        return rule

    def expire_interaction(self, interaction: InteractionRef) -> None:
        """Make an interaction's callback and webhooks answer Discord's 404s (10062 / 10015)."""
        self.interaction_state(interaction).expired = True

    def _take_fault(self, method: str, path: str) -> FaultRule | None:
        """Return (and consume one use of) the first fault rule matching a request."""
        for rule in self.faults:
            if rule.matches(method, path):
                rule.remaining -= 1
                return rule
        return None

    def _fault_response(self, rule: FaultRule, path: str) -> web.Response:
        """Build the answer for an injected fault."""
        if rule.kind == "ratelimit":
            bucket = hashlib.md5(path.encode()).hexdigest()
            headers = {
                "Retry-After": str(max(1, math.ceil(rule.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                "X-RateLimit-Bucket": bucket,
                "X-RateLimit-Scope": "global" if rule.is_global else "user",
                "Via": "1.1 google",
            }
            if rule.is_global:
                headers["X-RateLimit-Global"] = "true"
            body = {
                "message": "You are being rate limited.",
                "retry_after": rule.retry_after,
                "global": rule.is_global,
            }
            return self._json(body, status=429, headers=headers)
        phrase = HTTPStatus(rule.status).phrase if rule.status in HTTPStatus._value2member_map_ else "Error"
        body = rule.body if rule.body is not None else {"message": f"{rule.status}: {phrase}", "code": 0}
        return self._json(body, status=rule.status)

    # -- gateway --------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Dispatch a gateway event (buffered for RESUME while the bot is disconnected); return its seq."""
        return await self.gateway.dispatch(event, data)

    async def drop_gateway(
        self, code: int | None = 4000, *, resumable: bool = True, hold: bool = False, timeout: float = 5.0
    ) -> None:
        """Close the bot's gateway connection (None: TCP drop); hold delays HELLO till release_gateway()."""
        # With hold=True, events dispatched before release_gateway() are certainly buffered and replayed.
        await self.gateway.drop(code, resumable=resumable, hold=hold, timeout=timeout)

    def release_gateway(self) -> None:
        """Let held gateway connections proceed (see drop_gateway(hold=True))."""
        self.gateway.hello_gate.set()

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT (the bot should reconnect and RESUME)."""
        await self.gateway.send_op(OP_RECONNECT, None)

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (resumable=False forces a fresh IDENTIFY)."""
        await self.gateway.send_op(OP_INVALID_SESSION, resumable)

    def _on_dispatch_sent(self, event: str, data: dict[str, Any]) -> None:
        """Note when an interaction actually reached the bot (starts Discord's 3 s deadline)."""
        if event == "INTERACTION_CREATE":
            state = self.interactions.get(data.get("token", ""))
            if state is not None and state.delivered_at is None:
                state.delivered_at = time.monotonic()

    def _token_ok(self, token: Any) -> bool:
        """Return whether a gateway token is acceptable."""
        return isinstance(token, str) and bool(token) and (self.token is None or token == self.token)

    async def _echo_message(self, event: str, msg: dict[str, Any], guild_id: int | None) -> None:
        """Dispatch MESSAGE_CREATE/UPDATE for a non-ephemeral message, if the bot's intents ask for it."""
        session = self.gateway.session
        if not self.echo_message_events or session is None or msg["flags"] & FLAG_EPHEMERAL:
            return
        if not session.intents & (INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES):
            return
        data = copy.deepcopy(msg)
        if guild_id:
            data["guild_id"] = str(guild_id)
            author = self.guilds[guild_id].members.get(int(msg["author"]["id"]))
            if author is not None:
                data["member"] = {k: v for k, v in author.items() if k != "user"}
        await self.gateway.dispatch(event, data)

    async def _delete_message(self, msg: dict[str, Any], guild_id: int | None) -> None:
        """Delete a stored message and dispatch MESSAGE_DELETE."""
        self.messages.pop(int(msg["id"]), None)
        self.deleted_messages.append(msg)
        self._notify()
        session = self.gateway.session
        if not self.echo_message_events or session is None or msg["flags"] & FLAG_EPHEMERAL:
            return
        if session.intents & (INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES):
            data = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if guild_id:
                data["guild_id"] = str(guild_id)
            await self.gateway.dispatch("MESSAGE_DELETE", data)

    # -- interaction builders -------------------------------------------------------------------

    async def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        user: dict[str, Any] | int | None,
        guild_id: int | None,
        channel_id: int | None,
        dm: bool,
        message: dict[str, Any] | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """Build, register and dispatch one INTERACTION_CREATE; return its payload."""
        iid = self.snowflake()
        token = interaction_token(iid)
        who = self._user(user)
        payload: dict[str, Any] = {
            "app_permissions": "0",
            "application_id": str(self.application_id),
            "attachment_size_limit": self.attachment_size_limit,
            "authorizing_integration_owners": {},
            "entitlement_sku_ids": [],
            "entitlements": [],
            "id": str(iid),
            "locale": locale,
            "token": token,
            "type": kind,
            "version": 1,
            "data": data,
        }
        if dm:
            channel = dict(self.dm_channel(who))
            payload["app_permissions"] = str(BOT_ROLE_PERMISSIONS)
            payload["authorizing_integration_owners"] = {"0": "0"}
            payload["context"] = 1
            payload["user"] = who
            gid = None
        else:
            gid = guild_id or self.guild_id
            guild = self.guilds[gid]
            cid = channel_id or int(guild.channels[0]["id"])
            found = guild.channel(cid)
            if found is None:
                raise LookupError(f"channel {cid} is not in guild {gid}")
            channel = {**found, "permissions": str(guild.member_permissions(int(who["id"])))}
            payload["app_permissions"] = str(guild.member_permissions(self.bot_id))
            payload["authorizing_integration_owners"] = {"0": str(gid)}
            payload["context"] = 0
            payload["guild"] = {"features": [], "id": str(gid), "locale": "en-US"}
            payload["guild_id"] = str(gid)
            payload["guild_locale"] = "en-US"
            payload["member"] = interaction_member(self, gid, who)
        payload["channel"] = channel
        payload["channel_id"] = channel["id"]
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        state = InteractionState(
            id=iid,
            token=token,
            type=kind,
            payload=payload,
            channel_id=int(channel["id"]),
            guild_id=gid,
            source_message_id=int(message["id"]) if message is not None else None,
            dispatched_at=time.monotonic(),
        )
        self.interactions[token] = state
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return payload

    def _message(self, message: dict[str, Any] | int | str) -> dict[str, Any]:
        """Return the stored (latest) version of a message given as dict or id."""
        mid = int(message["id"]) if isinstance(message, dict) else int(message)
        if mid not in self.messages:
            raise LookupError(f"unknown message {mid}")
        return self.messages[mid]

    def _message_location(self, msg: dict[str, Any]) -> tuple[int | None, int, bool]:
        """Return (guild_id, channel_id, is_dm) of a message."""
        cid = int(msg["channel_id"])
        gid = self._guild_of_channel(cid)
        return gid, cid, gid is None

    async def slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: dict[str, Any] | int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        attachments: dict[str, Any] | None = None,
        dm: bool = False,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """Dispatch a CHAT_INPUT interaction typed from the synced command ('group sub' for subcommands)."""
        values = {**(options or {}), **(attachments or {})}
        gid = None if dm else (guild_id or self.guild_id)
        data = command_data(self, name, values, gid)
        return await self._interaction(
            INTERACTION_APPLICATION_COMMAND,
            data,
            user=user,
            guild_id=gid,
            channel_id=channel_id,
            dm=dm,
            locale=locale,
        )

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: dict[str, Any] | int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        dm: bool = False,
    ) -> dict[str, Any]:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE interaction with `focused` being typed."""
        gid = None if dm else (guild_id or self.guild_id)
        data = command_data(self, name, options, gid, focused=focused)
        return await self._interaction(
            INTERACTION_AUTOCOMPLETE, data, user=user, guild_id=gid, channel_id=channel_id, dm=dm
        )

    async def message_context_menu(
        self,
        name: str,
        target_message: dict[str, Any] | int | str,
        *,
        user: dict[str, Any] | int | None = None,
    ) -> dict[str, Any]:
        """Dispatch a MESSAGE context-menu command on a stored message."""
        msg = self._message(target_message)
        gid, cid, dm = self._message_location(msg)
        cmd = find_command(self, name, COMMAND_MESSAGE, gid)
        data = {
            "id": cmd["id"],
            "name": cmd["name"],
            "type": COMMAND_MESSAGE,
            "target_id": msg["id"],
            "resolved": {"messages": {msg["id"]: copy.deepcopy(msg)}},
        }
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return await self._interaction(
            INTERACTION_APPLICATION_COMMAND, data, user=user, guild_id=gid, channel_id=cid, dm=dm
        )

    async def user_context_menu(
        self,
        name: str,
        target_user: dict[str, Any] | int,
        *,
        user: dict[str, Any] | int | None = None,
        guild_id: int | None = None,
        dm: bool = False,
    ) -> dict[str, Any]:
        """Dispatch a USER context-menu command on a user."""
        target = self._user(target_user)
        gid = None if dm else (guild_id or self.guild_id)
        cmd = find_command(self, name, COMMAND_USER, gid)
        resolved: dict[str, Any] = {"users": {target["id"]: target}}
        if gid is not None and int(target["id"]) in self.guilds[gid].members:
            member = {k: v for k, v in self.guilds[gid].members[int(target["id"])].items() if k != "user"}
            member["permissions"] = str(self.guilds[gid].member_permissions(int(target["id"])))
            resolved["members"] = {target["id"]: member}
        data = {
            "id": cmd["id"],
            "name": cmd["name"],
            "type": COMMAND_USER,
            "target_id": target["id"],
            "resolved": resolved,
        }
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return await self._interaction(
            INTERACTION_APPLICATION_COMMAND, data, user=user, guild_id=gid, channel_id=None, dm=dm
        )

    async def button_click(
        self,
        message: dict[str, Any] | int | str,
        custom_id: str,
        *,
        user: dict[str, Any] | int | None = None,
        values: list[str] | None = None,
    ) -> dict[str, Any]:
        """Dispatch a MESSAGE_COMPONENT interaction: a button (or, with values, a select) of a message."""
        msg = self._message(message)
        comp = find_component(msg, custom_id)
        kind = int(comp["type"])
        if comp.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled: a user cannot use it")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": kind, "id": comp.get("id")}
        if kind in SELECT_TYPES:
            if values is None:
                raise ValueError(f"component {custom_id!r} is a select menu: pass values")
            lo, hi = comp.get("min_values", 1), comp.get("max_values", 1)
            if not lo <= len(values) <= hi:
                raise ValueError(f"select {custom_id!r} takes {lo}..{hi} values, got {len(values)}")
            if kind == 3:
                allowed = [o["value"] for o in comp.get("options", [])]
                bad = [v for v in values if v not in allowed]
                if bad:
                    raise ValueError(f"select {custom_id!r} has no options {bad}")
            data["values"] = [str(v) for v in values]
            if kind == 5:
                users = [self._user(int(v)) for v in values]
                data["resolved"] = {"users": {u["id"]: u for u in users}}
        elif kind != COMPONENT_BUTTON:
            raise ValueError(f"component {custom_id!r} (type {kind}) cannot be clicked")
        gid, cid, dm = self._message_location(msg)
        return await self._interaction(
            INTERACTION_MESSAGE_COMPONENT, data, user=user, guild_id=gid, channel_id=cid, dm=dm, message=msg
        )

    async def select_menu(
        self,
        message: dict[str, Any] | int | str,
        custom_id: str,
        values: list[str],
        *,
        user: dict[str, Any] | int | None = None,
    ) -> dict[str, Any]:
        """Dispatch a MESSAGE_COMPONENT interaction choosing values in a select menu."""
        return await self.button_click(message, custom_id, user=user, values=values)

    async def submit_modal(
        self, opened_by: InteractionRef, values: dict[str, Any], *, user: dict[str, Any] | int | None = None
    ) -> dict[str, Any]:
        """Dispatch a MODAL_SUBMIT for the modal the bot answered `opened_by` with."""
        state = self.interaction_state(opened_by)
        if state.modal is None:
            raise LookupError(f"interaction {state.id} was not answered with a modal")
        data = {
            "custom_id": state.modal["custom_id"],
            "components": modal_submit_components(state.modal, values),
        }
        source = self.messages.get(state.source_message_id) if state.source_message_id else None
        opener = state.payload["member"]["user"] if "member" in state.payload else state.payload["user"]
        return await self._interaction(
            INTERACTION_MODAL_SUBMIT,
            data,
            user=user or opener,
            guild_id=state.guild_id,
            channel_id=state.channel_id,
            dm=state.guild_id is None,
            message=source,
        )

    async def user_message(
        self,
        content: str = "",
        *,
        channel_id: int | None = None,
        user: dict[str, Any] | int | None = None,
        attachments: list[Any] | None = None,
        embeds: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Post a message as a user (attachments: dicts or (name, bytes[, type])); dispatch MESSAGE_CREATE."""
        # As on Discord, content/embeds/attachments are blanked without MESSAGE_CONTENT unless mentioned.
        who = self._user(user)
        cid = channel_id or self.channel_id
        if self._find_channel(cid) is None:
            raise LookupError(f"unknown channel {cid}")
        atts = []
        for item in attachments or []:
            if isinstance(item, tuple):
                atts.append(self._make_attachment(item[0], item[1], item[2] if len(item) > 2 else None, cid))
            else:
                att = dict(self._as_attachment(item))
                att.pop("ephemeral", None)
                atts.append(att)
        if not (content or atts or embeds):
            raise ValueError("a message needs content, attachments or embeds")
        data = {"content": content, "embeds": embeds or []}
        msg = create_message(self, cid, data, [], author=who, allow_empty=True)
        msg["attachments"] = atts
        mentions_bot = f"<@{self.bot_id}>" in content or f"<@!{self.bot_id}>" in content
        if mentions_bot:
            msg["mentions"] = [self.bot_user]
        gid = self._guild_of_channel(cid)
        session = self.gateway.session
        if session is not None and session.intents & (
            INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES
        ):
            data = copy.deepcopy(msg)
            if gid and not session.intents & INTENT_MESSAGE_CONTENT and not mentions_bot:
                data.update({"content": "", "embeds": [], "attachments": [], "components": []})
            if gid:
                data["guild_id"] = str(gid)
                member = self.guilds[gid].members.get(int(who["id"]))
                if member is not None:
                    data["member"] = {k: v for k, v in member.items() if k != "user"}
            await self.gateway.dispatch("MESSAGE_CREATE", data)
        return msg

    # -- HTTP plumbing --------------------------------------------------------------------------

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JsonResponse:
        """Return a JSON response with Content-Type exactly application/json, as discord.py requires."""
        resp = JsonResponse(
            body=json.dumps(data).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        resp.payload = data
        return resp

    def _record_plain(self, request: web.Request) -> RecordedRequest:
        """Record a non-API request (CDN download, stray path)."""
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            json=None,
            files=[],
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            time=time.monotonic(),
            bot_auth=False,
            api=False,
        )
        self.requests.append(record)
        return record

    def _finish(self, record: RecordedRequest, resp: web.StreamResponse) -> web.StreamResponse:
        """Complete a record with its answer and wake waiters."""
        record.status = resp.status
        record.response = resp.payload if isinstance(resp, JsonResponse) else None
        log.debug("%s %s -> %s", record.method, record.path, resp.status)
        self._notify()
        return resp

    async def _handle_other(self, request: web.Request) -> web.StreamResponse:
        """Answer any path outside the API and CDN with 404."""
        record = self._record_plain(request)
        self.unknown_requests.append(f"{request.method} {request.path}")
        return self._finish(record, self._json({"message": "404: Not Found", "code": 0}, status=404))

    async def _read_body(
        self, request: web.Request, record: RecordedRequest
    ) -> tuple[Any, list[UploadedFile], bool]:
        """Parse a JSON or multipart body; return (json, uploads, valid_json)."""
        if not request.body_exists:
            return None, [], True
        ctype = request.content_type
        record.content_type = ctype
        uploads: list[UploadedFile] = []
        body: Any = None
        valid = True
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                if part.filename is not None:
                    data = bytes(await part.read(decode=False))
                    uploads.append(
                        UploadedFile(
                            part.name or "",
                            part.filename,
                            data,
                            part.headers.get("Content-Type", "application/octet-stream"),
                        )
                    )
                elif part.name == "payload_json":
                    try:
                        body = json.loads(await part.text())
                    except ValueError:
                        valid = False
        else:
            raw = await request.read()
            if ctype == "application/json" and raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    valid = False
        return body, uploads, valid

    def _schema_violations(
        self, record: RecordedRequest, op: Any, params: dict[str, str], body: Any, has_body: bool
    ) -> list[Violation]:
        """Validate parameters and body of one request against the spec."""
        violations = self.spec.parameter_violations(op, params, record.query)
        if op.request_content_types:
            ctype = record.content_type
            if not has_body:
                if op.body_required:
                    violations.append(Violation("body", (), "a request body is required", "required"))
            else:
                violations.extend(
                    self.spec.body_violations(op, ctype or "", body if body is not None else {})
                )
        return violations

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        """Record, fault-inject, route, validate and answer one API request."""
        raw = request.rel_url.raw_path[len(API_PREFIX) :]
        path = "/" + "/".join(unquote(s) for s in raw.strip("/").split("/")) if raw.strip("/") else "/"
        auth = request.headers.get("Authorization", "")
        bot_auth = (
            auth.startswith("Bot ") and len(auth) > 4 and (self.token is None or auth[4:] == self.token)
        )
        record = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=None,
            files=[],
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            time=time.monotonic(),
            bot_auth=bot_auth,
        )
        self.requests.append(record)
        try:
            body, uploads, valid_json = await self._read_body(request, record)
        except Exception as exc:
            log.warning("unreadable request body: %r", exc)
            body, uploads, valid_json = None, [], False
        record.json = body
        record.files = [(u.filename, u.data, u.content_type) for u in uploads]
        try:
            resp = await self._route(request, record, body, uploads, valid_json)
        except DiscordError as exc:
            if exc.protocol:
                self._protocol_error(f"{record.method} {record.template or path}: {exc.protocol}")
            resp = self._json(exc.body, status=exc.status)
        except Exception:
            log.exception("emulator failure on %s %s", record.method, path)
            self._protocol_error(f"emulator crashed on {record.method} {path} (see log)")
            resp = self._json({"message": "500: Internal Server Error", "code": 0}, status=500)
        if resp.status != 429:
            bucket = hashlib.md5((record.template or path).encode()).hexdigest()
            resp.headers.update(
                {
                    "X-RateLimit-Bucket": bucket,
                    "X-RateLimit-Limit": "50",
                    "X-RateLimit-Remaining": "49",
                    "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
                    "X-RateLimit-Reset-After": "1.000",
                    "Via": "1.1 google",
                }
            )
        return self._finish(record, resp)

    async def _route(
        self,
        request: web.Request,
        record: RecordedRequest,
        body: Any,
        uploads: list[UploadedFile],
        valid_json: bool,
    ) -> web.StreamResponse:
        """Find the operation and handler for a recorded request and run it."""
        method, path = record.method, record.path
        matched = self.spec.match_template(path)
        if matched is None:
            self.unknown_requests.append(f"{method} {path}")
            return self._json({"message": "404: Not Found", "code": 0}, status=404)
        template, params = matched
        record.template = template
        needs_auth = not template.startswith(NO_AUTH_PREFIXES)
        if needs_auth and not record.bot_auth:
            self._protocol_error(f"{method} {template}: missing or wrong 'Authorization: Bot <token>'")
            return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
        fault = self._take_fault(method, path)
        if fault is not None:
            log.debug("injecting %s (%s) on %s %s", fault.kind, fault.status, method, path)
            return self._fault_response(fault, path)
        op = self.spec.operation(method, template)
        if op is None:
            self.unknown_requests.append(
                f"{method} {path} (method not in spec; has {self.spec.methods(template)})"
            )
            return self._json({"message": "405: Method Not Allowed", "code": 0}, status=405)
        if not valid_json:
            self.schema_errors.append(f"{method} {template}: body is not valid JSON")
            return self._json(
                {"message": "The request body contains invalid JSON.", "code": 50109}, status=400
            )
        if self.validate:
            violations = self._schema_violations(record, op, params, body, request.body_exists)
            if violations:
                self.schema_errors.extend(v.describe(method, template) for v in violations)
                for v in violations:
                    log.warning("schema violation: %s", v.describe(method, template))
                return self._json(discord_form_errors(violations), status=400)
        handler = self.rest.routes.get((method, template))
        if handler is None:
            self.unknown_requests.append(f"{method} {template} (in the spec, not emulated)")
            return self._json({"message": "404: Not Found", "code": 0}, status=404)
        ctx = RequestContext(request=request, record=record, op=op, params=params, body=body, uploads=uploads)
        return await handler(ctx)
