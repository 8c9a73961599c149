"""Builders for INTERACTION_CREATE payloads exactly as Discord sends them to a bot over the gateway."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .payloads import member_payload

if TYPE_CHECKING:
    from .server import DiscordEmulator

log = logging.getLogger(__name__)

INTERACTION_PING = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11

COMMAND_CHAT_INPUT = 1
COMMAND_USER = 2
COMMAND_MESSAGE = 3

COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2
COMPONENT_STRING_SELECT = 3
COMPONENT_TEXT_INPUT = 4
COMPONENT_USER_SELECT = 5
COMPONENT_ROLE_SELECT = 6
COMPONENT_MENTIONABLE_SELECT = 7
COMPONENT_CHANNEL_SELECT = 8
COMPONENT_LABEL = 18
SELECT_TYPES = frozenset({3, 5, 6, 7, 8})


def interaction_token(interaction_id: int) -> str:
    """Return a token shaped like Discord's (base64url of 'interaction:<id>:<secret>')."""
    raw = f"interaction:{interaction_id}:{secrets.token_urlsafe(96)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def iter_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield every component of a message or modal, depth first (rows, containers, sections, labels)."""
    for comp in components or []:
        yield comp
        yield from iter_components(comp.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(comp.get(key), dict):
                yield from iter_components([comp[key]])


def find_command(emu: DiscordEmulator, name: str, command_type: int, guild_id: int | None) -> dict[str, Any]:
    """Return the synced command with this name and type (guild commands first)."""
    pools: list[list[dict[str, Any]]] = []
    if guild_id is not None:
        pools.append(emu.guild_commands.get(guild_id, []))
    pools.append(emu.commands)
    for pool in pools:
        for cmd in pool:
            if cmd["name"] == name and int(cmd.get("type", 1)) == command_type:
                return cmd
    synced = [c["name"] for c in emu.commands] + [c["name"] for cs in emu.guild_commands.values() for c in cs]
    raise LookupError(
        f"no synced command {name!r} of type {command_type} (synced: {synced}); did the bot sync?"
    )


def _check_value(opt: dict[str, Any], value: Any) -> None:
    """Refuse option values a Discord client would never send."""
    name = opt["name"]
    choices = opt.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise ValueError(f"option {name!r}: {value!r} is not one of the choices")
    if opt["type"] in (OPTION_INTEGER, OPTION_NUMBER):
        if "min_value" in opt and opt["min_value"] is not None and value < opt["min_value"]:
            raise ValueError(f"option {name!r}: {value} < min_value {opt['min_value']}")
        if "max_value" in opt and opt["max_value"] is not None and value > opt["max_value"]:
            raise ValueError(f"option {name!r}: {value} > max_value {opt['max_value']}")
    if opt["type"] == OPTION_STRING:
        if opt.get("min_length") is not None and len(value) < opt["min_length"]:
            raise ValueError(f"option {name!r}: shorter than min_length {opt['min_length']}")
        if opt.get("max_length") is not None and len(value) > opt["max_length"]:
            raise ValueError(f"option {name!r}: longer than max_length {opt['max_length']}")


def build_options(
    emu: DiscordEmulator,
    definitions: list[dict[str, Any]],
    values: dict[str, Any],
    resolved: dict[str, dict[str, Any]],
    guild_id: int | None,
    focused: str | None,
) -> list[dict[str, Any]]:
    """Return interaction option objects for these values, typed from the command definition."""
    by_name = {o["name"]: o for o in definitions or []}
    out: list[dict[str, Any]] = []
    for name, value in values.items():
        opt = by_name.get(name)
        if opt is None:
            raise ValueError(f"the command has no option {name!r} (options: {sorted(by_name)})")
        kind = int(opt["type"])
        item: dict[str, Any] = {"name": name, "type": kind}
        if name == focused:
            item["value"] = str(value)
            item["focused"] = True
            out.append(item)
            continue
        if kind == OPTION_STRING:
            value = str(value)
        elif kind == OPTION_INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"option {name!r} is INTEGER; got {value!r}")
        elif kind == OPTION_NUMBER:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"option {name!r} is NUMBER; got {value!r}")
        elif kind == OPTION_BOOLEAN:
            if not isinstance(value, bool):
                raise ValueError(f"option {name!r} is BOOLEAN; got {value!r}")
        elif kind == OPTION_ATTACHMENT:
            att = emu._as_attachment(value)
            resolved.setdefault("attachments", {})[att["id"]] = att
            value = att["id"]
        elif kind in (OPTION_USER, OPTION_MENTIONABLE) and (
            isinstance(value, dict) or int(value) in emu.users
        ):
            user = value if isinstance(value, dict) else emu.users[int(value)]
            resolved.setdefault("users", {})[user["id"]] = user
            guild = emu.guilds.get(guild_id) if guild_id is not None else None
            if guild is not None and int(user["id"]) in guild.members:
                member = {k: v for k, v in guild.members[int(user["id"])].items() if k != "user"}
                member["permissions"] = str(guild.member_permissions(int(user["id"])))
                resolved.setdefault("members", {})[user["id"]] = member
            value = user["id"]
        elif kind in (OPTION_CHANNEL,):
            channel = emu._find_channel(int(value))
            if channel is None:
                raise ValueError(f"option {name!r}: unknown channel {value!r}")
            guild = emu.guilds.get(guild_id) if guild_id is not None else None
            perms = guild.member_permissions(emu.bot_id) if guild is not None else 0
            resolved.setdefault("channels", {})[channel["id"]] = {**channel, "permissions": str(perms)}
            value = channel["id"]
        elif kind in (OPTION_ROLE, OPTION_MENTIONABLE):
            guild = emu.guilds.get(guild_id) if guild_id is not None else None
            role = next((r for r in (guild.roles if guild else []) if r["id"] == str(value)), None)
            if role is None:
                raise ValueError(f"option {name!r}: unknown role {value!r}")
            resolved.setdefault("roles", {})[role["id"]] = role
            value = role["id"]
        if kind not in (OPTION_ATTACHMENT, OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE):
            _check_value(opt, value)
        item["value"] = value
        out.append(item)
    if focused is None:
        missing = [o["name"] for o in definitions or [] if o.get("required") and o["name"] not in values]
        if missing:
            raise ValueError(f"required options missing: {missing}")
    elif focused not in values:
        raise ValueError(f"focused option {focused!r} has no value")
    return out


def command_data(
    emu: DiscordEmulator,
    name: str,
    options: dict[str, Any],
    guild_id: int | None,
    focused: str | None = None,
) -> dict[str, Any]:
    """Return `data` for a CHAT_INPUT interaction ('group sub' names address subcommands)."""
    parts = name.split()
    cmd = find_command(emu, parts[0], COMMAND_CHAT_INPUT, guild_id)
    resolved: dict[str, dict[str, Any]] = {}
    definitions = cmd.get("options") or []
    chain: list[dict[str, Any]] = []
    for part in parts[1:]:
        sub = next((o for o in definitions if o["name"] == part and o["type"] in (1, 2)), None)
        if sub is None:
            raise LookupError(f"command {cmd['name']!r} has no subcommand {part!r}")
        chain.append(sub)
        definitions = sub.get("options") or []
    if definitions and any(o["type"] in (1, 2) for o in definitions):
        raise ValueError(f"{name!r} is a group: name a subcommand")
    leaf = build_options(emu, definitions, options, resolved, guild_id, focused)
    for sub in reversed(chain):
        leaf = [{"name": sub["name"], "type": sub["type"], "options": leaf}]
    data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": COMMAND_CHAT_INPUT}
    if leaf:
        data["options"] = leaf
    if resolved:
        data["resolved"] = resolved
    if cmd.get("guild_id"):
        data["guild_id"] = cmd["guild_id"]
    return data


def find_component(message: dict[str, Any], custom_id: str) -> dict[str, Any]:
    """Return the component with this custom_id in a message."""
    for comp in iter_components(message.get("components") or []):
        if comp.get("custom_id") == custom_id:
            return comp
    ids = [c.get("custom_id") for c in iter_components(message.get("components") or []) if c.get("custom_id")]
    raise LookupError(f"message {message['id']} has no component {custom_id!r} (has {ids})")


def modal_submit_components(modal: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
    """Return modal-submit `components` mirroring the modal the bot sent, filled with values."""
    used: set[str] = set()

    def fill(comp: dict[str, Any]) -> dict[str, Any]:
        kind = comp.get("type")
        if kind == COMPONENT_ACTION_ROW:
            return {
                "type": 1,
                "id": comp.get("id"),
                "components": [fill(c) for c in comp.get("components", [])],
            }
        if kind == COMPONENT_LABEL:
            return {"type": COMPONENT_LABEL, "id": comp.get("id"), "component": fill(comp["component"])}
        cid = comp.get("custom_id")
        out: dict[str, Any] = {"type": kind, "id": comp.get("id")}
        if cid is not None:
            out["custom_id"] = cid
            used.add(cid)
        if kind == COMPONENT_TEXT_INPUT:
            value = str(values.get(cid, comp.get("value") or ""))
            if comp.get("required", True) and not value:
                raise ValueError(f"modal text input {cid!r} is required")
            if comp.get("max_length") is not None and len(value) > comp["max_length"]:
                raise ValueError(f"modal text input {cid!r} longer than {comp['max_length']}")
            if value and comp.get("min_length") is not None and len(value) < comp["min_length"]:
                raise ValueError(f"modal text input {cid!r} shorter than {comp['min_length']}")
            out["value"] = value
        elif kind in SELECT_TYPES:
            chosen = values.get(cid, [])
            out["values"] = [str(v) for v in (chosen if isinstance(chosen, list) else [chosen])]
        return out

    filled = [fill(c) for c in modal.get("components", [])]
    unknown = set(values) - used
    if unknown:
        raise ValueError(f"modal {modal.get('custom_id')!r} has no inputs {sorted(unknown)}")
    return filled


def interaction_member(emu: DiscordEmulator, guild_id: int, user: dict[str, Any]) -> dict[str, Any]:
    """Return the `member` object (with user and permissions) for a guild interaction."""
    guild = emu.guilds[guild_id]
    uid = int(user["id"])
    stored = guild.members.get(uid)
    member = dict(stored) if stored else member_payload(user, [], guild.joined_at)
    member["user"] = user
    member["permissions"] = str(guild.member_permissions(uid))
    member["unusual_dm_activity_until"] = None
    return member
