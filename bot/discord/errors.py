"""The one place where errors become words for the user: ephemeral, specific, and never a traceback."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from ..errors import ClipbotError

log = logging.getLogger(__name__)

GENERIC = "Something went wrong on clipbot's side; it has been logged. Please try again."
# Discord error codes for an interaction whose token is no longer valid (15 minutes, or already answered).
EXPIRED_CODES = {10062, 10015, 40060}


def unwrap(error: BaseException) -> BaseException:
    """The underlying exception of discord.py's command wrappers."""
    while isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    original = getattr(error, "original", None)
    return original if isinstance(original, BaseException) else error


def user_message(error: BaseException) -> str | None:
    """What to tell the user, or None when the interaction cannot be answered any more."""
    if isinstance(error, ClipbotError):
        return str(error)
    if isinstance(error, app_commands.CheckFailure):
        return "You cannot use this command here."
    if isinstance(error, discord.NotFound) and error.code in EXPIRED_CODES:
        return None
    return GENERIC


async def report_error(interaction: discord.Interaction, error: BaseException, command: str) -> None:
    """Log `error` once and tell the user what happened, ephemerally, if the interaction still allows it."""
    error = unwrap(error)
    if isinstance(error, (ClipbotError, app_commands.CheckFailure)):
        log.info("%s refused for user %s: %s", command, interaction.user.id, error)
    elif isinstance(error, discord.NotFound) and error.code in EXPIRED_CODES:
        log.warning("%s: the interaction expired before clipbot could answer (%s)", command, error.code)
        return
    else:
        log.error("%s failed", command, exc_info=(type(error), error, error.__traceback__))
    message = user_message(error)
    if message is None:
        return
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
            return
        if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            # The public "thinking…" placeholder would otherwise stay forever; replace it by a private note.
            await interaction.delete_original_response()
        await interaction.followup.send(message, ephemeral=True)
    except discord.HTTPException as http_error:
        log.warning("could not tell the user about the error: %s", http_error)
