"""CPU priority of worker threads, so that the event loop's thread wins the CPU whenever it wakes.

On 2 cores the encoder's OpenMP threads and the executor keep both cores busy under load, and the event loop
waits for a time slice: its lag peaked at a median 19 ms over 15 runs, against 16 ms with the workers 10 nice
levels below it, at a slightly higher throughput (docs/BENCHMARKS.md). Linux's nice applies per thread;
elsewhere this does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

_NICEST = 19


def _lower(tid: int, steps: int) -> bool:
    """Make thread `tid` `steps` nice levels nicer than it is; False where the system refuses."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(_NICEST, current + steps))
    except OSError:  # the thread ended meanwhile, or a sandbox forbids it: priorities are an optimisation
        return False
    return True


def _supported(steps: int) -> bool:
    return steps > 0 and sys.platform.startswith("linux")


def lower_this_thread(steps: int) -> None:
    """Run the calling thread `steps` nice levels below where it runs now (an executor's initializer)."""
    if _supported(steps):
        _lower(threading.get_native_id(), steps)


def lower_other_threads(steps: int) -> int:
    """Lower every other thread of this process by `steps` nice levels; returns how many were lowered.

    Call it from the event loop's thread once the workers exist: it reaches threads Python never sees, such as
    OpenMP's pool, and threads that start later inherit the priority of the thread that starts them.
    """
    if not _supported(steps):
        return 0
    caller = threading.get_native_id()
    lowered = sum(_lower(int(tid), steps) for tid in os.listdir("/proc/self/task") if int(tid) != caller)
    log.debug("lowered %d worker threads by %d nice levels", lowered, steps)
    return lowered
