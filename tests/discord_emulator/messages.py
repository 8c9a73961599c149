"""Message creation and edition with Discord's semantic checks (empty message, attachments, flags, embeds)."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from .payloads import (
    FLAG_EPHEMERAL,
    FLAG_IS_COMPONENTS_V2,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    iso_now,
)
from .records import UploadedFile

if TYPE_CHECKING:
    from .server import DiscordEmulator

log = logging.getLogger(__name__)

CREATE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2
EDIT_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2
MAX_ATTACHMENTS = 10
MAX_EMBED_CHARS = 6000
MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_REPLY = 19
MESSAGE_TYPE_CHAT_INPUT_COMMAND = 20
MESSAGE_TYPE_CONTEXT_MENU_COMMAND = 23


class DiscordError(Exception):
    """An error answer: HTTP status and Discord's JSON body; `protocol` says how the bot misbehaved."""

    def __init__(self, status: int, body: dict[str, Any], protocol: str | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.protocol = protocol


def form_error(path: list[str], code: str, message: str, protocol: str | None = None) -> DiscordError:
    """Return a 50035 Invalid Form Body error for one field."""
    errors: dict[str, Any] = {}
    node = errors
    for part in path:
        node = node.setdefault(part, {})
    node["_errors"] = [{"code": code, "message": message}]
    return DiscordError(400, {"code": 50035, "errors": errors, "message": "Invalid Form Body"}, protocol)


def unknown(kind: str, code: int) -> DiscordError:
    """Return Discord's 404 for an unknown object (e.g. 'Unknown Message', 10008)."""
    return DiscordError(404, {"message": f"Unknown {kind}", "code": code})


def _embed_chars(embed: dict[str, Any]) -> int:
    """Return the characters that count towards Discord's 6000-per-message embed limit."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "") + len(
        (embed.get("author") or {}).get("name") or ""
    )
    for fld in embed.get("fields") or []:
        total += len(fld.get("name") or "") + len(fld.get("value") or "")
    return total


def _check_fields(embeds: list[dict[str, Any]]) -> None:
    """Refuse embeds with fields lacking a name or value, or over the total size limit."""
    for i, embed in enumerate(embeds):
        for j, fld in enumerate(embed.get("fields") or []):
            for key in ("name", "value"):
                if not fld.get(key):
                    raise form_error(
                        ["embeds", str(i), "fields", str(j), key],
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                        f"embed field {j} has an empty {key}",
                    )
    if sum(_embed_chars(e) for e in embeds) > MAX_EMBED_CHARS:
        raise form_error(
            ["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
            "embeds exceed 6000 characters in total",
        )


def _number_components(components: list[dict[str, Any]], start: int = 1) -> int:
    """Give components without an `id` sequential ids, as Discord does; return the next id."""
    next_id = start
    for comp in components:
        if comp.get("id") is None:
            comp["id"] = next_id
        next_id = max(next_id, int(comp["id"])) + 1
        for key in ("components",):
            if isinstance(comp.get(key), list):
                next_id = _number_components(comp[key], next_id)
        for key in ("accessory", "component"):
            if isinstance(comp.get(key), dict):
                next_id = _number_components([comp[key]], next_id)
    return next_id


def _normalize_embeds(
    emu: DiscordEmulator, embeds: list[dict[str, Any]], attachments: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return embeds as Discord echoes them: type rich, attachment:// images resolved to attachment urls."""
    by_name = {a["filename"]: a for a in attachments}
    out = []
    for embed in embeds:
        embed = copy.deepcopy(embed)
        embed.setdefault("type", "rich")
        embed.pop("flags", None)
        if embed.get("color") is None:
            embed.pop("color", None)
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            if not isinstance(media, dict) or not str(media.get("url", "")).startswith("attachment://"):
                continue
            att = by_name.get(media["url"][len("attachment://") :])
            if att is None:
                continue
            media.update({"url": att["url"], "proxy_url": att["proxy_url"], "flags": 0})
            if "width" in att:
                media.update({"width": att["width"], "height": att["height"]})
            if att.get("content_type"):
                media["content_type"] = att["content_type"]
        out.append({k: v for k, v in embed.items() if v is not None})
    return out


def resolve_attachments(
    emu: DiscordEmulator,
    channel_id: int,
    data: dict[str, Any],
    uploads: list[UploadedFile],
    existing: list[dict[str, Any]],
    *,
    editing: bool,
) -> list[dict[str, Any]]:
    """Return the message's attachment list from `attachments` entries, new uploads and kept attachments."""
    index_of = {}
    for position, up in enumerate(uploads):
        key = (
            up.field[len("files[") : -1]
            if up.field.startswith("files[") and up.field.endswith("]")
            else str(position)
        )
        index_of[key] = up
    entries = data.get("attachments")
    result: list[dict[str, Any]] = []
    used: set[int] = set()
    if entries is None:
        if editing:
            result.extend(existing)
        for up in uploads:
            result.append(emu._store_upload(channel_id, up, None))
            used.add(id(up))
    else:
        kept = {a["id"]: a for a in existing}
        for i, entry in enumerate(entries):
            key = str(entry.get("id"))
            up = index_of.get(key)
            if up is not None and id(up) not in used:
                used.add(id(up))
                result.append(emu._store_upload(channel_id, up, entry))
            elif key in kept:
                att = dict(kept[key])
                if entry.get("description") is not None:
                    att["description"] = entry["description"]
                result.append(att)
            else:
                raise form_error(
                    ["attachments", str(i), "id"],
                    "ATTACHMENT_NOT_FOUND",
                    f"Attachment {key} not found",
                    f"attachments[{i}].id {key} refers to neither an uploaded file nor a kept attachment",
                )
        for up in uploads:
            if id(up) not in used:
                result.append(emu._store_upload(channel_id, up, None))
    if len(result) > MAX_ATTACHMENTS:
        raise form_error(
            ["attachments"],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
            f"{len(result)} attachments (max {MAX_ATTACHMENTS})",
        )
    return result


def _is_empty(msg: dict[str, Any], sticker_ids: Any = None) -> bool:
    """Return whether a message has nothing Discord would display."""
    return not (
        msg.get("content")
        or msg.get("embeds")
        or msg.get("attachments")
        or msg.get("components")
        or msg.get("poll")
        or sticker_ids
    )


def _check_v2(msg: dict[str, Any]) -> None:
    """Refuse content or embeds on a components-v2 message."""
    if msg["flags"] & FLAG_IS_COMPONENTS_V2 and (msg.get("content") or msg.get("embeds")):
        raise form_error(
            ["content" if msg.get("content") else "embeds"],
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' and 'embeds' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            "content/embeds sent with IS_COMPONENTS_V2",
        )


def create_message(
    emu: DiscordEmulator,
    channel_id: int,
    data: dict[str, Any],
    uploads: list[UploadedFile],
    *,
    author: dict[str, Any],
    message_type: int = MESSAGE_TYPE_DEFAULT,
    extra_flags: int = 0,
    allow_empty: bool = False,
    allow_ephemeral: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, store and return a new message (raises DiscordError on what Discord refuses)."""
    flags = int(data.get("flags") or 0)
    if flags & ~CREATE_FLAGS:
        raise form_error(
            ["flags"],
            "MESSAGE_FLAGS_INVALID",
            "Invalid flags",
            f"message flags {flags} not allowed on create",
        )
    if flags & FLAG_EPHEMERAL and not allow_ephemeral:
        flags &= ~FLAG_EPHEMERAL
    embeds = list(data.get("embeds") or [])
    _check_fields(embeds)
    attachments = resolve_attachments(emu, channel_id, data, uploads, [], editing=False)
    components = copy.deepcopy(data.get("components") or [])
    _number_components(components)
    msg: dict[str, Any] = {
        "type": message_type,
        "content": data.get("content") or "",
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": _normalize_embeds(emu, embeds, attachments),
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "flags": flags | extra_flags,
        "components": components,
        "id": str(emu.snowflake()),
        "channel_id": str(channel_id),
        "author": author,
        "pinned": False,
        "mention_everyone": False,
        "tts": bool(data.get("tts") or False),
    }
    if data.get("poll"):
        msg["poll"] = data["poll"]
    if data.get("nonce") is not None:
        msg["nonce"] = data["nonce"]
    if extra:
        msg.update(extra)
    if not allow_empty and _is_empty(msg, data.get("sticker_ids")):
        raise DiscordError(
            400, {"message": "Cannot send an empty message", "code": 50006}, "sent an empty message"
        )
    _check_v2(msg)
    emu.messages[int(msg["id"])] = msg
    return msg


def edit_message(
    emu: DiscordEmulator, msg: dict[str, Any], data: dict[str, Any], uploads: list[UploadedFile]
) -> dict[str, Any]:
    """Apply a PATCH to a stored message (all or nothing) and return it."""
    new = copy.deepcopy(msg)
    channel_id = int(new["channel_id"])
    if "flags" in data and data["flags"] is not None:
        flags = int(data["flags"])
        if flags & ~(EDIT_FLAGS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS):
            raise form_error(
                ["flags"],
                "MESSAGE_FLAGS_INVALID",
                "Invalid flags",
                f"message flags {flags} not allowed on edit",
            )
        new["flags"] = (new["flags"] & ~EDIT_FLAGS) | (flags & EDIT_FLAGS)
    if "content" in data:
        new["content"] = data["content"] or ""
    if "components" in data:
        components = copy.deepcopy(data["components"] or [])
        _number_components(components)
        new["components"] = components
    if "attachments" in data or uploads:
        new["attachments"] = resolve_attachments(
            emu, channel_id, data, uploads, new["attachments"], editing=True
        )
    if "embeds" in data:
        embeds = list(data["embeds"] or [])
        _check_fields(embeds)
        new["embeds"] = _normalize_embeds(emu, embeds, new["attachments"])
    if data.get("poll"):
        raise form_error(
            ["poll"], "BASE_TYPE_INVALID", "Polls cannot be edited", "tried to add a poll in an edit"
        )
    loading = bool(new["flags"] & FLAG_LOADING)
    new["flags"] &= ~FLAG_LOADING
    if _is_empty(new):
        raise DiscordError(
            400, {"message": "Cannot send an empty message", "code": 50006}, "edited a message to be empty"
        )
    _check_v2(new)
    if not loading:
        new["edited_timestamp"] = iso_now()
    msg.clear()
    msg.update(new)
    return msg
