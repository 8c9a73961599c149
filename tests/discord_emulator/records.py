"""Dataclasses the emulator records: HTTP requests, injected faults, interaction state, gateway frames."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    data: bytes
    content_type: str


@dataclass
class RecordedRequest:
    """One HTTP request the bot sent to the emulator (the Authorization value is never stored)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, bytes, str]]
    headers: dict[str, str]
    time: float
    bot_auth: bool = False
    api: bool = True
    template: str | None = None
    content_type: str | None = None
    status: int | None = None
    response: Any = None

    @property
    def done(self) -> bool:
        """Return whether the emulator has answered the request."""
        return self.status is not None


@dataclass
class FaultRule:
    """An injected fault: answer the next matching requests with a 429 or an error."""

    kind: str
    method: str
    pattern: re.Pattern[str]
    remaining: int
    status: int = 500
    retry_after: float = 0.5
    is_global: bool = False
    body: Any = None

    def matches(self, method: str, path: str) -> bool:
        """Return whether the rule applies to this request."""
        return self.remaining > 0 and self.method in ("*", method) and self.pattern.search(path) is not None


@dataclass
class InteractionState:
    """What the emulator knows about one interaction it dispatched."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    channel_id: int
    guild_id: int | None
    source_message_id: int | None = None
    dispatched_at: float = 0.0
    delivered_at: float | None = None
    acknowledged: bool = False
    callback_type: int | None = None
    callback: dict[str, Any] | None = None
    callback_time: float | None = None
    original_message_id: int | None = None
    original_loading: bool = False
    followup_message_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    expired: bool = False


@dataclass
class GatewayFrame:
    """One gateway payload sent or received (IDENTIFY/RESUME tokens redacted)."""

    direction: str
    op: int | None
    t: str | None
    s: int | None
    d: Any
    time: float
    connection: int
