"""Tests of the Discord emulator: spec validator, HTTP contract, and the real discord.py client end to end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route, handle_message_parameters
from discord.webhook.async_ import interaction_message_response_params, interaction_response_params

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # plain `pytest` without tests/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.discord_emulator import DiscordEmulator, load_spec

log = logging.getLogger(__name__)

T = TypeVar("T")
TOKEN = "emulator.test.token"
PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000185d0d2ad0000000049454e44ae426082"
)


def run(factory: Callable[[], Awaitable[T]], timeout: float = 25.0) -> T:
    """Run one async test body on a fresh event loop, with an overall timeout."""

    async def main() -> T:
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def _restore_discord_globals() -> Any:
    """Make sure no test leaves discord.py pointed at an emulator."""
    base, gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    yield
    assert base == Route.BASE, "Route.BASE was not restored"
    assert gateway == DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


# -- a minimal bot built on the real discord.py ------------------------------------------------------


class MoreView(discord.ui.View):
    """A persistent-style view with one button that edits the message it is on."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="More", custom_id="clip:more", style=discord.ButtonStyle.primary)
    async def more(self, interaction: discord.Interaction, button: discord.ui.Button[MoreView]) -> None:
        """Answer with UPDATE_MESSAGE (callback type 7)."""
        await interaction.response.edit_message(content="more results", view=None)


class NoteModal(discord.ui.Modal, title="Add a note"):
    """A modal with one text input."""

    note: discord.ui.TextInput[NoteModal] = discord.ui.TextInput(
        label="Note", custom_id="note", max_length=50
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Echo the note."""
        await interaction.response.send_message(f"noted: {self.note.value}", ephemeral=True)


class MiniBot(discord.Client):
    """A tiny bot: /search (string + attachment), /note (modal), /ping and a message context menu."""

    def __init__(self, **kwargs: Any) -> None:
        # on_ready fires guild_ready_timeout (default 2 s) after the last GUILD_CREATE.
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.2, **kwargs)
        self.tree = app_commands.CommandTree(self)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.response_delay = 0.0
        self.errors: list[BaseException] = []

        @self.tree.command(name="search", description="Search the collection")
        @app_commands.describe(query="words to search for", image="a picture to search with")
        async def search(
            interaction: discord.Interaction, query: str, image: discord.Attachment | None = None
        ) -> None:
            await asyncio.sleep(self.response_delay)
            await interaction.response.defer(thinking=True)
            data = await image.read() if image is not None else b""
            file = discord.File(io.BytesIO(PNG_1x1 + data), filename="result 1.png")
            embed = discord.Embed(title=f"Results for {query}").set_image(url="attachment://result_1.png")
            await interaction.followup.send(
                f"{query}: {len(data)} bytes", file=file, embed=embed, view=MoreView()
            )
            await self.events.put(("search", query))

        @self.tree.command(name="note", description="Write a note")
        async def note(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(NoteModal())

        @self.tree.command(name="ping", description="Ping")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        @self.tree.context_menu(name="Find similar")
        async def similar(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_message(f"similar to {message.id}", ephemeral=True)

        @self.tree.error
        async def on_tree_error(
            interaction: discord.Interaction, error: app_commands.AppCommandError
        ) -> None:
            self.errors.append(error)
            await self.events.put(("error", error))

    async def setup_hook(self) -> None:
        """Register the persistent view."""
        self.add_view(MoreView())

    async def on_ready(self) -> None:
        """Sync commands once connected."""
        await self.tree.sync()
        await self.events.put(("ready", None))

    async def on_message(self, message: discord.Message) -> None:
        """Record messages from users."""
        if message.author.id != self.user.id:  # type: ignore[union-attr]
            await self.events.put(("message", message))

    async def next_event(self, kind: str, timeout: float = 10.0) -> Any:
        """Return the payload of the next event of this kind (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            got, payload = await asyncio.wait_for(self.events.get(), max(0.0, deadline - time.monotonic()))
            if got == kind:
                return payload


@contextlib.asynccontextmanager
async def running_bot(emu: DiscordEmulator, client: discord.Client | None = None) -> AsyncIterator[Any]:
    """Start a bot against the emulator, wait for READY and the command sync, and close it afterwards."""
    with emu.patch_discord():
        bot = client or MiniBot()
        task = asyncio.create_task(bot.start(TOKEN))
        try:
            await emu.wait_until_ready()
            await emu.wait_for_command_sync()
            yield bot
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)


# -- validator -----------------------------------------------------------------------------------


CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"
FOLLOWUP = "/webhooks/{webhook_id}/{webhook_token}"
MESSAGES = "/channels/{channel_id}/messages"
COMMANDS = "/applications/{application_id}/commands"


def violations(method: str, template: str, body: Any, content_type: str = "application/json") -> list[str]:
    """Return readable violations of a body for an operation."""
    spec = load_spec()
    op = spec.operation(method, template)
    assert op is not None
    return [v.describe(method, template) for v in spec.body_violations(op, content_type, body)]


def test_validator_refuses_bad_bodies() -> None:
    """Bodies Discord refuses are refused, with the JSON path of the problem."""
    too_long = violations("POST", MESSAGES, {"content": "x" * 2001})
    assert len(too_long) == 1 and "$.content" in too_long[0] and "2000" in too_long[0]
    assert violations("POST", MESSAGES, {"content": "x" * 2000}) == []
    long_followup = violations("POST", FOLLOWUP, {"content": "y" * 2001}, "multipart/form-data")
    assert long_followup and "$.content" in long_followup[0]
    bad_type = violations("POST", CALLBACK, {"type": 42})
    assert len(bad_type) == 1 and "$.type" in bad_type[0] and "42" in bad_type[0]
    assert violations("POST", CALLBACK, {"type": "5"}), "a string callback type must be refused"
    assert "$.type" in violations("POST", CALLBACK, {"data": {"content": "x"}})[0]
    deep = violations("POST", CALLBACK, {"type": 4, "data": {"content": "z" * 2001}})
    assert len(deep) == 1 and "$.data.content" in deep[0]
    button = {"type": 1, "components": [{"type": 2, "style": 1, "custom_id": "a", "label": "L" * 81}]}
    label = violations("POST", CALLBACK, {"type": 4, "data": {"components": [button]}})
    assert len(label) == 1 and "$.data.components[0].components[0].label" in label[0]
    assert violations("POST", MESSAGES, {"content": 5})
    assert violations("POST", MESSAGES, {"embeds": [{"title": "t" * 257}]})
    assert violations("POST", MESSAGES, {"attachments": [{"id": "abc"}]})
    bad_option = [
        {"name": "x", "description": "d", "options": [{"type": 99, "name": "o", "description": "d"}]}
    ]
    assert "$[0].options[0].type" in violations("PUT", COMMANDS, bad_option)[0]


def test_validator_accepts_discord_py_bodies() -> None:
    """Bodies produced by discord.py itself validate cleanly."""

    async def main() -> None:
        view = MoreView()
        embed = discord.Embed(title="t", description="d", colour=0x00FF00).add_field(name="n", value="v")
        embed.set_image(url="attachment://a.png").set_footer(text="f")
        file = discord.File(io.BytesIO(b"x"), filename="a.png", description="alt text")
        params = handle_message_parameters(
            content="hi", embed=embed, view=view, file=file, allowed_mentions=discord.AllowedMentions.none()
        )
        payload = json.loads(params.multipart[0]["value"])
        assert violations("POST", MESSAGES, payload, "multipart/form-data") == []
        assert violations("POST", FOLLOWUP, payload, "multipart/form-data") == []
        ref = discord.MessageReference(message_id=1300000000000000900, channel_id=1300000000000000101)
        reply = handle_message_parameters(
            content="r", message_reference=ref.to_message_reference_dict(), mention_author=False
        )
        assert violations("POST", MESSAGES, reply.payload) == []
        msg = interaction_message_response_params(
            type=4, content="hello", embed=embed, view=view, flags=discord.MessageFlags(ephemeral=True)
        )
        assert violations("POST", CALLBACK, msg.payload) == []
        assert violations("POST", CALLBACK, interaction_response_params(type=5).payload) == []
        assert violations("POST", CALLBACK, {"type": 9, "data": NoteModal().to_dict()}) == []
        bot = MiniBot()
        commands = [c.to_dict(bot.tree) for c in bot.tree.get_commands()]
        assert violations("PUT", COMMANDS, commands) == []

    run(main)


# -- HTTP contract -------------------------------------------------------------------------------


def test_http_contract_errors_auth_and_attachments() -> None:
    """Content types, Discord's error JSON, auth recording, unknown routes and the CDN behave like Discord."""

    async def main() -> None:
        async with DiscordEmulator(token=TOKEN) as emu, aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bot {TOKEN}"}
            async with http.get(f"{emu.api_base}/gateway/bot", headers=auth) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
                body = await resp.json()
                assert body["url"] == emu.gateway_url and body["shards"] == 1
            async with http.get(f"{emu.api_base}/users/@me") as resp:
                assert resp.status == 401
            assert emu.requests[-1].bot_auth is False and "Authorization" not in emu.requests[-1].headers
            assert emu.protocol_errors == ["GET /users/@me: missing or wrong 'Authorization: Bot <token>'"]
            emu.protocol_errors.clear()
            assert emu.requests[0].bot_auth is True
            assert all(TOKEN not in json.dumps(r.headers) for r in emu.requests)
            url = f"{emu.api_base}/channels/{emu.channel_id}/messages"
            async with http.post(url, json={"content": "x" * 2001}, headers=auth) as resp:
                assert resp.status == 400
                err = await resp.json()
                assert (
                    err["code"] == 50035
                    and err["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
                )
            assert len(emu.schema_errors) == 1 and "$.content" in emu.schema_errors[0]
            emu.schema_errors.clear()
            async with http.post(url, json={"content": ""}, headers=auth) as resp:
                assert resp.status == 400 and (await resp.json())["code"] == 50006
            assert emu.protocol_errors and "empty" in emu.protocol_errors[0]
            emu.protocol_errors.clear()
            async with http.get(f"{emu.api_base}/no/such/route", headers=auth) as resp:
                assert resp.status == 404 and await resp.json() == {"message": "404: Not Found", "code": 0}
            assert emu.unknown_requests == ["GET /no/such/route"]
            emu.unknown_requests.clear()
            att = emu.add_attachment("cat photo.png", PNG_1x1)
            assert att["filename"] == "cat_photo.png" and (att["width"], att["height"]) == (1, 1)
            assert att["content_type"] == "image/png" and att["url"].startswith(emu.base_url)
            async with http.get(att["url"]) as resp:
                assert resp.status == 200 and await resp.read() == PNG_1x1
            emu.fail_next("GET", r"/ephemeral-attachments/", status=503)
            async with http.get(att["proxy_url"]) as resp:
                assert resp.status == 503
            emu.assert_clean()

    run(main)


async def _raw_identify(
    ws: aiohttp.ClientWebSocketResponse,
    receive: Callable[[], Awaitable[dict[str, Any]]],
    payload: dict[str, Any],
) -> list[dict[str, Any]]:
    """Send one payload and collect dispatches until GUILD_CREATE or RESUMED."""
    await ws.send_str(json.dumps(payload))
    got = []
    while True:
        msg = await receive()
        got.append(msg)
        if msg.get("t") in ("GUILD_CREATE", "RESUMED") or msg.get("op") == 9:
            return got


def test_gateway_protocol_plain_and_zlib_stream() -> None:
    """HELLO, heartbeat ACK, IDENTIFY -> READY + GUILD_CREATE, RESUME replay, bad RESUME; plain and zlib."""

    async def main() -> None:
        async with DiscordEmulator(heartbeat_interval_ms=1000) as emu, aiohttp.ClientSession() as http:
            identify = {
                "op": 2,
                "d": {
                    "token": TOKEN,
                    "intents": 513,
                    "properties": {"os": "linux", "browser": "t", "device": "t"},
                },
            }
            # Plain text frames.
            async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json") as ws:

                async def receive_plain() -> dict[str, Any]:
                    return json.loads((await ws.receive(timeout=5)).data)

                hello = await receive_plain()
                assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 1000
                await ws.send_str(json.dumps({"op": 1, "d": None}))
                assert (await receive_plain())["op"] == 11
                ready, guild = await _raw_identify(ws, receive_plain, identify)
                assert ready["t"] == "READY" and ready["s"] == 1
                assert ready["d"]["resume_gateway_url"] == emu.gateway_url
                assert ready["d"]["guilds"] == [{"id": str(emu.guild_id), "unavailable": True}]
                assert guild["t"] == "GUILD_CREATE" and guild["d"]["id"] == str(emu.guild_id)
                session_id = ready["d"]["session_id"]
                await ws.close(code=4000)  # a client closing with 1000/1001 would end the session
            assert emu.intents == 513 and emu.identify_payloads[0]["token"] == "<redacted>"
            await emu.wait_for(lambda: emu.gateway.open_connection is None, what="disconnect")
            seq = await emu.dispatch("TYPING_START", {"channel_id": str(emu.channel_id), "user_id": "1"})
            # zlib-stream: one inflater for the whole connection, each message ends with Z_SYNC_FLUSH.
            async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json&compress=zlib-stream") as ws:
                inflater = zlib.decompressobj()

                async def receive_zlib() -> dict[str, Any]:
                    data = (await ws.receive(timeout=5)).data
                    assert isinstance(data, bytes) and data.endswith(b"\x00\x00\xff\xff")
                    return json.loads(inflater.decompress(data))

                assert (await receive_zlib())["op"] == 10
                resume = {"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": 2}}
                replayed, resumed = await _raw_identify(ws, receive_zlib, resume)
                assert replayed["t"] == "TYPING_START" and replayed["s"] == seq == 3
                assert resumed["t"] == "RESUMED" and resumed["s"] == 4
            await emu.wait_for(lambda: emu.gateway.open_connection is None, what="disconnect")
            async with http.ws_connect(f"{emu.gateway_url}?v=10&encoding=json") as ws:
                await ws.receive(timeout=5)
                bad = {"op": 6, "d": {"token": TOKEN, "session_id": "nope", "seq": 1}}
                (invalid,) = await _raw_identify(ws, receive_plain, bad)
                assert invalid == {"op": 9, "d": False, "s": None, "t": None}
            assert emu.gateway.resumes == 1 and len(emu.heartbeats) == 1
            emu.assert_clean()

    run(main)


# -- the real discord.py client end to end -------------------------------------------------------


def test_discord_py_slash_command_defer_followup_with_file() -> None:
    """discord.py logs in, identifies, syncs; /search defers, reads the attachment, follows up with a file."""

    async def main() -> None:
        async with DiscordEmulator(token=TOKEN, heartbeat_interval_ms=1000) as emu:
            async with running_bot(emu) as bot:
                assert [r.path for r in emu.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
                assert emu.intents == discord.Intents.default().value
                sync = emu.requests_matching("PUT", r"^/applications/\d+/commands$")[0]
                assert (
                    sync.bot_auth
                    and sync.status == 200
                    and {c["name"] for c in sync.json} == {"search", "note", "ping", "Find similar"}
                )
                assert all(c["id"] for c in emu.commands)
                upload = PNG_1x1 + b"user bytes"
                inter = await emu.slash_command(
                    "search", {"query": "red cat"}, attachments={"image": ("cat.png", upload)}
                )
                assert inter["data"]["options"][1]["type"] == 11
                assert await bot.next_event("search") == "red cat"
                callback = await emu.wait_for_request(("POST", r"^/interactions/\d+/[^/]+/callback$"))
                assert callback.json == {"type": 5} and callback.query["with_response"] == "1"
                assert callback.bot_auth is False and callback.status == 200
                assert callback.response["interaction"]["response_message_loading"] is True
                followup = await emu.wait_for_request(("POST", r"^/webhooks/\d+/[^/]+$"))
                assert followup.content_type == "multipart/form-data" and followup.query["wait"] == "1"
                assert followup.files == [("result 1.png", PNG_1x1 + upload, "application/octet-stream")]
                assert followup.json["attachments"] == [{"id": 0, "filename": "result 1.png"}]
                message = emu.original_message(inter)
                assert message is not None and message["id"] == followup.response["id"]
                assert message["content"] == f"red cat: {len(upload)} bytes" and not message["flags"] & 128
                (att,) = message["attachments"]
                assert att["filename"] == "result_1.png" and emu.attachment_bytes(att) == PNG_1x1 + upload
                assert message["embeds"][0]["image"]["url"] == att["url"]
                assert message["components"][0]["components"][0]["custom_id"] == "clip:more"
                async with aiohttp.ClientSession() as http, http.get(att["url"]) as resp:
                    assert await resp.read() == PNG_1x1 + upload
                # The button on the follow-up: discord.py answers UPDATE_MESSAGE (7).
                click = await emu.button_click(message, "clip:more")
                state = await emu.wait_for_response(click)
                assert state.callback_type == 7
                assert emu.messages[int(message["id"])]["content"] == "more results"
                assert emu.messages[int(message["id"])]["components"] == []
                # The message context menu: an ephemeral CHANNEL_MESSAGE_WITH_SOURCE (4).
                menu = await emu.message_context_menu("Find similar", message)
                reply = emu.original_message(await emu.wait_for_response(menu))
                assert (
                    reply is not None
                    and reply["flags"] & 64
                    and reply["content"] == f"similar to {message['id']}"
                )
                # A modal, then its submission.
                opened = await emu.slash_command("note")
                assert (await emu.wait_for_response(opened)).callback_type == 9
                submitted = await emu.submit_modal(opened, {"note": "remember me"})
                noted = emu.original_message(await emu.wait_for_response(submitted))
                assert noted is not None and noted["content"] == "noted: remember me"
                assert bot.errors == []
            assert emu.heartbeats and emu.max_heartbeat_gap() < 1.6
            emu.assert_clean()

    run(main)


def test_discord_py_survives_gateway_drops_and_gets_replayed_events() -> None:
    """After a drop (close 4000, then a TCP abort) discord.py RESUMEs and receives the buffered events."""

    async def main() -> None:
        async with DiscordEmulator(token=TOKEN, heartbeat_interval_ms=1000) as emu:
            async with running_bot(emu) as bot:
                await bot.next_event("ready")
                await emu.drop_gateway(4000, hold=True)
                sent = await emu.user_message("hello while you were away")
                emu.release_gateway()
                await emu.wait_for_resume(1)
                got = await bot.next_event("message")
                assert got.id == int(sent["id"]) and got.content == ""  # no MESSAGE_CONTENT intent
                replay = [
                    f for f in emu.gateway.frames if f.t == "MESSAGE_CREATE" and f.d["id"] == sent["id"]
                ]
                assert [f.connection for f in replay] == [2]
                await emu.drop_gateway(None, hold=True)
                sent = await emu.user_message(f"<@{emu.bot_id}> ping")
                emu.release_gateway()
                await emu.wait_for_resume(2)
                got = await bot.next_event("message")
                assert got.id == int(sent["id"]) and got.content.endswith(
                    "ping"
                )  # mentioned: content visible
                beats = len(emu.heartbeats)
                inter = await emu.slash_command("ping")
                assert (await emu.wait_for_response(inter)).callback_type == 4
                await emu.wait_for(lambda: len(emu.heartbeats) > beats, 5, "a heartbeat after the resume")
                assert len(emu.identify_payloads) == 1
            emu.assert_clean()

    run(main)


def test_discord_py_waits_on_429_and_retries_5xx() -> None:
    """discord.py honours 429 retry_after (bot and webhook routes) and retries a 502."""

    async def main() -> None:
        async with DiscordEmulator(token=TOKEN) as emu:
            async with running_bot(emu) as bot:
                channel = bot.get_channel(emu.channel_id)
                assert isinstance(channel, discord.TextChannel)
                emu.rate_limit_next("POST", r"^/channels/\d+/messages$", retry_after=0.3)
                start = emu.mark()
                t0 = time.monotonic()
                sent = await channel.send("after a rate limit")
                assert time.monotonic() - t0 >= 0.29
                tries = emu.requests_matching("POST", r"^/channels/\d+/messages$")
                assert [r.status for r in tries] == [429, 200] and tries[0].response["retry_after"] == 0.3
                assert emu.messages[sent.id]["content"] == "after a rate limit"
                emu.fail_next("PATCH", r"^/channels/\d+/messages/\d+$", status=502)
                edited = await sent.edit(content="edited")
                assert edited.content == "edited"
                assert [r.status for r in emu.requests_matching("PATCH", r"/messages/\d+$")] == [502, 200]
                emu.rate_limit_next("POST", r"^/webhooks/", retry_after=0.2)
                inter = await emu.slash_command("search", {"query": "dogs"})
                assert await bot.next_event("search") == "dogs"
                hooks = [r.status for r in emu.requests[start:] if r.path.startswith("/webhooks/")]
                assert hooks == [429, 200]
                assert emu.original_message(inter)["content"] == "dogs: 0 bytes"  # type: ignore[index]
            emu.assert_clean()

    run(main)


def test_expired_and_late_interactions_answer_unknown_interaction() -> None:
    """An expired token and a response after the 3 s window get Discord's 10062; lateness is recorded."""

    async def main() -> None:
        async with DiscordEmulator(token=TOKEN, interaction_ack_timeout=0.2) as emu:
            async with running_bot(emu) as bot:
                bot.response_delay = 0.4
                await emu.slash_command("search", {"query": "late"})
                error = await bot.next_event("error")
                assert isinstance(error.original, discord.NotFound) and error.original.code == 10062
                assert emu.protocol_errors and "after 0." in emu.protocol_errors[0]
                emu.protocol_errors.clear()
                bot.response_delay = 0.3
                emu.interaction_ack_timeout = 3.0
                inter = await emu.slash_command("search", {"query": "gone"})
                emu.expire_interaction(inter)
                error = await bot.next_event("error")
                assert isinstance(error.original, discord.NotFound) and error.original.code == 10062
                # A component discord.py has no view for: answer it by hand, wrongly then twice.
                async with aiohttp.ClientSession() as http:
                    button = {"type": 2, "style": 1, "label": "?", "custom_id": "orphan"}
                    body = {"content": "orphan", "components": [{"type": 1, "components": [button]}]}
                    url = f"{emu.api_base}/channels/{emu.channel_id}/messages"
                    async with http.post(url, json=body, headers={"Authorization": f"Bot {TOKEN}"}) as resp:
                        message = await resp.json()
                    click = await emu.button_click(message, "orphan")
                    url = f"{emu.api_base}/interactions/{click['id']}/{click['token']}/callback"
                    async with http.post(url, json={"type": 8, "data": {"choices": []}}) as resp:
                        assert resp.status == 400 and (await resp.json())["code"] == 50035
                    async with http.post(url, json={"type": 6}) as resp:
                        assert resp.status == 204
                    async with http.post(url, json={"type": 6}) as resp:
                        assert resp.status == 400 and (await resp.json())["code"] == 40060
                assert len(emu.protocol_errors) == 2
                assert "callback type 8 is not valid" in emu.protocol_errors[0]
                assert "acknowledged twice" in emu.protocol_errors[1]
                emu.protocol_errors.clear()
            emu.assert_clean()

    run(main)


def test_auto_sharded_client_uses_gateway_bot() -> None:
    """AutoShardedClient asks GET /gateway/bot for the URL and identifies with a shard; READY echoes it."""

    async def main() -> None:
        async with DiscordEmulator(token=TOKEN) as emu:
            # DEFAULT_GATEWAY is left unpatched here: the URL must come from /gateway/bot.
            old_base = Route.BASE
            Route.BASE = emu.api_base
            client = discord.AutoShardedClient(intents=discord.Intents.none(), guild_ready_timeout=0.2)
            ready = asyncio.Event()
            client.event(_set_on_ready(ready))
            task = asyncio.create_task(client.start(TOKEN))
            try:
                await asyncio.wait_for(ready.wait(), 10)
                assert emu.requests_matching("GET", r"^/gateway/bot$")
                assert emu.identify_payloads[0]["shard"] == [0, 1]
                ready_frame = next(f for f in emu.gateway.frames if f.t == "READY")
                assert ready_frame.d["shard"] == [0, 1]
                assert client.get_guild(emu.guild_id) is not None
            finally:
                Route.BASE = old_base
                await client.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 5)
            emu.assert_clean()

    run(main)


def _set_on_ready(event: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """Return an on_ready handler that sets an event."""

    async def on_ready() -> None:
        event.set()

    return on_ready
