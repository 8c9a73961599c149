"""Run the real `python -m bot` command line in a subprocess, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def offline_env(**extra: str) -> dict[str, str]:
    """The current environment, offline, without any clipbot or Discord settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPBOT_", "DISCORD_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def clipbot(*args: str, cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`python -m bot ARGS`, captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd or ROOT, env=offline_env(**env), capture_output=True,
        text=True, timeout=timeout,
    )
