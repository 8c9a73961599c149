"""Logging set-up: one format for the CLI and the bot, and a filter that scrubs secrets from every record."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replace any known secret in a record's message and arguments by asterisks."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        scrubbed = self._scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "**********")
        return text


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = ()) -> None:
    """Send logs to stderr at `level`, with secrets scrubbed; quiet the chattiest libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # discord.webhook logs interaction URLs, whose tokens are credentials for 15 minutes.
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub", "PIL", "discord.gateway",
                  "discord.webhook", "faiss.loader", "pymilvus"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
