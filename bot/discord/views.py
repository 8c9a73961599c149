"""Buttons under results: "More" pages in place, "Similar to #n" pivots, "Another" rolls /random again."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import discord

from ..search import ImageHit

log = logging.getLogger(__name__)

# Discord allows 5 buttons per row and 5 rows; results use two rows, the paging button its own.
BUTTONS_PER_ROW = 5
VIEW_TIMEOUT_SECONDS = 600.0  # under the 15-minute life of an interaction token, so the timeout edit works

Action = Callable[[discord.Interaction], Awaitable[None]]


class ActionButton(discord.ui.Button):
    """A button that runs an action, optionally only for the person who asked."""

    def __init__(self, label: str, action: Action, *, row: int, owner_only: bool = False,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary) -> None:
        super().__init__(label=label, style=style, row=row)
        self.action = action
        self.owner_only = owner_only

    async def callback(self, interaction: discord.Interaction) -> None:
        view = self.view
        if self.owner_only and isinstance(view, ResultsView) and interaction.user.id != view.owner_id:
            await interaction.response.send_message(
                "These buttons page the results of whoever asked; run the command yourself to explore.",
                ephemeral=True,
            )
            return
        await self.action(interaction)


class ResultsView(discord.ui.View):
    """Buttons under a result message; disabled when they time out."""

    def __init__(self, owner_id: int, *, timeout: float = VIEW_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.message: discord.Message | discord.WebhookMessage | None = None

    @classmethod
    def for_results(
        cls,
        owner_id: int,
        hits: Sequence[ImageHit],
        similar: Callable[[ImageHit], Action],
        more: Action | None = None,
        *,
        timeout: float = VIEW_TIMEOUT_SECONDS,
    ) -> ResultsView:
        """"Similar to #n" for each hit and, if given, a "More" button that only the asker can press."""
        view = cls(owner_id, timeout=timeout)
        for position, hit in enumerate(hits[: 2 * BUTTONS_PER_ROW]):
            view.add_item(ActionButton(f"Similar to #{hit.rank}", similar(hit), row=position // BUTTONS_PER_ROW))
        if more is not None:
            view.add_item(ActionButton("More", more, row=2, owner_only=True, style=discord.ButtonStyle.primary))
        return view

    async def on_timeout(self) -> None:
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = True
        if self.message is None:
            return
        try:
            await self.message.edit(view=self)
        except discord.HTTPException as error:  # the message may be gone or the token expired: nothing to fix
            log.debug("could not disable timed-out buttons: %s", error)
