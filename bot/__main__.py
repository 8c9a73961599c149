"""Composition root: settings -> logging -> encoder, store, service -> bot -> start. Nothing runs at import."""

from __future__ import annotations

import sys

from .config import Settings


def run_bot(settings: Settings) -> int:
    """Load the engine, then connect to Discord until stopped; returns the exit code."""
    from .discord.runner import run

    return run(settings)


if __name__ == "__main__":
    from .cli import main

    sys.exit(main())
