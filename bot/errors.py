"""Domain errors: each carries the one sentence a user or admin should read."""

from __future__ import annotations


class ClipbotError(Exception):
    """Base of every error clipbot expects; `str(error)` is safe to show to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ClipbotError):
    """A setting is missing or malformed."""


class StoreError(ClipbotError):
    """The embedding store is missing, incomplete, corrupt or built for another model."""


class ModelMismatchError(StoreError):
    """The store was built with a different model than the one loaded."""


class ModelLoadError(ClipbotError):
    """The CLIP checkpoint could not be loaded."""


class InvalidQueryError(ClipbotError):
    """A text query, count or label that cannot be searched."""


class InvalidImageError(ClipbotError):
    """An upload that is not a picture clipbot can read."""


class ImageTooLargeError(InvalidImageError):
    """A picture over the byte or pixel limit (decompression bombs included)."""


class UnknownItemError(InvalidQueryError):
    """An item id or index that the store does not have."""


class EncoderError(ClipbotError):
    """The encoder failed while embedding a batch."""


class BusyError(ClipbotError):
    """Too many requests are queued; try again shortly."""


class BuildError(ClipbotError):
    """A store build cannot start or continue."""
