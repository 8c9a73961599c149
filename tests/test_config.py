"""Settings: environment over .env, validation with the variable's name, and a token that never prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Secret, Settings
from bot.errors import ConfigError

TOKEN = "MTA5.fake-token.value_0123456789"


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DISCORD_TOKEN={TOKEN}\nCLIPBOT_STORE=from-dotenv\nDISCORD_GUILD_ID=42\n")
    settings = Settings.from_env({"CLIPBOT_STORE": "from-env"}, dotenv=dotenv)
    assert settings.store == "from-env"
    assert settings.discord_guild_id == 42
    assert settings.require_token() == TOKEN


def test_token_never_appears_in_repr_or_describe() -> None:
    settings = Settings.from_env({"DISCORD_TOKEN": TOKEN}, dotenv=None)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.describe())
    assert repr(Secret(TOKEN)) == "Secret('**********')"


def test_missing_token_says_where_to_put_it() -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN is not set; put your bot token in .env"):
        Settings.from_env({}, dotenv=None).require_token()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("DISCORD_GUILD_ID", "abc", "DISCORD_GUILD_ID must be a whole number"),
    ("CLIPBOT_BACKEND", "faiss", "CLIPBOT_BACKEND must be one of exact, milvus"),
    ("CLIPBOT_MAX_CONCURRENCY", "0", "CLIPBOT_MAX_CONCURRENCY must be at least 1"),
    ("CLIPBOT_COOLDOWN_SECONDS", "-1", "CLIPBOT_COOLDOWN_SECONDS cannot be negative"),
    ("CLIPBOT_WORKER_NICE", "-5", "CLIPBOT_WORKER_NICE must be at least 0"),
])
def test_bad_values_name_the_variable(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({key: value}, dotenv=None)


def test_api_base_loses_its_trailing_slash() -> None:
    settings = Settings.from_env({"DISCORD_API_BASE": "http://127.0.0.1:8080/api/v10/"}, dotenv=None)
    assert settings.discord_api_base == "http://127.0.0.1:8080/api/v10"


def test_worker_nice_defaults_to_ten_and_zero_turns_it_off() -> None:
    assert Settings.from_env({}, dotenv=None).worker_nice == 10
    assert Settings.from_env({"CLIPBOT_WORKER_NICE": "0"}, dotenv=None).worker_nice == 0
