"""Admission control for commands: a per-user cooldown and a cap on requests in flight."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import BusyError, ClipbotError


class CooldownError(ClipbotError):
    """The same person asked again too soon."""


class Admission:
    """Decides whether a command may start now; counts what is in flight."""

    def __init__(self, *, cooldown_seconds: float, max_in_flight: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown_seconds
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._last_seen: dict[int, float] = {}
        self._clock = clock

    def check(self, user_id: int) -> None:
        """Raise CooldownError or BusyError if this user's command must not start now."""
        now = self._clock()
        last = self._last_seen.get(user_id)
        if self.cooldown and last is not None and now - last < self.cooldown:
            wait = self.cooldown - (now - last)
            raise CooldownError(f"Slow down a little: try again in {wait:.1f} s.")
        if self.in_flight >= self.max_in_flight:
            raise BusyError("clipbot is very busy right now; please try again in a few seconds.")
        self._last_seen[user_id] = now
        if len(self._last_seen) > 10_000:  # forget idle users so the table stays small
            cutoff = now - max(self.cooldown, 1.0)
            self._last_seen = {u: t for u, t in self._last_seen.items() if t >= cutoff}

    def __enter__(self) -> Admission:
        self.in_flight += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self.in_flight -= 1
