"""The bot answering /find through the Milvus back end (Milvus Lite started by the test), same results as exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import load_engine
from tests.botkit import BotProcess, EmulatorThread, attachment_labels
from tests.clirun import clipbot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def milvus_uri(shapes_store: Path, tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("milvus") / "clipbot.db")
    result = clipbot("export-milvus", "--store", str(shapes_store), "--uri", uri, "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr
    return uri


def test_find_through_milvus_matches_the_exact_back_end(shapes_store: Path, milvus_uri: str, tmp_path: Path) -> None:
    exact = load_engine(shapes_store, precision="fp32").service
    emulator = EmulatorThread()
    bot = BotProcess(emulator.emu, shapes_store, tmp_path / "bot.log", CLIPBOT_BACKEND="milvus",
                     CLIPBOT_MILVUS_URI=milvus_uri, CLIPBOT_PRECISION="fp32")
    try:
        bot.wait_for_log("ready as")
        assert "(milvus back end)" in bot.log
        emu = emulator.emu
        for prompt in ("a red circle", "a blue square", "a black cross"):
            interaction = emulator.call(emu.slash_command("find", {"prompt": prompt, "count": 6}))
            message = emulator.call(emu.wait_for(
                lambda i=interaction: (m := emu.original_message(i)) and m.get("attachments") and m, 60, "a reply"))
            expected = [hit.label for hit in exact.find(prompt, 6).images]
            assert attachment_labels(message) == expected
            ids = [a["filename"].rsplit("-", 2)[-2] + "-" + a["filename"].rsplit("-", 1)[-1].split(".")[0]
                   for a in message["attachments"]]
            assert ids == [hit.id for hit in exact.find(prompt, 6).images]
        emu.assert_clean()
    finally:
        code = bot.stop()
        emulator.close()
    assert code == 0
