"""The emulated Discord gateway: a websocket speaking v10 JSON with optional zlib-stream compression."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .payloads import PRIVILEGED_INTENTS
from .records import GatewayFrame

if TYPE_CHECKING:
    from .server import DiscordEmulator

log = logging.getLogger(__name__)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
OP_REQUEST_SOUNDBOARD_SOUNDS = 31

CLOSE_UNKNOWN_OPCODE = 4001
CLOSE_DECODE_ERROR = 4002
CLOSE_NOT_AUTHENTICATED = 4003
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_INVALID_API_VERSION = 4012
CLOSE_INVALID_INTENTS = 4013
CLOSE_DISALLOWED_INTENTS = 4014

TRACE = ['["gateway-prd-emulator-0",{"micros":0}]']


def _zstd_stream() -> Callable[[bytes], bytes]:
    """Return a per-connection zstd-stream compressor (zstandard, or Python 3.14's compression.zstd)."""
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        from compression.zstd import ZstdCompressor  # type: ignore[import-not-found]

        compressor = ZstdCompressor()
        return lambda raw: compressor.compress(raw, mode=ZstdCompressor.FLUSH_BLOCK)
    obj = zstandard.ZstdCompressor().compressobj()
    return lambda raw: obj.compress(raw) + obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


@dataclass
class GatewaySession:
    """One identified gateway session: its sequence, event log (for RESUME) and live connection."""

    session_id: str
    intents: int
    shard: list[int] | None
    identify: dict[str, Any]
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    resumable: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class GatewayConnection:
    """One websocket connection from the bot."""

    def __init__(
        self,
        number: int,
        request: web.Request,
        ws: web.WebSocketResponse,
        compress: str | None,
        gateway: Gateway,
    ) -> None:
        self.number = number
        self.request = request
        self.ws = ws
        self.compress = compress
        self.gateway = gateway
        self.session: GatewaySession | None = None
        self.identified = False
        self.closed_by_emulator = False
        self.finished = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Callable[[bytes], bytes] | None = _zstd_stream() if compress == "zstd-stream" else None

    @property
    def closed(self) -> bool:
        """Return whether the websocket is closed or closing."""
        return self.ws.closed or self.finished.is_set()

    def _encode(self, text: str) -> bytes | str:
        """Compress one payload for the transport, if compression was negotiated."""
        raw = text.encode()
        if self._zlib is not None:
            return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if self._zstd is not None:
            return self._zstd(raw)
        return text

    async def send(self, payload: dict[str, Any]) -> bool:
        """Send one payload; return False if the connection is gone."""
        async with self._send_lock:
            if self.closed:
                return False
            self.gateway.record("sent", payload, self.number)
            data = self._encode(json.dumps(payload, separators=(",", ":")))
            try:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("gateway connection %s: send failed: %s", self.number, exc)
                return False
            if payload.get("op") == OP_DISPATCH:
                self.gateway.emu._on_dispatch_sent(payload["t"], payload["d"])
            return True

    async def close(self, code: int, message: str = "") -> None:
        """Close the websocket with a close code."""
        self.closed_by_emulator = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=message.encode())

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.closed_by_emulator = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class Gateway:
    """Gateway state shared by all connections: sessions, heartbeats and recorded frames."""

    def __init__(self, emu: DiscordEmulator, heartbeat_interval_ms: int) -> None:
        self.emu = emu
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, GatewaySession] = {}
        self.session: GatewaySession | None = None
        self.connections: list[GatewayConnection] = []
        self.frames: list[GatewayFrame] = []
        self.heartbeats: list[float] = []
        self.identifies: list[dict[str, Any]] = []
        self.presence_updates: list[dict[str, Any]] = []
        self.resumes = 0
        self.invalid_sessions_sent = 0
        self.hello_gate = asyncio.Event()
        self.hello_gate.set()

    # -- recording ------------------------------------------------------------------------------

    def record(self, direction: str, payload: dict[str, Any], connection: int) -> None:
        """Record one frame, with tokens redacted."""
        d = payload.get("d")
        if payload.get("op") in (OP_IDENTIFY, OP_RESUME) and isinstance(d, dict) and "token" in d:
            d = {**d, "token": "<redacted>"}
        self.frames.append(
            GatewayFrame(
                direction,
                payload.get("op"),
                payload.get("t"),
                payload.get("s"),
                d,
                time.monotonic(),
                connection,
            )
        )

    @property
    def open_connection(self) -> GatewayConnection | None:
        """Return the live connection of the current session, if any."""
        if (
            self.session is not None
            and self.session.connection is not None
            and not self.session.connection.closed
        ):
            return self.session.connection
        return None

    # -- websocket handler ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one gateway websocket connection."""
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        compress = request.query.get("compress") or None
        conn = GatewayConnection(len(self.connections) + 1, request, ws, compress if compress else None, self)
        self.connections.append(conn)
        log.debug("gateway connection %s opened (%s)", conn.number, request.query_string)
        self.emu._notify()
        try:
            if request.query.get("v") not in (None, "10"):
                await conn.close(CLOSE_INVALID_API_VERSION, "Invalid API version")
                return ws
            if request.query.get("encoding", "json") != "json":
                self.emu._protocol_error("gateway: only encoding=json is emulated")
                await conn.close(CLOSE_DECODE_ERROR, "Decode error")
                return ws
            if compress not in (None, "zlib-stream", "zstd-stream"):
                await conn.close(CLOSE_DECODE_ERROR, "Decode error")
                return ws
            await self.hello_gate.wait()
            await conn.send(
                {
                    "op": OP_HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": TRACE},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                raw = msg.data if msg.type is WSMsgType.TEXT else msg.data.decode("utf-8", "replace")
                try:
                    payload = json.loads(raw)
                except ValueError:
                    self.emu._protocol_error(f"gateway: undecodable frame {raw[:80]!r}")
                    await conn.close(CLOSE_DECODE_ERROR, "Decode error")
                    break
                if not isinstance(payload, dict):
                    await conn.close(CLOSE_DECODE_ERROR, "Decode error")
                    break
                self.record("received", payload, conn.number)
                await self._on_payload(conn, payload)
                if conn.closed:
                    break
        finally:
            conn.finished.set()
            await self._on_closed(conn)
        return ws

    async def _on_closed(self, conn: GatewayConnection) -> None:
        """Detach a closed connection from its session."""
        session = conn.session
        code = conn.ws.close_code
        log.debug(
            "gateway connection %s closed (code %s, by emulator: %s)",
            conn.number,
            code,
            conn.closed_by_emulator,
        )
        if session is not None:
            async with session.lock:
                if session.connection is conn:
                    session.connection = None
                # A client closing with 1000/1001 ends its session, as on Discord.
                if not conn.closed_by_emulator and code in (1000, 1001):
                    session.resumable = False
        self.emu._notify()

    async def _on_payload(self, conn: GatewayConnection, payload: dict[str, Any]) -> None:
        """Handle one payload from the bot."""
        op = payload.get("op")
        d = payload.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeats.append(time.monotonic())
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            self.emu._notify()
        elif op == OP_IDENTIFY:
            await self._identify(conn, d if isinstance(d, dict) else {})
        elif op == OP_RESUME:
            await self._resume(conn, d if isinstance(d, dict) else {})
        elif not conn.identified:
            self.emu._protocol_error(f"gateway: op {op} sent before IDENTIFY/RESUME")
            await conn.close(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")
        elif op == OP_PRESENCE_UPDATE:
            self.presence_updates.append(d)
        elif op == OP_REQUEST_GUILD_MEMBERS:
            await self._request_members(conn, d if isinstance(d, dict) else {})
        elif op in (OP_VOICE_STATE_UPDATE, OP_REQUEST_SOUNDBOARD_SOUNDS):
            log.debug("gateway: ignoring op %s", op)
        else:
            self.emu._protocol_error(f"gateway: unknown opcode {op!r}")
            await conn.close(CLOSE_UNKNOWN_OPCODE, "Unknown opcode.")

    async def _identify(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        """Answer IDENTIFY with READY and one GUILD_CREATE per guild."""
        if conn.identified:
            self.emu._protocol_error("gateway: IDENTIFY sent twice on one connection")
            await conn.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if not self.emu._token_ok(d.get("token")):
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        properties = d.get("properties")
        intents = d.get("intents")
        if not isinstance(properties, dict) or not {"os", "browser", "device"} <= set(properties):
            self.emu._protocol_error(f"gateway: IDENTIFY properties invalid: {properties!r}")
            await conn.close(CLOSE_DECODE_ERROR, "Decode error")
            return
        if not isinstance(intents, int) or intents < 0 or intents >= 1 << 26:
            self.emu._protocol_error(f"gateway: IDENTIFY intents invalid: {intents!r}")
            await conn.close(CLOSE_INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.emu.privileged_intents:
            await conn.close(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        shard = d.get("shard")
        redacted = {**d, "token": "<redacted>"}
        self.identifies.append(redacted)
        session = GatewaySession(
            secrets.token_hex(16), intents, shard if isinstance(shard, list) else None, redacted
        )
        self.sessions[session.session_id] = session
        self.session = session
        conn.session = session
        conn.identified = True
        async with session.lock:
            session.connection = conn
            await self._dispatch_locked(session, "READY", self.emu._ready_payload(session))
            for guild in self.emu.guilds.values():
                await self._dispatch_locked(session, "GUILD_CREATE", guild.guild_create())
        log.debug("gateway: session %s identified with intents %s", session.session_id, intents)
        self.emu._ready.set()
        self.emu._notify()

    async def _resume(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        """Answer RESUME: replay missed events then RESUMED, or INVALID_SESSION."""
        session = self.sessions.get(str(d.get("session_id")))
        seq = d.get("seq")
        if (
            session is None
            or not session.resumable
            or not self.emu._token_ok(d.get("token"))
            or not isinstance(seq, int)
            or seq > session.seq
        ):
            log.debug("gateway: RESUME refused (session %s)", d.get("session_id"))
            self.invalid_sessions_sent += 1
            await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            self.emu._notify()
            return
        conn.session = session
        conn.identified = True
        async with session.lock:
            old = session.connection
            session.connection = conn
            if old is not None and old is not conn and not old.closed:
                await old.close(4000, "Session resumed elsewhere")
            for event in session.events:
                if event["s"] > seq and not await conn.send(event):
                    return
            session.seq += 1
            await conn.send({"op": OP_DISPATCH, "t": "RESUMED", "s": session.seq, "d": {"_trace": TRACE}})
        self.session = session
        self.resumes += 1
        log.debug("gateway: session %s resumed from seq %s", session.session_id, seq)
        self.emu._notify()

    async def _request_members(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        """Answer REQUEST_GUILD_MEMBERS with one GUILD_MEMBERS_CHUNK per guild."""
        guild_ids = d.get("guild_id")
        for gid in guild_ids if isinstance(guild_ids, list) else [guild_ids]:
            guild = self.emu.guilds.get(int(gid)) if str(gid).isdigit() else None
            if guild is None:
                continue
            members = list(guild.members.values())
            if d.get("user_ids"):
                wanted = {str(u) for u in d["user_ids"]}
                members = [m for m in members if m["user"]["id"] in wanted]
            elif d.get("query"):
                members = [m for m in members if m["user"]["username"].startswith(d["query"])]
            chunk: dict[str, Any] = {
                "guild_id": str(guild.id),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if d.get("presences"):
                chunk["presences"] = []
            if d.get("nonce"):
                chunk["nonce"] = d["nonce"]
            if conn.session is not None:
                await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # -- API used by the emulator ---------------------------------------------------------------

    async def _dispatch_locked(self, session: GatewaySession, event: str, data: dict[str, Any]) -> int:
        """Store and (if connected) send one dispatch; the caller holds the session lock."""
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(payload)
        conn = session.connection
        if conn is not None and not conn.closed:
            await conn.send(payload)
        return session.seq

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Dispatch an event on the current session (buffered while the bot is disconnected)."""
        session = self.session
        if session is None:
            raise RuntimeError("no gateway session: the bot has not identified yet")
        async with session.lock:
            return await self._dispatch_locked(session, event, data)

    async def drop(self, code: int | None, *, resumable: bool, hold: bool, timeout: float) -> None:
        """Close the live connection (code None: drop TCP, no close frame); hold: delay HELLO to new ones."""
        conn = self.open_connection
        if conn is None:
            raise RuntimeError("no open gateway connection to drop")
        session = self.session
        assert session is not None
        async with session.lock:
            session.connection = None
            if not resumable:
                session.resumable = False
        if hold:
            self.hello_gate.clear()
        log.debug("gateway: dropping connection %s with code %s", conn.number, code)
        if code is None:
            conn.abort()
        else:
            await conn.close(code, "emulator drop")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.finished.wait(), timeout)

    async def send_op(self, op: int, d: Any) -> None:
        """Send a non-dispatch opcode (e.g. RECONNECT, INVALID_SESSION) on the live connection."""
        conn = self.open_connection
        if conn is None:
            raise RuntimeError("no open gateway connection")
        if op == OP_INVALID_SESSION and self.session is not None and not d:
            self.session.resumable = False
        await conn.send({"op": op, "d": d, "s": None, "t": None})

    async def close_all(self) -> None:
        """Close every open connection (emulator shutdown)."""
        self.hello_gate.set()
        for conn in self.connections:
            if not conn.closed:
                await conn.close(1001, "emulator shutting down")
