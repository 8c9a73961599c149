"""Settings from the environment and `.env`; the Discord token is a secret that never prints."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError

DEFAULT_STORE = "stores/imagenette"


class Secret:
    """A string that hides itself from repr, str, logs and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Every setting clipbot reads; `.env.example` documents each."""

    discord_token: Secret = field(default_factory=lambda: Secret(""))
    discord_guild_id: int | None = None
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    model: str | None = None  # None: the store's own model (or openai/clip-vit-base-patch32 for a build)
    store: str = DEFAULT_STORE
    device: str | None = None
    precision: str = "auto"
    backend: str = "exact"
    milvus_uri: str | None = None
    milvus_token: Secret = field(default_factory=lambda: Secret(""))
    verify: str = "full"
    log_level: str = "INFO"
    max_concurrency: int = 8
    queue_limit: int = 64
    cooldown_seconds: float = 2.0
    batch_wait_ms: float = 5.0
    max_batch: int = 32
    worker_nice: int = 10
    health_port: int | None = None
    shutdown_grace_seconds: float = 20.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: str | Path | None = ".env") -> Settings:
        """Read settings from `environ` (default os.environ) over the values in a `.env` file."""
        values: dict[str, str] = {}
        if dotenv and Path(dotenv).is_file():
            from dotenv import dotenv_values

            values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return cls(
            discord_token=Secret(values.get("DISCORD_TOKEN", "").strip()),
            discord_guild_id=_optional_int(values, "DISCORD_GUILD_ID"),
            discord_api_base=_optional(values, "DISCORD_API_BASE", strip_slash=True),
            discord_gateway_url=_optional(values, "DISCORD_GATEWAY_URL"),
            model=_optional(values, "CLIPBOT_MODEL"),
            store=_optional(values, "CLIPBOT_STORE") or cls.store,
            device=_optional(values, "CLIPBOT_DEVICE"),
            precision=_choice(values, "CLIPBOT_PRECISION", ("auto", "fp32", "fp16", "bf16"), cls.precision),
            backend=_choice(values, "CLIPBOT_BACKEND", ("exact", "milvus"), cls.backend),
            milvus_uri=_optional(values, "CLIPBOT_MILVUS_URI"),
            milvus_token=Secret(values.get("CLIPBOT_MILVUS_TOKEN", "").strip()),
            verify=_choice(values, "CLIPBOT_VERIFY", ("full", "quick"), cls.verify),
            log_level=(_optional(values, "CLIPBOT_LOG_LEVEL") or cls.log_level).upper(),
            max_concurrency=_int(values, "CLIPBOT_MAX_CONCURRENCY", cls.max_concurrency, minimum=1),
            queue_limit=_int(values, "CLIPBOT_QUEUE_LIMIT", cls.queue_limit, minimum=1),
            cooldown_seconds=_float(values, "CLIPBOT_COOLDOWN_SECONDS", cls.cooldown_seconds),
            batch_wait_ms=_float(values, "CLIPBOT_BATCH_WAIT_MS", cls.batch_wait_ms),
            max_batch=_int(values, "CLIPBOT_MAX_BATCH", cls.max_batch, minimum=1),
            worker_nice=_int(values, "CLIPBOT_WORKER_NICE", cls.worker_nice),
            health_port=_optional_int(values, "CLIPBOT_HEALTH_PORT"),
            shutdown_grace_seconds=_float(values, "CLIPBOT_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds),
        )

    def require_token(self) -> str:
        """The Discord token, or a ConfigError that says where to put it."""
        token = self.discord_token.reveal()
        if not token:
            raise ConfigError("DISCORD_TOKEN is not set; put your bot token in .env (see .env.example).")
        if any(ch.isspace() for ch in token):
            raise ConfigError("DISCORD_TOKEN contains whitespace; paste the token alone, without quotes or 'Bot '.")
        return token

    def describe(self) -> dict[str, object]:
        """Settings safe to log: secrets stay masked."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _optional(values: Mapping[str, str], key: str, *, strip_slash: bool = False) -> str | None:
    value = values.get(key, "").strip()
    if strip_slash:
        value = value.rstrip("/")
    return value or None


def _optional_int(values: Mapping[str, str], key: str) -> int | None:
    value = _optional(values, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number (got {value!r}).") from None


def _int(values: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    value = _optional_int(values, key)
    if value is None:
        return default
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum} (got {value}).")
    return value


def _float(values: Mapping[str, str], key: str, default: float) -> float:
    value = _optional(values, key)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number (got {value!r}).") from None
    if number < 0:
        raise ConfigError(f"{key} cannot be negative (got {value}).")
    return number


def _choice(values: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = (_optional(values, key) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)} (got {value!r}).")
    return value
