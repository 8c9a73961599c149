"""Units of the Discord adapter: replies, views, admission, error words, and the loop staying free."""

from __future__ import annotations

import asyncio
import io
import time
from types import SimpleNamespace

import discord
import pytest
from PIL import Image

from bot.config import Settings
from bot.discord.errors import GENERIC, user_message
from bot.discord.limits import Admission, CooldownError
from bot.discord.replies import (
    MAX_CONTENT,
    find_reply,
    picture_filename,
    random_reply,
    safe_echo,
    similar_reply,
)
from bot.discord.views import ResultsView
from bot.errors import BusyError, InvalidImageError
from bot.search import CaptionHit, FindResult, ImageHit, SimilarResult


def jpeg(colour=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


HITS = [ImageHit(rank=i + 1, score=0.5 - i / 100, id=f"train-{i}", label="red_circle", index=i) for i in range(3)]


def thumbnail(index: int) -> bytes:
    return jpeg((index * 40, 0, 0))


def test_find_reply_lists_rank_score_label_and_attaches_in_order() -> None:
    reply = find_reply(FindResult(query="a red circle", images=HITS), thumbnail)
    assert reply.content.splitlines()[0] == "**Pictures for** “a red circle”"
    assert reply.content.splitlines()[1] == "`#1` **red circle** · 0.500"
    assert [name for name, _ in reply.pictures] == ["01-red_circle-train-0.jpg", "02-red_circle-train-1.jpg",
                                                   "03-red_circle-train-2.jpg"]
    assert [data for _, data in reply.pictures] == [thumbnail(0), thumbnail(1), thumbnail(2)]
    assert [f.filename for f in reply.files()] == [name for name, _ in reply.pictures]


def test_empty_page_says_so() -> None:
    reply = find_reply(FindResult(query="x", images=[], offset=40), thumbnail)
    assert "No more pictures" in reply.content and reply.pictures == []


def test_user_text_is_made_inert() -> None:
    echoed = safe_echo("@everyone look **here** <@1234> _now_\nsecond line")
    assert "@everyone" not in echoed and "**here**" not in echoed and "\n" not in echoed
    assert len(safe_echo("x" * 5000)) == 200
    assert len(find_reply(FindResult(query="y" * 3000, images=HITS), thumbnail).content) <= MAX_CONTENT


def test_similar_and_random_replies() -> None:
    result = SimilarResult(captions=[CaptionHit(1, 0.31, "a red circle"), CaptionHit(2, 0.2, "a *star*")],
                           images=HITS[:2])
    content = similar_reply(result, thumbnail).content
    assert "**It looks like**\n`1.` a red circle — 0.310\n`2.` a \\*star\\* — 0.200" in content
    source = ImageHit(rank=0, score=1.0, id="train-7", label="blue_square", index=7)
    random = random_reply(SimilarResult(captions=result.captions, images=[], source=source), thumbnail)
    assert random.content.startswith("**A random picture** · `train-7` · **blue square**")
    assert random.pictures[0][1] == thumbnail(7)


def test_filenames_are_safe_for_any_label() -> None:
    hit = ImageHit(rank=10, score=0.1, id="train/../x y", label="chain saw/../..", index=0)
    assert picture_filename(hit) == "10-chain_saw-train-x-y.jpg"


def test_results_view_has_pivots_and_an_owner_only_more_button() -> None:
    async def build() -> ResultsView:
        async def noop(interaction):
            return None

        return ResultsView.for_results(42, HITS, lambda hit: noop, more=noop, timeout=5)

    view = asyncio.run(build())
    labels = [(item.label, item.row, getattr(item, "owner_only", None)) for item in view.children]
    assert labels == [("Similar to #1", 0, False), ("Similar to #2", 0, False), ("Similar to #3", 0, False),
                      ("More", 2, True)]


def test_more_button_refuses_strangers_privately() -> None:
    sent: list[tuple[str, bool]] = []
    ran: list[int] = []

    async def scenario() -> None:
        async def action(interaction):
            ran.append(interaction.user.id)

        view = ResultsView.for_results(42, [], lambda hit: action, more=action, timeout=5)
        more = view.children[0]

        async def send_message(text, ephemeral=False):
            sent.append((text, ephemeral))

        stranger = SimpleNamespace(user=SimpleNamespace(id=7), response=SimpleNamespace(send_message=send_message))
        owner = SimpleNamespace(user=SimpleNamespace(id=42), response=SimpleNamespace(send_message=send_message))
        await more.callback(stranger)
        await more.callback(owner)

    asyncio.run(scenario())
    assert ran == [42]
    assert sent == [("These buttons page the results of whoever asked; run the command yourself to explore.", True)]


def test_timed_out_view_disables_its_buttons() -> None:
    edits: list[ResultsView] = []

    async def scenario() -> ResultsView:
        async def noop(interaction):
            return None

        view = ResultsView.for_results(1, HITS[:1], lambda hit: noop, more=noop, timeout=5)

        async def edit(view):
            edits.append(view)

        view.message = SimpleNamespace(edit=edit)
        await view.on_timeout()  # discord.py calls this when the timeout it schedules on sending expires
        return view

    view = asyncio.run(scenario())
    assert edits == [view] and all(item.disabled for item in view.children)


def test_admission_cooldown_and_capacity() -> None:
    now = [100.0]
    admission = Admission(cooldown_seconds=2.0, max_in_flight=1, clock=lambda: now[0])
    admission.check(1)
    with pytest.raises(CooldownError, match="try again in 2.0 s"):
        admission.check(1)
    admission.check(2)
    with admission, pytest.raises(BusyError):
        admission.check(3)
    now[0] += 2.5
    admission.check(1)


def test_error_words() -> None:
    assert user_message(InvalidImageError("not a picture")) == "not a picture"
    assert user_message(RuntimeError("boom")) == GENERIC
    response = SimpleNamespace(status=404, reason="Not Found")
    expired = discord.NotFound(response, {"code": 10062, "message": "Unknown interaction"})
    assert user_message(expired) is None


def test_serve_runs_blocking_work_off_the_event_loop() -> None:
    from bot.discord.client import ClipBot

    engine = SimpleNamespace(store=[], encoder=None, index=None, service=None)
    ticks: list[float] = []

    async def scenario() -> str:
        bot = ClipBot(Settings.from_env({}, dotenv=None), engine)

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = len(ticks)
        result = await bot.serve("find", lambda: time.sleep(0.5) or "done")
        during = len(ticks) - started
        task.cancel()
        bot.executor.shutdown()
        assert during > 5, during  # the loop kept running while the blocking call slept in the executor
        assert bot.metrics.summary("find").count == 1
        return result

    assert asyncio.run(scenario()) == "done"
