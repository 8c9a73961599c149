"""Handlers for the emulated REST endpoints (looked up by method and OpenAPI path template)."""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .interactions import (
    COMMAND_CHAT_INPUT,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
)
from .messages import (
    MESSAGE_TYPE_CHAT_INPUT_COMMAND,
    MESSAGE_TYPE_CONTEXT_MENU_COMMAND,
    MESSAGE_TYPE_DEFAULT,
    MESSAGE_TYPE_REPLY,
    DiscordError,
    create_message,
    edit_message,
    form_error,
    unknown,
)
from .payloads import FLAG_EPHEMERAL, FLAG_LOADING
from .records import InteractionState, RecordedRequest, UploadedFile
from .schema import TRUE_STRINGS, Operation

if TYPE_CHECKING:
    from .server import DiscordEmulator

log = logging.getLogger(__name__)

Handler = Callable[["RequestContext"], Awaitable[web.StreamResponse]]

CALLBACK_PONG = 1
CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE = 7
CALLBACK_AUTOCOMPLETE = 8
CALLBACK_MODAL = 9
# Which callback types Discord accepts for each interaction type.
ALLOWED_CALLBACKS = {
    INTERACTION_APPLICATION_COMMAND: {CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_MODAL},
    INTERACTION_MESSAGE_COMPONENT: {
        CALLBACK_MESSAGE,
        CALLBACK_DEFERRED_MESSAGE,
        CALLBACK_DEFERRED_UPDATE,
        CALLBACK_UPDATE,
        CALLBACK_MODAL,
    },
    INTERACTION_AUTOCOMPLETE: {CALLBACK_AUTOCOMPLETE},
    INTERACTION_MODAL_SUBMIT: {
        CALLBACK_MESSAGE,
        CALLBACK_DEFERRED_MESSAGE,
        CALLBACK_DEFERRED_UPDATE,
        CALLBACK_UPDATE,
    },
}
COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
MAX_COMMANDS = {1: 100, 2: 15, 3: 15, 4: 1}


@dataclass
class RequestContext:
    """One API request being answered."""

    request: web.Request
    record: RecordedRequest
    op: Operation
    params: dict[str, str]
    body: Any
    uploads: list[UploadedFile]

    @property
    def query(self) -> dict[str, str]:
        """Return the query parameters."""
        return self.record.query


def no_content() -> web.Response:
    """Return an empty 204."""
    return web.Response(status=204)


class RestApi:
    """The emulated endpoints, keyed by (METHOD, OpenAPI template)."""

    def __init__(self, emu: DiscordEmulator) -> None:
        self.emu = emu
        c = "/applications/{application_id}/commands"
        gc = "/applications/{application_id}/guilds/{guild_id}/commands"
        wh = "/webhooks/{webhook_id}/{webhook_token}"
        msgs = "/channels/{channel_id}/messages"
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/gateway"): self.get_gateway,
            ("GET", "/gateway/bot"): self.get_gateway_bot,
            ("GET", "/users/@me"): self.get_me,
            ("GET", "/users/{user_id}"): self.get_user,
            ("POST", "/users/@me/channels"): self.create_dm,
            ("GET", "/oauth2/applications/@me"): self.get_application,
            ("GET", "/applications/@me"): self.get_application,
            ("GET", c): self.list_commands,
            ("PUT", c): self.put_commands,
            ("POST", c): self.post_command,
            ("GET", c + "/{command_id}"): self.get_command,
            ("PATCH", c + "/{command_id}"): self.patch_command,
            ("DELETE", c + "/{command_id}"): self.delete_command,
            ("GET", gc): self.list_commands,
            ("PUT", gc): self.put_commands,
            ("POST", gc): self.post_command,
            ("GET", gc + "/{command_id}"): self.get_command,
            ("PATCH", gc + "/{command_id}"): self.patch_command,
            ("DELETE", gc + "/{command_id}"): self.delete_command,
            ("GET", gc + "/permissions"): self.list_command_permissions,
            (
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
            ): self.interaction_callback,
            ("POST", wh): self.execute_webhook,
            ("GET", wh + "/messages/@original"): self.get_webhook_message,
            ("PATCH", wh + "/messages/@original"): self.edit_webhook_message,
            ("DELETE", wh + "/messages/@original"): self.delete_webhook_message,
            ("GET", wh + "/messages/{message_id}"): self.get_webhook_message,
            ("PATCH", wh + "/messages/{message_id}"): self.edit_webhook_message,
            ("DELETE", wh + "/messages/{message_id}"): self.delete_webhook_message,
            ("GET", "/channels/{channel_id}"): self.get_channel,
            ("GET", msgs): self.list_messages,
            ("POST", msgs): self.create_channel_message,
            ("GET", msgs + "/{message_id}"): self.get_channel_message,
            ("PATCH", msgs + "/{message_id}"): self.edit_channel_message,
            ("DELETE", msgs + "/{message_id}"): self.delete_channel_message,
            ("PUT", msgs + "/{message_id}/reactions/{emoji_name}/@me"): self.reaction,
            ("DELETE", msgs + "/{message_id}/reactions/{emoji_name}/@me"): self.reaction,
            ("POST", "/channels/{channel_id}/typing"): self.typing,
            ("GET", "/guilds/{guild_id}"): self.get_guild,
            ("GET", "/guilds/{guild_id}/channels"): self.get_guild_channels,
            ("GET", "/guilds/{guild_id}/members/{user_id}"): self.get_member,
        }

    # -- discovery, users, application ---------------------------------------------------------

    async def get_gateway(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /gateway."""
        return self.emu._json({"url": self.emu.gateway_url})

    async def get_gateway_bot(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /gateway/bot."""
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return self.emu._json({"url": self.emu.gateway_url, "shards": 1, "session_start_limit": limit})

    async def get_me(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /users/@me."""
        me = {
            **self.emu.bot_user,
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
            "bio": "",
            "premium_type": 0,
        }
        return self.emu._json(me)

    async def get_user(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /users/{user_id}."""
        user = self.emu.users.get(int(ctx.params["user_id"]))
        if user is None:
            raise unknown("User", 10013)
        return self.emu._json(user)

    async def create_dm(self, ctx: RequestContext) -> web.StreamResponse:
        """POST /users/@me/channels."""
        user = self.emu.users.get(int(ctx.body["recipient_id"]))
        if user is None:
            raise unknown("User", 10013)
        return self.emu._json(self.emu.dm_channel(user))

    async def get_application(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /oauth2/applications/@me and /applications/@me."""
        return self.emu._json(self.emu.application_info())

    # -- application commands -------------------------------------------------------------------

    def _command_pool(self, ctx: RequestContext) -> tuple[list[dict[str, Any]], int | None]:
        """Return the command list addressed by the path (global or one guild's)."""
        emu = self.emu
        if ctx.params["application_id"] != str(emu.application_id):
            raise unknown("Application", 10002)
        if "guild_id" in ctx.params:
            guild_id = int(ctx.params["guild_id"])
            if guild_id not in emu.guilds:
                raise DiscordError(
                    403,
                    {"message": "Missing Access", "code": 50001},
                    f"commands for unknown guild {guild_id}",
                )
            return emu.guild_commands.setdefault(guild_id, []), guild_id
        return emu.commands, None

    def _check_options(self, options: list[dict[str, Any]], path: list[str]) -> None:
        """Apply Discord's option rules: names, descriptions, required-before-optional, duplicates."""
        seen_optional = False
        names: set[str] = set()
        for i, opt in enumerate(options):
            where = [*path, "options", str(i)]
            name = opt.get("name", "")
            if not COMMAND_NAME.match(name) or name != name.lower():
                raise form_error(
                    [*where, "name"],
                    "APPLICATION_COMMAND_INVALID_NAME",
                    "Command name is invalid",
                    f"option name {name!r} is invalid (lowercase, 1-32 of -_' letters digits)",
                )
            if name in names:
                raise form_error(
                    [*where, "name"],
                    "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                    "Option name already exists",
                    f"duplicate option name {name!r}",
                )
            names.add(name)
            if opt.get("type") in (1, 2):
                self._check_options(opt.get("options") or [], where)
                continue
            if opt.get("required"):
                if seen_optional:
                    raise form_error(
                        [*where, "required"],
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                        f"required option {name!r} after an optional one",
                    )
            else:
                seen_optional = True
            if opt.get("autocomplete") and opt.get("choices"):
                raise form_error(
                    [*where, "autocomplete"],
                    "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                    "Autocomplete cannot be enabled with choices",
                    f"option {name!r}: autocomplete with choices",
                )

    def _normalize_command(
        self, data: dict[str, Any], pool: list[dict[str, Any]], guild_id: int | None, index: int
    ) -> dict[str, Any]:
        """Check one command definition like Discord and return the stored command object."""
        kind = int(data.get("type") or COMMAND_CHAT_INPUT)
        name = data["name"]
        where = [str(index)] if index >= 0 else []
        if kind == COMMAND_CHAT_INPUT:
            if not COMMAND_NAME.match(name) or name != name.lower():
                raise form_error(
                    [*where, "name"],
                    "APPLICATION_COMMAND_INVALID_NAME",
                    "Command name is invalid",
                    f"slash command name {name!r} is invalid",
                )
            if not data.get("description"):
                raise form_error(
                    [*where, "description"],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                    f"slash command {name!r} has no description",
                )
            self._check_options(data.get("options") or [], where)
        elif data.get("description"):
            raise form_error(
                [*where, "description"],
                "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION_INVALID",
                "Context menu commands cannot have description",
                f"context menu {name!r} has a description",
            )
        elif data.get("options"):
            raise form_error(
                [*where, "options"],
                "APPLICATION_COMMAND_CONTEXT_MENU_OPTIONS_INVALID",
                "Context menu commands cannot have options",
                f"context menu {name!r} has options",
            )
        previous = next((c for c in pool if c["name"] == name and c["type"] == kind), None)
        perms = data.get("default_member_permissions")
        cmd: dict[str, Any] = {
            "id": previous["id"] if previous else str(self.emu.snowflake()),
            "application_id": str(self.emu.application_id),
            "version": str(self.emu.snowflake()),
            "default_member_permissions": None if perms is None else str(perms),
            "type": kind,
            "name": name,
            "name_localizations": data.get("name_localizations"),
            "description": data.get("description") or "",
            "description_localizations": data.get("description_localizations"),
            "dm_permission": data.get("dm_permission", True) if guild_id is None else None,
            "contexts": data.get("contexts"),
            "integration_types": data.get("integration_types") or [0],
            "nsfw": bool(data.get("nsfw") or False),
        }
        if data.get("options"):
            cmd["options"] = copy.deepcopy(data["options"])
        if guild_id is not None:
            cmd["guild_id"] = str(guild_id)
            del cmd["dm_permission"]
        return cmd

    async def list_commands(self, ctx: RequestContext) -> web.StreamResponse:
        """GET the global or guild command list."""
        pool, _ = self._command_pool(ctx)
        return self.emu._json(pool)

    async def put_commands(self, ctx: RequestContext) -> web.StreamResponse:
        """PUT (bulk overwrite) the global or guild command list."""
        pool, guild_id = self._command_pool(ctx)
        body = ctx.body or []
        seen: set[tuple[str, int]] = set()
        counts: dict[int, int] = {}
        new = []
        for i, data in enumerate(body):
            cmd = self._normalize_command(data, pool, guild_id, i)
            key = (cmd["name"], cmd["type"])
            if key in seen:
                raise form_error(
                    [str(i), "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                    f"duplicate command {key}",
                )
            seen.add(key)
            counts[cmd["type"]] = counts.get(cmd["type"], 0) + 1
            if counts[cmd["type"]] > MAX_COMMANDS.get(cmd["type"], 100):
                raise form_error(
                    [str(i)],
                    "APPLICATION_COMMANDS_TOO_MANY",
                    "Too many commands",
                    f"more than {MAX_COMMANDS[cmd['type']]} commands of type {cmd['type']}",
                )
            new.append(cmd)
        pool[:] = new
        self.emu.command_syncs += 1
        self.emu._notify()
        return self.emu._json(new)

    async def post_command(self, ctx: RequestContext) -> web.StreamResponse:
        """POST (upsert) one command."""
        pool, guild_id = self._command_pool(ctx)
        cmd = self._normalize_command(ctx.body, pool, guild_id, -1)
        existed = any(c["id"] == cmd["id"] for c in pool)
        pool[:] = [c for c in pool if c["id"] != cmd["id"]] + [cmd]
        self.emu._notify()
        return self.emu._json(cmd, status=200 if existed else 201)

    def _command(self, ctx: RequestContext) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Return the pool and the command addressed by the path."""
        pool, _ = self._command_pool(ctx)
        cmd = next((c for c in pool if c["id"] == ctx.params["command_id"]), None)
        if cmd is None:
            raise unknown("application command", 10063)
        return pool, cmd

    async def get_command(self, ctx: RequestContext) -> web.StreamResponse:
        """GET one command."""
        return self.emu._json(self._command(ctx)[1])

    async def patch_command(self, ctx: RequestContext) -> web.StreamResponse:
        """PATCH one command."""
        pool, cmd = self._command(ctx)
        merged = {**cmd, **(ctx.body or {})}
        new = self._normalize_command(
            merged,
            [c for c in pool if c is not cmd] + [cmd],
            None if "guild_id" not in cmd else int(cmd["guild_id"]),
            -1,
        )
        new["id"] = cmd["id"]
        pool[pool.index(cmd)] = new
        return self.emu._json(new)

    async def delete_command(self, ctx: RequestContext) -> web.StreamResponse:
        """DELETE one command."""
        pool, cmd = self._command(ctx)
        pool.remove(cmd)
        return no_content()

    async def list_command_permissions(self, ctx: RequestContext) -> web.StreamResponse:
        """GET guild command permissions (none are set)."""
        self._command_pool(ctx)
        return self.emu._json([])

    # -- interactions ---------------------------------------------------------------------------

    def _interaction_extras(self, state: InteractionState) -> dict[str, Any]:
        """Return the interaction-related fields of a message created by an interaction response."""
        emu = self.emu
        payload = state.payload
        user = payload["member"]["user"] if "member" in payload else payload["user"]
        metadata: dict[str, Any] = {
            "id": str(state.id),
            "type": state.type,
            "user": user,
            "authorizing_integration_owners": payload["authorizing_integration_owners"],
        }
        extra: dict[str, Any] = {
            "webhook_id": str(emu.application_id),
            "application_id": str(emu.application_id),
            "interaction_metadata": metadata,
        }
        if state.type == INTERACTION_APPLICATION_COMMAND:
            data = payload["data"]
            metadata["name"] = data["name"]
            metadata["command_type"] = data.get("type", 1)
            if data.get("target_id"):
                metadata["target_message_id" if data.get("type") == 3 else "target_user"] = (
                    data["target_id"]
                    if data.get("type") == 3
                    else data["resolved"]["users"][data["target_id"]]
                )
            legacy = {"id": str(state.id), "type": state.type, "name": data["name"], "user": user}
            if "member" in payload:
                legacy["member"] = {
                    k: v for k, v in payload["member"].items() if k not in ("user", "permissions")
                }
            extra["interaction"] = legacy
        elif state.source_message_id is not None:
            metadata["interacted_message_id"] = str(state.source_message_id)
        return extra

    def _message_type(self, state: InteractionState) -> int:
        """Return the message type Discord gives an interaction response."""
        if state.type == INTERACTION_APPLICATION_COMMAND:
            command_type = state.payload["data"].get("type", 1)
            return MESSAGE_TYPE_CHAT_INPUT_COMMAND if command_type == 1 else MESSAGE_TYPE_CONTEXT_MENU_COMMAND
        return MESSAGE_TYPE_DEFAULT

    async def interaction_callback(self, ctx: RequestContext) -> web.StreamResponse:
        """POST /interactions/{id}/{token}/callback: the initial response."""
        emu = self.emu
        iid, token = ctx.params["interaction_id"], ctx.params["interaction_token"]
        state = emu.interactions.get(token)
        if state is None or str(state.id) != iid or state.expired:
            raise DiscordError(404, {"message": "Unknown interaction", "code": 10062})
        if state.acknowledged:
            raise DiscordError(
                400,
                {"message": "Interaction has already been acknowledged.", "code": 40060},
                f"interaction {iid} acknowledged twice",
            )
        started = state.delivered_at if state.delivered_at is not None else state.dispatched_at
        elapsed = time.monotonic() - started
        if emu.interaction_ack_timeout is not None and elapsed > emu.interaction_ack_timeout:
            state.expired = True
            raise DiscordError(
                404,
                {"message": "Unknown interaction", "code": 10062},
                f"interaction {iid} acknowledged after {elapsed:.2f}s (Discord allows "
                f"{emu.interaction_ack_timeout:g}s)",
            )
        body = ctx.body
        if not isinstance(body, dict) or not isinstance(body.get("type"), int):
            raise form_error(
                ["type"], "BASE_TYPE_REQUIRED", "This field is required", "callback without a type"
            )
        ctype = body["type"]
        data = body.get("data") or {}
        allowed = set(ALLOWED_CALLBACKS.get(state.type, set()))
        if state.source_message_id is None:
            allowed -= {CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE}
        if ctype not in allowed:
            raise form_error(
                ["type"],
                "INTERACTION_RESPONSE_TYPE_INVALID",
                "Invalid interaction response type",
                f"callback type {ctype} is not valid for interaction type {state.type}",
            )
        channel_id = state.channel_id
        resource: dict[str, Any] | None = None
        if ctype == CALLBACK_MESSAGE:
            msg = create_message(
                emu,
                channel_id,
                data,
                ctx.uploads,
                author=emu.bot_user,
                allow_ephemeral=True,
                message_type=self._message_type(state),
                extra=self._interaction_extras(state),
            )
            state.original_message_id = int(msg["id"])
            resource = msg
            await emu._echo_message("MESSAGE_CREATE", msg, state.guild_id)
        elif ctype == CALLBACK_DEFERRED_MESSAGE:
            msg = create_message(
                emu,
                channel_id,
                {"flags": int(data.get("flags") or 0) & FLAG_EPHEMERAL},
                [],
                author=emu.bot_user,
                allow_ephemeral=True,
                allow_empty=True,
                extra_flags=FLAG_LOADING,
                message_type=self._message_type(state),
                extra=self._interaction_extras(state),
            )
            state.original_message_id = int(msg["id"])
            state.original_loading = True
            resource = msg
            await emu._echo_message("MESSAGE_CREATE", msg, state.guild_id)
        elif ctype in (CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE):
            assert state.source_message_id is not None
            source = emu.messages.get(state.source_message_id)
            if source is None:
                raise unknown("Message", 10008)
            if ctype == CALLBACK_UPDATE:
                edit_message(emu, source, data, ctx.uploads)
                resource = source
                await emu._echo_message("MESSAGE_UPDATE", source, state.guild_id)
            state.original_message_id = state.source_message_id
        elif ctype == CALLBACK_AUTOCOMPLETE:
            state.autocomplete_choices = list(data.get("choices") or [])
        elif ctype == CALLBACK_MODAL:
            state.modal = copy.deepcopy(data)
        state.acknowledged = True
        state.callback_type = ctype
        state.callback = body
        state.callback_time = time.monotonic()
        emu._notify()
        if ctx.query.get("with_response") not in TRUE_STRINGS:
            return no_content()
        flags = int(resource["flags"]) if resource else 0
        info: dict[str, Any] = {
            "id": str(state.id),
            "type": state.type,
            "response_message_loading": ctype == CALLBACK_DEFERRED_MESSAGE,
            "response_message_ephemeral": bool(flags & FLAG_EPHEMERAL),
        }
        if state.original_message_id is not None and ctype != CALLBACK_DEFERRED_UPDATE:
            info["response_message_id"] = str(state.original_message_id)
        out: dict[str, Any] = {"interaction": info}
        if resource is not None:
            out["resource"] = {"type": ctype, "message": resource}
        return emu._json(out)

    def _webhook_state(self, ctx: RequestContext, action: str) -> InteractionState:
        """Return the interaction behind an interaction webhook, checking it may be used."""
        emu = self.emu
        state = emu.interactions.get(ctx.params["webhook_token"])
        if ctx.params["webhook_id"] != str(emu.application_id) or state is None or state.expired:
            raise unknown("Webhook", 10015)
        if not state.acknowledged:
            raise DiscordError(
                404,
                {"message": "Unknown Webhook", "code": 10015},
                f"{action} on interaction {state.id} before its initial response",
            )
        return state

    def _webhook_message(self, ctx: RequestContext, state: InteractionState) -> dict[str, Any]:
        """Return the message addressed by @original or an id, if it belongs to the interaction."""
        mid_raw = ctx.params.get("message_id")
        if mid_raw is None:
            mid = state.original_message_id
            if mid is None:
                raise DiscordError(
                    404,
                    {"message": "Unknown Message", "code": 10008},
                    f"@original of interaction {state.id} used after a type {state.callback_type} response",
                )
        else:
            mid = int(mid_raw)
            if mid != state.original_message_id and mid not in state.followup_message_ids:
                raise DiscordError(
                    404,
                    {"message": "Unknown Message", "code": 10008},
                    f"message {mid} is not a response of interaction {state.id}",
                )
        msg = self.emu.messages.get(mid)
        if msg is None:
            raise DiscordError(
                404, {"message": "Unknown Message", "code": 10008}, f"message {mid} was deleted"
            )
        return msg

    async def execute_webhook(self, ctx: RequestContext) -> web.StreamResponse:
        """POST /webhooks/{app}/{token}: an interaction follow-up."""
        emu = self.emu
        state = self._webhook_state(ctx, "follow-up")
        data = ctx.body or {}
        if state.original_loading and state.original_message_id in emu.messages:
            # The first follow-up after a deferred (type 5) response replaces the loading message.
            msg = edit_message(emu, emu.messages[state.original_message_id], data, ctx.uploads)
            state.original_loading = False
            await emu._echo_message("MESSAGE_UPDATE", msg, state.guild_id)
        else:
            msg = create_message(
                emu,
                state.channel_id,
                data,
                ctx.uploads,
                author=emu.bot_user,
                allow_ephemeral=True,
                message_type=MESSAGE_TYPE_DEFAULT,
                extra=self._interaction_extras(state),
            )
            state.followup_message_ids.append(int(msg["id"]))
            await emu._echo_message("MESSAGE_CREATE", msg, state.guild_id)
        emu._notify()
        if ctx.query.get("wait") in TRUE_STRINGS:
            return emu._json(msg)
        return no_content()

    async def get_webhook_message(self, ctx: RequestContext) -> web.StreamResponse:
        """GET an interaction response message."""
        state = self._webhook_state(ctx, "get message")
        return self.emu._json(self._webhook_message(ctx, state))

    async def edit_webhook_message(self, ctx: RequestContext) -> web.StreamResponse:
        """PATCH an interaction response message (@original completes a deferred response)."""
        state = self._webhook_state(ctx, "edit message")
        msg = self._webhook_message(ctx, state)
        edit_message(self.emu, msg, ctx.body or {}, ctx.uploads)
        if int(msg["id"]) == state.original_message_id:
            state.original_loading = False
        await self.emu._echo_message("MESSAGE_UPDATE", msg, state.guild_id)
        self.emu._notify()
        return self.emu._json(msg)

    async def delete_webhook_message(self, ctx: RequestContext) -> web.StreamResponse:
        """DELETE an interaction response message."""
        state = self._webhook_state(ctx, "delete message")
        msg = self._webhook_message(ctx, state)
        if int(msg["id"]) == state.original_message_id:
            # A deleted "thinking…" placeholder is gone: the next follow-up is a new message, not its filling.
            state.original_loading = False
        await self.emu._delete_message(msg, state.guild_id)
        return no_content()

    # -- channels, messages, guilds -------------------------------------------------------------

    def _channel(self, ctx: RequestContext) -> dict[str, Any]:
        """Return the channel addressed by the path."""
        channel = self.emu._find_channel(int(ctx.params["channel_id"]))
        if channel is None:
            raise unknown("Channel", 10003)
        return channel

    def _channel_message(self, ctx: RequestContext) -> dict[str, Any]:
        """Return the message addressed by the path."""
        channel = self._channel(ctx)
        msg = self.emu.messages.get(int(ctx.params["message_id"]))
        if msg is None or msg["channel_id"] != channel["id"]:
            raise unknown("Message", 10008)
        return msg

    async def get_channel(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /channels/{id}."""
        return self.emu._json(self._channel(ctx))

    async def list_messages(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /channels/{id}/messages (newest first)."""
        channel = self._channel(ctx)
        limit = int(ctx.query.get("limit", 50))
        if not 1 <= limit <= 100:
            raise form_error(
                ["limit"], "NUMBER_TYPE_MAX", "int value should be between 1 and 100", f"limit={limit}"
            )
        msgs = [
            m
            for m in self.emu.messages.values()
            if m["channel_id"] == channel["id"] and not m["flags"] & FLAG_EPHEMERAL
        ]
        msgs.sort(key=lambda m: int(m["id"]), reverse=True)
        if "before" in ctx.query:
            msgs = [m for m in msgs if int(m["id"]) < int(ctx.query["before"])]
        if "after" in ctx.query:
            msgs = [m for m in msgs if int(m["id"]) > int(ctx.query["after"])][::-1]
        return self.emu._json(msgs[:limit])

    async def create_channel_message(self, ctx: RequestContext) -> web.StreamResponse:
        """POST /channels/{id}/messages."""
        emu = self.emu
        channel = self._channel(ctx)
        data = ctx.body or {}
        extra: dict[str, Any] = {}
        message_type = MESSAGE_TYPE_DEFAULT
        ref = data.get("message_reference")
        if ref and ref.get("message_id") is not None:
            target = emu.messages.get(int(ref["message_id"]))
            if target is None or target["channel_id"] != str(ref.get("channel_id") or channel["id"]):
                if ref.get("fail_if_not_exists", True):
                    raise form_error(
                        ["message_reference"],
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                        f"reply to unknown message {ref['message_id']}",
                    )
            else:
                message_type = MESSAGE_TYPE_REPLY
                extra["message_reference"] = {
                    "type": 0,
                    "channel_id": target["channel_id"],
                    "message_id": target["id"],
                }
                if channel.get("guild_id"):
                    extra["message_reference"]["guild_id"] = channel["guild_id"]
                extra["referenced_message"] = target
        msg = create_message(
            emu,
            int(channel["id"]),
            data,
            ctx.uploads,
            author=emu.bot_user,
            message_type=message_type,
            extra=extra,
        )
        guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
        await emu._echo_message("MESSAGE_CREATE", msg, guild_id)
        emu._notify()
        return emu._json(msg)

    async def get_channel_message(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /channels/{id}/messages/{id}."""
        return self.emu._json(self._channel_message(ctx))

    async def edit_channel_message(self, ctx: RequestContext) -> web.StreamResponse:
        """PATCH /channels/{id}/messages/{id} (only the bot's own messages)."""
        msg = self._channel_message(ctx)
        if msg["author"]["id"] != str(self.emu.bot_id):
            raise DiscordError(
                403,
                {"message": "Cannot edit a message authored by another user", "code": 50005},
                f"tried to edit message {msg['id']} of another user",
            )
        edit_message(self.emu, msg, ctx.body or {}, ctx.uploads)
        guild_id = self.emu._guild_of_channel(int(msg["channel_id"]))
        await self.emu._echo_message("MESSAGE_UPDATE", msg, guild_id)
        self.emu._notify()
        return self.emu._json(msg)

    async def delete_channel_message(self, ctx: RequestContext) -> web.StreamResponse:
        """DELETE /channels/{id}/messages/{id}."""
        msg = self._channel_message(ctx)
        await self.emu._delete_message(msg, self.emu._guild_of_channel(int(msg["channel_id"])))
        return no_content()

    async def reaction(self, ctx: RequestContext) -> web.StreamResponse:
        """PUT/DELETE a reaction of the bot (recorded only)."""
        self._channel_message(ctx)
        return no_content()

    async def typing(self, ctx: RequestContext) -> web.StreamResponse:
        """POST /channels/{id}/typing."""
        self._channel(ctx)
        return no_content()

    def _guild(self, ctx: RequestContext) -> Any:
        """Return the guild addressed by the path."""
        guild = self.emu.guilds.get(int(ctx.params["guild_id"]))
        if guild is None:
            raise unknown("Guild", 10004)
        return guild

    async def get_guild(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /guilds/{id}."""
        data = self._guild(ctx).guild_create()
        for key in (
            "joined_at",
            "large",
            "lazy",
            "unavailable",
            "member_count",
            "voice_states",
            "members",
            "channels",
            "threads",
            "presences",
            "stage_instances",
            "guild_scheduled_events",
            "soundboard_sounds",
            "embedded_activities",
            "activity_instances",
            "application_command_counts",
        ):
            data.pop(key, None)
        return self.emu._json(data)

    async def get_guild_channels(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /guilds/{id}/channels."""
        return self.emu._json(self._guild(ctx).channels)

    async def get_member(self, ctx: RequestContext) -> web.StreamResponse:
        """GET /guilds/{id}/members/{user_id}."""
        member = self._guild(ctx).members.get(int(ctx.params["user_id"]))
        if member is None:
            raise unknown("Member", 10007)
        return self.emu._json(member)
