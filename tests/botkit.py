"""Drive the real bot process against the Discord emulator: the emulator's loop runs in a background thread."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.clirun import ROOT, offline_env
from tests.discord_emulator import DiscordEmulator

T = TypeVar("T")
# Looks like a real token (three base64 parts) so that a leak would be easy to grep for.
FAKE_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GxYzAb.fake_token_for_tests_only_0123456789abcd"


class EmulatorThread:
    """A DiscordEmulator living on its own event loop thread; `call` runs a coroutine there and waits."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="discord-emulator", daemon=True)
        self.thread.start()
        self.emu: DiscordEmulator = self.call(self._start(options))

    async def _start(self, options: dict[str, Any]) -> DiscordEmulator:
        return await DiscordEmulator(token=FAKE_TOKEN, **options).start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the emulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the emulator and its loop."""
        self.call(self.emu.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class BotProcess:
    """`python -m bot run` as a child process pointed at the emulator, logging to a file."""

    def __init__(self, emu: DiscordEmulator, store: Path, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        settings = {
            "DISCORD_TOKEN": FAKE_TOKEN,
            "DISCORD_API_BASE": emu.api_base,
            "DISCORD_GUILD_ID": str(emu.guild_id),
            "CLIPBOT_STORE": str(store),
            "CLIPBOT_COOLDOWN_SECONDS": "0",
            "CLIPBOT_LOG_LEVEL": "DEBUG",
        }
        settings.update(env)
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"], cwd=ROOT, env=offline_env(**settings),
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        """Everything the bot printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float = 120.0) -> None:
        """Block until `text` appears in the log (or the process dies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if not self.alive():
                raise AssertionError(f"bot exited with {self.process.returncode}:\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the bot's log after {timeout}s:\n{self.log[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._log.close()
        return code


def attachment_labels(message: dict[str, Any]) -> list[str]:
    """The label part of each result picture's filename (`01-red_circle-train-3.jpg` -> `red_circle`)."""
    labels = []
    for attachment in message.get("attachments", []):
        stem = attachment["filename"].rsplit(".", 1)[0]
        labels.append(stem.split("-", 1)[1].rsplit("-train-", 1)[0])
    return labels


def has_traceback(log: str) -> bool:
    """Whether a log shows a Python traceback."""
    return "Traceback (most recent call last)" in log



def inject(directory: Path, code: str) -> dict[str, str]:
    """Environment that makes the bot process run `code` at start-up (a `sitecustomize` module): test-only faults."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(code, encoding="utf-8")
    return {"PYTHONPATH": str(directory)}


# Faults injected into the bot process by the hardening tests; production code has no hooks for them.
FAULTS = '''
import os, sys, time

def _audit(event, args):
    # Report every file opened for writing, so tests can prove uploads never touch the disk.
    if event == "open" and isinstance(args[0], str) and isinstance(args[1], str) and any(m in args[1] for m in "wax+"):
        os.write(2, ("AUDIT-WRITE " + args[0] + "\\n").encode())

sys.addaudithook(_audit)

def _patch():
    import bot.encoder as encoder
    original = encoder.ClipEncoder.encode_texts

    def encode_texts(self, texts, *args, **kwargs):
        if any("explode" in t for t in texts):
            raise RuntimeError("injected encoder failure")
        if any("slowly" in t for t in texts):
            time.sleep(3)
        return original(self, texts, *args, **kwargs)

    encoder.ClipEncoder.encode_texts = encode_texts

import importlib.abc, importlib.machinery

class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bot.encoder":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch()

        loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Hook())
'''
