"""End to end: the real bot process, the real discord.py client, the loopback Discord emulator.

The emulator validates every body against Discord's OpenAPI description; with the known-answer CLIP trained by the
suite, "a red circle" must bring red circles, in the same order as the search service gives them in-process.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.engine import load_engine
from tests.botkit import FAKE_TOKEN, BotProcess, EmulatorThread, attachment_labels, has_traceback
from tests.fixtures.shapes import make_pictures

pytestmark = pytest.mark.slow
EPHEMERAL = 64


@pytest.fixture(scope="module")
def harness(shapes_store: Path, tmp_path_factory):
    emulator = EmulatorThread(heartbeat_interval_ms=1000)
    log_path = tmp_path_factory.mktemp("bot") / "bot.log"
    bot = BotProcess(emulator.emu, shapes_store, log_path, CLIPBOT_PRECISION="fp32")
    try:
        bot.wait_for_log("ready as")
        yield emulator, bot
    finally:
        code = bot.stop()
        emulator.close()
    assert code == 0, bot.log[-3000:]


@pytest.fixture(scope="module")
def engine(shapes_store: Path):
    return load_engine(shapes_store, precision="fp32")


def respond(emulator: EmulatorThread, interaction: dict, *, followups: int = 1, timeout: float = 60.0) -> dict:
    """Wait until the interaction has its answer (a message with content), and return that message."""
    emu = emulator.emu

    def answered():
        state = emu.interaction_state(interaction)
        messages = [m for m in emu.followup_messages(interaction) if m.get("content")]
        original = emu.original_message(interaction)
        if original is not None and original.get("content") and not state.original_loading:
            messages.insert(0, original)
        if state.callback_type == 4:
            return state.callback.get("data", {}) | {"flags": state.callback.get("data", {}).get("flags", 0)}
        return messages[0] if len(messages) >= followups else None

    return emulator.call(emu.wait_for(answered, timeout, "the bot's answer"), timeout + 5)


def interaction_requests(emulator: EmulatorThread, interaction: dict) -> list:
    token = interaction["token"]
    return [r for r in emulator.emu.requests if token in r.path]


def payload_of(request) -> dict:
    """The JSON of a request, or its payload_json part."""
    return request.json if isinstance(request.json, dict) else {}


def test_bot_logs_in_and_syncs_its_commands(harness) -> None:
    emulator, bot = harness
    emu = emulator.emu
    names = {c["name"] for c in emu.guild_commands[emu.guild_id]}
    assert {"find", "similar", "random", "about", "Find similar images"} <= names
    requests = [r for r in emu.requests if r.api]
    assert all(r.bot_auth for r in requests if r.template and "/webhooks/" not in r.template
               and "/interactions/" not in r.template)
    assert bot.alive()
    emu.assert_clean()


def test_find_defers_first_and_replies_with_red_circles_in_order(harness, engine) -> None:
    emulator, _bot = harness
    interaction = emulator.call(emulator.emu.slash_command("find", {"prompt": "a red circle", "count": 4}))
    message = respond(emulator, interaction)
    requests = interaction_requests(emulator, interaction)
    assert requests[0].path.endswith("/callback") and payload_of(requests[0])["type"] == 5  # deferred first
    expected = engine.service.find("a red circle", 4).images
    assert attachment_labels(message) == [hit.label for hit in expected]
    assert [a["filename"].split("-")[0] for a in message["attachments"]] == ["01", "02", "03", "04"]
    assert attachment_labels(message).count("red_circle") >= 3
    reply = next(r for r in requests if r.files)
    assert payload_of(reply)["allowed_mentions"] == {"parse": []}
    assert all(name.endswith(".jpg") and data[:3] == b"\xff\xd8\xff" for name, data, _ in reply.files)
    assert "#1" in message["content"] and "red circle" in message["content"]
    emulator.emu.assert_clean()


def test_find_with_label_filter(harness) -> None:
    emulator, _ = harness
    interaction = emulator.call(emulator.emu.slash_command(
        "find", {"prompt": "a circle", "count": 3, "label": "blue_circle"}))
    assert attachment_labels(respond(emulator, interaction)) == ["blue_circle"] * 3


def test_prompt_is_echoed_without_pinging_anyone(harness) -> None:
    emulator, _ = harness
    interaction = emulator.call(emulator.emu.slash_command(
        "find", {"prompt": "@everyone <@123456789012345678> **bold** a red circle", "count": 1}))
    message = respond(emulator, interaction)
    assert "@everyone" not in message["content"].replace("@\u200beveryone", "")
    assert "**bold**" not in message["content"]
    reply = next(r for r in interaction_requests(emulator, interaction) if r.files)
    assert payload_of(reply)["allowed_mentions"] == {"parse": []}


def test_similar_with_an_upload_names_the_shape_and_finds_its_kind(harness, engine) -> None:
    emulator, _ = harness
    picture, _name = next(p for p in make_pictures(1, seed=4242) if p[1] == "green_triangle")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    interaction = emulator.call(emulator.emu.slash_command(
        "similar", {"image": ("upload.png", buffer.getvalue()), "count": 3}))
    message = respond(emulator, interaction)
    assert payload_of(interaction_requests(emulator, interaction)[0])["type"] == 5
    expected = engine.service.similar(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), 3)
    assert attachment_labels(message) == [hit.label for hit in expected.images]
    first_caption = re.search(r"`1\.` (.+?) —", message["content"]).group(1)
    assert first_caption == "green triangle" == expected.captions[0].text


def test_more_pages_in_place_and_similar_pivots(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    interaction = emulator.call(emu.slash_command("find", {"prompt": "a yellow square", "count": 2}))
    message = respond(emulator, interaction)
    buttons = {c["label"]: c["custom_id"] for row in message["components"] for c in row["components"]}
    assert set(buttons) == {"Similar to #1", "Similar to #2", "More"}

    click = emulator.call(emu.button_click(message, buttons["More"]))
    state = emulator.call(emu.wait_for_response(click))
    assert state.callback_type == 6
    edited = emulator.call(emu.wait_for(
        lambda: (m := emu.messages.get(int(message["id"]))) and
        [a["filename"][:2] for a in m["attachments"]] == ["03", "04"] and m, 30, "the second page"))
    assert "`#3`" in edited["content"]
    buttons = {c["label"]: c["custom_id"] for row in edited["components"] for c in row["components"]}
    assert set(buttons) == {"Similar to #3", "Similar to #4", "More"}

    pivot = emulator.call(emu.button_click(edited, buttons["Similar to #3"]))
    answer = respond(emulator, pivot)
    assert "**Similar to**" in answer["content"] and len(answer["attachments"]) == 4
    emu.assert_clean()


def test_more_is_only_for_whoever_asked(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    message = respond(emulator, emulator.call(emu.slash_command("find", {"prompt": "a white cross", "count": 2})))
    more = next(c["custom_id"] for row in message["components"] for c in row["components"] if c["label"] == "More")
    stranger = emu.add_user("stranger")
    click = emulator.call(emu.button_click(message, more, user=stranger))
    answer = respond(emulator, click)
    assert answer["flags"] & EPHEMERAL and "run the command yourself" in answer["content"]


def test_context_menu_finds_pictures_like_a_posted_one(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    picture, _ = next(p for p in make_pictures(1, seed=777) if p[1] == "orange_circle")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95)
    attachment = emu.add_attachment("photo.jpg", buffer.getvalue(), "image/jpeg")
    posted = emulator.call(emu.user_message("look at this", attachments=[attachment]))
    interaction = emulator.call(emu.message_context_menu("Find similar images", posted))
    message = respond(emulator, interaction)
    assert "orange" in message["content"].split("**Nearest pictures**")[0]
    assert "orange_circle" in attachment_labels(message)


def test_random_and_about(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    message = respond(emulator, emulator.call(emu.slash_command("random", {})))
    assert message["content"].startswith("**A random picture**") and len(message["attachments"]) == 1
    labels = {c["label"] for row in message["components"] for c in row["components"]}
    assert labels == {"Another", "Similar pictures"}
    about = respond(emulator, emulator.call(emu.slash_command("about", {})))
    assert about["flags"] & EPHEMERAL
    assert "32 labels" in about["content"] and "/find: p50" in about["content"]


def test_event_loop_keeps_heartbeating_under_load(harness) -> None:
    emulator, bot = harness
    emu = emulator.emu
    before = len(emu.heartbeats)
    colours, shapes = ("red", "blue", "green", "black", "white", "purple"), ("circle", "cross", "square", "triangle")
    served, round_ = 0, 0
    deadline = time.monotonic() + 120
    # Keep 16 distinct prompts in flight at a time until the gateway has seen several heartbeats meanwhile
    # (on a quiet machine the tiny model answers hundreds a second, so this is counted in beats, not rounds).
    while len(emu.heartbeats) - before < 5 and time.monotonic() < deadline:
        round_ += 1
        prompts = [f"{adjective} {c} {s}" for c in colours for s in shapes for adjective in ("a", "one")]
        batch = [emulator.call(emu.slash_command("find", {"prompt": f"{p} #{round_}", "count": 4}))
                 for p in prompts[:16]]
        for interaction in batch:
            respond(emulator, interaction, timeout=120)
        served += len(batch)
    beats = emu.heartbeats[before:]
    assert len(beats) >= 4, (served, beats)
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    # Discord drops a client that misses a heartbeat; the interval here is 1 s.
    assert max(gaps) < 2.0, gaps
    assert bot.alive()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_threads_run_below_the_event_loop(harness) -> None:
    _, bot = harness
    pid = bot.process.pid

    def nice(tid: str) -> int:
        # /proc/PID/task/TID/stat: the 19th field is the nice value; the name before it may hold spaces.
        fields = (Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1]).split()
        return int(fields[16])

    tids = [tid for tid in os.listdir(f"/proc/{pid}/task") if tid != str(pid)]
    loop = nice(str(pid))  # the main thread runs the event loop
    others = [nice(tid) for tid in tids]
    assert min(19, loop + 10) in others, (loop, others)  # the encoder's worker, at least (CLIPBOT_WORKER_NICE)
    assert all(value >= loop for value in others)


def test_log_has_no_token_and_no_traceback(harness) -> None:
    _, bot = harness
    log = bot.log
    assert FAKE_TOKEN not in log
    assert FAKE_TOKEN.split(".")[0] not in log
    assert not has_traceback(log), log[-3000:]
    assert "synced" in log and "ready as" in log


def test_commands_sync_payload_has_descriptions(harness) -> None:
    emulator, _ = harness
    put = [r for r in emulator.emu.requests if r.method == "PUT" and r.path.endswith("/commands")][-1]
    find = next(c for c in put.json if c["name"] == "find")
    prompt = next(o for o in find["options"] if o["name"] == "prompt")
    count = next(o for o in find["options"] if o["name"] == "count")
    assert prompt["max_length"] == 2000 and (count["min_value"], count["max_value"]) == (1, 10)
    assert json.dumps(put.json)  # serialisable as sent
