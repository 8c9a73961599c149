"""Worker threads run below the event loop's thread (Linux's per-thread nice), in a process of their own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.clirun import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")

SCRIPT = textwrap.dedent("""
    import json, os, threading
    from concurrent.futures import ThreadPoolExecutor
    from bot.priorities import lower_other_threads, lower_this_thread

    def nice(tid):
        return os.getpriority(os.PRIO_PROCESS, tid)

    started, stop = threading.Event(), threading.Event()
    ids = []
    def worker():
        ids.append(threading.get_native_id())
        started.set()
        stop.wait()
    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    main = threading.get_native_id()
    base = nice(main)
    lowered = lower_other_threads(5)
    with ThreadPoolExecutor(1, initializer=lower_this_thread, initargs=(3,)) as pool:
        pooled = pool.submit(lambda: nice(threading.get_native_id())).result()
    print(json.dumps({"base": base, "main": nice(main), "worker": nice(ids[0]), "pooled": pooled,
                      "lowered": lowered}))
    stop.set()
""")


def test_other_threads_and_initialised_workers_are_lowered() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    nice = json.loads(result.stdout)
    assert nice["main"] == nice["base"]  # the caller, the event loop's thread, keeps its priority
    assert nice["worker"] == min(19, nice["base"] + 5)
    assert nice["pooled"] == min(19, nice["base"] + 3)  # started by the main thread, then lowered itself
    assert nice["lowered"] >= 1


def test_zero_steps_change_nothing() -> None:
    from bot.priorities import lower_other_threads

    assert lower_other_threads(0) == 0
