"""Hardening, end to end through the emulator: bad uploads and prompts, faults, secrets, shutdown."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.botkit import (
    FAKE_TOKEN,
    FAULTS,
    BotProcess,
    EmulatorThread,
    attachment_labels,
    has_traceback,
    inject,
)
from tests.clirun import clipbot
from tests.fixtures.shapes import make_pictures

pytestmark = pytest.mark.slow
EPHEMERAL = 64


@pytest.fixture(scope="module")
def harness(shapes_store: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    emulator = EmulatorThread(heartbeat_interval_ms=1000)
    bot = BotProcess(emulator.emu, shapes_store, root / "bot.log", CLIPBOT_PRECISION="fp32",
                     CLIPBOT_HEALTH_PORT="0", **inject(root / "inject", FAULTS))
    try:
        bot.wait_for_log("ready as")
        yield emulator, bot
    finally:
        if bot.alive():
            bot.stop()
        emulator.close()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def shape(name: str, seed: int = 31) -> Image.Image:
    return next(picture for picture, label in make_pictures(1, seed=seed) if label == name)


def answer(emulator: EmulatorThread, interaction: dict, timeout: float = 60.0) -> dict:
    """The message that answers an interaction: an immediate reply, or the follow-up after a deferral."""
    emu = emulator.emu

    def ready():
        state = emu.interaction_state(interaction)
        if state.callback_type == 4:
            data = state.callback.get("data", {})
            return {"content": data.get("content", ""), "flags": data.get("flags", 0), "attachments": []}
        followups = [m for m in emu.followup_messages(interaction) if m.get("content")]
        original = emu.original_message(interaction)
        if original is not None and original.get("content") and not state.original_loading:
            return original
        return followups[0] if followups else None

    return emulator.call(emu.wait_for(ready, timeout, "an answer"), timeout + 5)


def upload(emulator: EmulatorThread, filename: str, data: bytes, content_type: str | None, count: int = 3) -> dict:
    emu = emulator.emu
    attachment = emu.add_attachment(filename, data, content_type)
    return emulator.call(emu.slash_command("similar", {"image": attachment, "count": count}))


def downloads_of(emulator: EmulatorThread, interaction: dict) -> list:
    url = interaction["data"]["resolved"]["attachments"]
    paths = [a["url"].split("/", 3)[3] for a in url.values()]
    return [r for r in emulator.emu.requests if r.method == "GET" and any(p in r.path for p in paths)]


def assert_ephemeral_error(message: dict, text: str) -> None:
    assert message["flags"] & EPHEMERAL, message
    assert text in message["content"], message["content"]


# --- bad uploads -----------------------------------------------------------------------------------------


def test_non_image_attachment_is_refused_before_download(harness) -> None:
    emulator, bot = harness
    interaction = upload(emulator, "notes.txt", b"hello, this is text", "text/plain")
    assert_ephemeral_error(answer(emulator, interaction), "is not a picture (text/plain)")
    assert downloads_of(emulator, interaction) == []
    assert bot.alive()


def test_oversized_attachment_is_refused_before_download(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    attachment = emu.add_attachment("huge.png", encoded(Image.new("RGB", (8, 8)), "PNG"), "image/png")
    attachment["size"] = 30 * 1024 * 1024  # what Discord reports for a 30 MB upload
    interaction = emulator.call(emu.slash_command("similar", {"image": attachment}))
    assert_ephemeral_error(answer(emulator, interaction), "the limit is")
    assert downloads_of(emulator, interaction) == []


def test_picture_with_the_wrong_extension_still_works(harness) -> None:
    emulator, _ = harness
    interaction = upload(emulator, "really-a-png.jpg", encoded(shape("red_square"), "PNG"), "image/jpeg")
    message = answer(emulator, interaction)
    assert not message.get("flags", 0) & EPHEMERAL
    assert "red_square" in attachment_labels(message)


def test_truncated_picture_gets_a_private_explanation(harness) -> None:
    emulator, bot = harness
    data = encoded(Image.effect_noise((300, 300), 60).convert("RGB"), "JPEG")
    interaction = upload(emulator, "broken.jpg", data[: len(data) // 3], "image/jpeg")
    assert_ephemeral_error(answer(emulator, interaction), "damaged or truncated")
    state = emulator.emu.interaction_state(interaction)
    assert state.callback_type == 5 and emulator.emu.original_message(interaction) is None  # placeholder removed
    assert bot.alive()


def png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * (1 + width * 3) * 64, 9)  # a few rows: tiny file, huge claimed size
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused(harness) -> None:
    emulator, bot = harness
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 100_000
    interaction = upload(emulator, "bomb.png", bomb, "image/png")
    assert_ephemeral_error(answer(emulator, interaction), "pixels")
    assert bot.alive()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_use_their_first_frame(harness, fmt: str) -> None:
    emulator, _ = harness
    frames = [shape("blue_circle").convert("RGB"), shape("yellow_cross").convert("RGB")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    interaction = upload(emulator, f"anim.{fmt.lower()}", buffer.getvalue(), f"image/{fmt.lower()}")
    message = answer(emulator, interaction)
    assert "blue circle" in message["content"].split("**Nearest pictures**")[0]


@pytest.mark.parametrize("kind", ["16-bit", "CMYK", "palette", "transparent", "greyscale"])
def test_unusual_picture_modes_are_answered(harness, kind: str) -> None:
    emulator, _ = harness
    picture = shape("green_square")
    if kind == "16-bit":
        grey = (np.asarray(picture.convert("L"), dtype=np.uint16) * 257)
        data, mime = encoded(Image.fromarray(grey), "PNG"), "image/png"
    elif kind == "CMYK":
        data, mime = encoded(picture.convert("CMYK"), "JPEG"), "image/jpeg"
    elif kind == "palette":
        data, mime = encoded(picture.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "image/png"
    elif kind == "transparent":
        rgba = picture.convert("RGBA")
        rgba.putalpha(200)
        data, mime = encoded(rgba, "PNG"), "image/png"
    else:
        data, mime = encoded(picture.convert("L"), "PNG"), "image/png"
    message = answer(emulator, upload(emulator, f"{kind}.png", data, mime))
    assert not message.get("flags", 0) & EPHEMERAL
    assert len(message["attachments"]) == 3
    if kind in ("CMYK", "palette", "transparent"):
        assert "green square" in message["content"].split("**Nearest pictures**")[0]


def test_exif_rotated_photo_is_read_upright(harness) -> None:
    emulator, _ = harness
    picture = shape("purple_triangle").rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with EXIF saying "rotate 90° clockwise to display"
    data = encoded(picture, "JPEG", quality=95, exif=exif.tobytes())
    message = answer(emulator, upload(emulator, "phone.jpg", data, "image/jpeg"))
    assert "purple triangle" in message["content"].split("**Nearest pictures**")[0]


# --- bad prompts ---------------------------------------------------------------------------------------


def test_whitespace_prompt_gets_a_private_hint(harness) -> None:
    emulator, _ = harness
    interaction = emulator.call(emulator.emu.slash_command("find", {"prompt": "   "}))
    assert_ephemeral_error(answer(emulator, interaction), "prompt is empty")


def test_long_emoji_and_non_latin_prompts_are_answered(harness) -> None:
    emulator, _ = harness
    for prompt in ["a red circle " * 153 + "x", "🔴 a red circle 🔴", "красный круг 赤い丸 دائرة حمراء"]:
        assert len(prompt) <= 2000
        message = answer(emulator, emulator.call(emulator.emu.slash_command("find", {"prompt": prompt})))
        assert not message.get("flags", 0) & EPHEMERAL and len(message["attachments"]) == 4


def test_count_out_of_range_from_a_modified_client(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    from tests.discord_emulator.interactions import command_data

    data = command_data(emu, "find", {"prompt": "a red circle", "count": 5}, emu.guild_id)
    next(o for o in data["options"] if o["name"] == "count")["value"] = 500
    interaction = emulator.call(emu._interaction(2, data, user=None, guild_id=emu.guild_id, channel_id=None,
                                                 dm=False, locale="en-US"))
    message = answer(emulator, interaction)
    assert message["flags"] & EPHEMERAL and "count" in message["content"]


# --- faults --------------------------------------------------------------------------------------------


def test_commands_sent_during_a_gateway_drop_are_answered_after_resume(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    emulator.call(emu.drop_gateway(code=4000, resumable=True, hold=True))
    interaction = emulator.call(emu.slash_command("find", {"prompt": "a black circle", "count": 2}))
    emu.release_gateway()
    emulator.call(emu.wait_for_resume(1, timeout=60), 70)
    assert attachment_labels(answer(emulator, interaction)).count("black_circle") >= 1


def test_rate_limited_follow_up_is_waited_out_and_delivered(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    emu.rate_limit_next("POST", r"^/webhooks/", times=1, retry_after=0.6)
    mark = emu.mark()
    interaction = emulator.call(emu.slash_command("find", {"prompt": "a white circle", "count": 2}))
    message = answer(emulator, interaction)
    assert len(message["attachments"]) == 2
    posts = [r for r in emu.requests[mark:] if r.method == "POST" and r.path.startswith("/webhooks/")]
    assert [r.status for r in posts[:2]] == [429, 200]


def test_server_error_on_follow_up_is_retried(harness) -> None:
    emulator, _ = harness
    emu = emulator.emu
    emu.fail_next("POST", r"^/webhooks/", status=500, times=1)
    mark = emu.mark()
    interaction = emulator.call(emu.slash_command("find", {"prompt": "an orange square", "count": 2}))
    assert len(answer(emulator, interaction)["attachments"]) == 2
    posts = [r for r in emu.requests[mark:] if r.method == "POST" and r.path.startswith("/webhooks/")]
    assert [r.status for r in posts[:2]] == [500, 200]


def test_persistent_server_errors_are_logged_and_the_user_told(harness) -> None:
    emulator, bot = harness
    emu = emulator.emu
    emu.fail_next("POST", r"^/webhooks/", status=502, times=5)  # every attempt discord.py makes
    interaction = emulator.call(emu.slash_command("find", {"prompt": "a yellow circle", "count": 2}))
    message = answer(emulator, interaction, timeout=90)
    assert_ephemeral_error(message, "Something went wrong")
    assert bot.alive()


def test_expired_interaction_is_handled_without_a_crash(harness) -> None:
    emulator, bot = harness
    emu = emulator.emu
    interaction = emulator.call(emu.slash_command("find", {"prompt": "a red cross"}), )
    emu.expire_interaction(interaction)
    emulator.call(emu.wait_for(lambda: "interaction expired" in bot.log or None, 30, "the expiry log line"), 35)
    follow = emulator.call(emu.slash_command("find", {"prompt": "a red cross", "count": 1}))
    assert len(answer(emulator, follow)["attachments"]) == 1


def test_encoder_failure_is_reported_and_the_next_command_works(harness) -> None:
    emulator, bot = harness
    emu = emulator.emu
    failed = emulator.call(emu.slash_command("find", {"prompt": "please explode"}))
    assert_ephemeral_error(answer(emulator, failed), "encoder failed")
    ok = emulator.call(emu.slash_command("find", {"prompt": "a blue square", "count": 2}))
    assert len(answer(emulator, ok)["attachments"]) == 2
    assert bot.alive()


def test_uploads_are_never_written_to_disk(harness) -> None:
    emulator, bot = harness
    before = bot.log.count("AUDIT-WRITE")
    message = answer(emulator, upload(emulator, "private.png", encoded(shape("red_circle"), "PNG"), "image/png"))
    assert len(message["attachments"]) == 3
    assert bot.log.count("AUDIT-WRITE") == before, [line for line in bot.log.splitlines() if "AUDIT-WRITE" in line]


def test_health_and_metrics_endpoints(harness) -> None:
    import re
    import urllib.request

    _, bot = harness
    port = int(re.search(r"health and metrics on http://127.0.0.1:(\d+)/healthz", bot.log).group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        body = response.read().decode()
        assert response.status == 200 and '"status": "ok"' in body
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'clipbot_commands_total{command="find"}' in metrics
    assert "clipbot_command_seconds_bucket" in metrics and "clipbot_queue_depth" in metrics


def test_memory_stayed_bounded_through_the_bad_inputs(harness) -> None:
    _, bot = harness
    status = Path(f"/proc/{bot.process.pid}/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    # Decoding the 30000x30000 bomb alone would take 2.7 GB; the whole bot with its model stays far below.
    assert peak_kib < 1_500_000, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_the_token_never_reaches_the_log(harness) -> None:
    _, bot = harness
    assert FAKE_TOKEN not in bot.log
    assert "DEBUG" in bot.log  # the check covers every level


def test_sigterm_finishes_the_reply_in_flight_and_exits_cleanly(harness) -> None:
    emulator, bot = harness
    emu = emulator.emu
    interaction = emulator.call(emu.slash_command("find", {"prompt": "slowly, a green circle", "count": 2}))
    emulator.call(emu.wait_for_response(interaction))
    code = bot.stop(timeout=60)
    assert code == 0
    assert len(answer(emulator, interaction, timeout=5)["attachments"]) == 2
    shutdown = bot.log.split("shutting down", 1)[1]
    assert "stopped" in shutdown
    assert not has_traceback(shutdown), shutdown[-4000:]


# --- start-up refusals ----------------------------------------------------------------------------------


def test_missing_store_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    result = clipbot("run", DISCORD_TOKEN=FAKE_TOKEN, CLIPBOT_STORE=str(tmp_path / "absent"), timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"clipbot: Store {tmp_path / 'absent'} does not exist")
    assert not has_traceback(result.stderr) and FAKE_TOKEN not in result.stderr


def test_corrupt_store_refuses_to_start_with_one_line(shapes_store: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(shapes_store, copy)
    raw = bytearray((copy / "images.npy").read_bytes())
    raw[-4] ^= 0xFF
    (copy / "images.npy").write_bytes(bytes(raw))
    result = clipbot("run", DISCORD_TOKEN=FAKE_TOKEN, CLIPBOT_STORE=str(copy), timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clipbot: Store") and ("checksum" in last or "unit length" in last)


def test_missing_token_refuses_to_start_with_one_line(shapes_store: Path) -> None:
    result = clipbot("run", CLIPBOT_STORE=str(shapes_store), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("clipbot: DISCORD_TOKEN is not set")
