"""Command-line verbs for scale-out (`export-milvus`, `merge`); filled in with the Milvus back end."""

from __future__ import annotations


def register(commands, settings) -> None:
    """Add the scale-out sub-commands to the parser."""
