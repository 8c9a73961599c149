"""Many users at once: 32 /find and 8 /similar clients on one event loop, served the way the bot serves."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from bot.config import Settings
from bot.discord.replies import find_reply, similar_reply
from bot.images import open_image
from bot.priorities import lower_other_threads, lower_this_thread
from bot.query_vectors import QueryVectors
from bot.search import SearchService

from .common import Context, Row, percentile, prompts
from .serving import K, Serving, uploads

log = logging.getLogger(__name__)

FIND_CLIENTS = 32
SIMILAR_CLIENTS = 8
# The lag monitor's period: how late a 10 ms sleep wakes is how long the loop was kept from running.
LAG_PERIOD_S = 0.010


@dataclass
class LoadResult:
    """Completed requests, their latencies and the event loop's lag during one load run."""

    name: str
    seconds: float
    find_ms: list[float]
    similar_ms: list[float]
    lag_ms: list[float]

    @property
    def throughput(self) -> float:
        """Requests served per second."""
        return (len(self.find_ms) + len(self.similar_ms)) / self.seconds

    @property
    def all_ms(self) -> list[float]:
        """Every request's latency."""
        return self.find_ms + self.similar_ms


Call = Callable[[object], Awaitable[object]]
# Given the run's executor, the coroutine functions that serve one /find (a prompt) and one /similar (bytes).
Calls = Callable[[Executor], tuple[Call, Call]]


def in_executor(find: Callable[[str], object], similar: Callable[[bytes], object]) -> Calls:
    """Each request as one blocking call in the executor: the tutorial's way, and clipbot before QueryVectors."""

    def make(executor: Executor) -> tuple[Call, Call]:
        async def run(func: Callable, argument: object) -> object:
            return await asyncio.get_running_loop().run_in_executor(executor, func, argument)

        return functools.partial(run, find), functools.partial(run, similar)

    return make


def like_the_bot(service: SearchService, store) -> Calls:
    """Each request as bot.discord.commands serves it: QueryVectors awaits the encoder on the loop, the
    executor decodes uploads and runs search and rendering."""

    def make(executor: Executor) -> tuple[Call, Call]:
        queries = QueryVectors(service, executor)

        async def find(prompt: str) -> object:
            vector, query = await queries.text(prompt)
            page = functools.partial(service.find_by_vector, vector, K, query=query)
            return await asyncio.get_running_loop().run_in_executor(
                executor, lambda: find_reply(page(), store.thumbnail)
            )

        async def similar(data: bytes) -> object:
            vector = await queries.picture(data)
            return await asyncio.get_running_loop().run_in_executor(
                executor, lambda: similar_reply(service.similar_to_vector(vector, K), store.thumbnail)
            )

        return find, similar

    return make


def drive(
    name: str,
    calls: Calls,
    *,
    seconds: float,
    warmup: float,
    workers: int,
    texts: Iterator[str],
    pictures: list[bytes],
    find_clients: int = FIND_CLIENTS,
    similar_clients: int = SIMILAR_CLIENTS,
    worker_nice: int = 0,
) -> LoadResult:
    """Closed-loop clients, each awaiting its request before sending the next."""
    executor = ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="bench-search", initializer=lower_this_thread, initargs=(worker_nice,)
    )
    find, similar = calls(executor)

    async def main() -> LoadResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        measure_from, stop_at = started + warmup, started + warmup + seconds
        find_ms: list[float] = []
        similar_ms: list[float] = []
        lag_ms: list[float] = []
        finished = [started]

        async def monitor() -> None:
            while loop.time() < stop_at:
                before = loop.time()
                await asyncio.sleep(LAG_PERIOD_S)
                if before >= measure_from:
                    lag_ms.append(max(0.0, (loop.time() - before - LAG_PERIOD_S) * 1e3))

        async def client(call: Call, inputs: Callable[[], object], latencies: list[float]) -> None:
            while loop.time() < stop_at:
                sent = loop.time()
                await call(inputs())
                done = loop.time()
                if sent >= measure_from:
                    latencies.append((done - sent) * 1e3)
                    finished[0] = max(finished[0], done)

        picture_ids = itertools.count()
        await asyncio.gather(
            monitor(),
            *(client(find, lambda: next(texts), find_ms) for _ in range(find_clients)),
            *(
                client(similar, lambda: pictures[next(picture_ids) % len(pictures)], similar_ms)
                for _ in range(similar_clients)
            ),
        )
        return LoadResult(name, max(finished[0] - measure_from, 1e-9), find_ms, similar_ms, lag_ms)

    try:
        return asyncio.run(main())
    finally:
        executor.shutdown(wait=True)


def run(ctx: Context, serving: Serving, seconds: float, warmup: float) -> None:
    """Tutorial one-at-a-time, clipbot one-at-a-time, clipbot micro-batched; throughput, p99 and loop lag."""
    texts_pool = prompts(60_000, seed=7)  # distinct prompts: the cache must not help here
    texts = iter(texts_pool)
    pictures = uploads(8)
    store = serving.store
    unbatched = SearchService(serving.encoder, store, serving.service.index)
    batched = SearchService(serving.batching, store, serving.service.index)
    spec = serving.encoder.pixel_spec

    def service_find(service: SearchService) -> Callable[[str], object]:
        return lambda prompt: find_reply(service.find(prompt, K), store.thumbnail)

    def service_similar(service: SearchService) -> Callable[[bytes], object]:
        return lambda data: similar_reply(
            service.similar(open_image(data, draft_size=spec.resize), K), store.thumbnail
        )

    clients = FIND_CLIENTS + SIMILAR_CLIENTS
    threads = Settings.max_concurrency  # the bot's default executor size (CLIPBOT_MAX_CONCURRENCY)
    common = {"seconds": seconds, "warmup": warmup, "texts": texts, "pictures": pictures}
    tutorial = drive(
        "tutorial, one at a time",
        in_executor(serving.baseline_find, serving.baseline_similar),
        workers=clients,
        **common,
    )
    single = drive(
        "clipbot encoder, one at a time",
        in_executor(service_find(unbatched), service_similar(unbatched)),
        workers=clients,
        **common,
    )
    blocking = [
        drive(
            f"micro-batched, each request blocking an executor thread, {workers} threads",
            in_executor(service_find(batched), service_similar(batched)),
            workers=workers,
            **common,
        )
        for workers in (threads, clients)
    ]
    same_priority = drive(f"clipbot as the bot serves, {threads} executor threads, workers at the loop's priority",
                          like_the_bot(batched, store), workers=threads, **common)
    # As the bot does at start-up (bot.discord.runner): from here on, every other thread runs below this one.
    nice = Settings.worker_nice
    lower_other_threads(nice)
    bot = drive(f"clipbot as the bot serves, {threads} executor threads", like_the_bot(batched, store),
                workers=threads, worker_nice=nice, **common)
    variants = [
        drive(f"clipbot as the bot serves, {clients} executor threads", like_the_bot(batched, store),
              workers=clients, worker_nice=nice, **common),
        same_priority,
        *blocking,
    ]
    for result in (tutorial, single, bot, *variants):
        log.info(
            "%s: %.1f req/s (%d finds, %d similars), p99 %.0f ms, loop lag max %.1f ms",
            result.name,
            result.throughput,
            len(result.find_ms),
            len(result.similar_ms),
            percentile(result.all_ms, 99),
            max(result.lag_ms, default=0.0),
        )
    label = f"{FIND_CLIENTS} /find + {SIMILAR_CLIENTS} /similar clients"
    for baseline, against in ((tutorial, "the tutorial one at a time"), (single, "clipbot's encoder one at a time")):
        ctx.add(
            Row(
                "load",
                f"throughput, {label}, as the bot serves ({threads} threads), vs {against}",
                baseline.throughput,
                bot.throughput,
                "req/s",
                higher_is_better=True,
                target=3.0,
            )
        )
    for kind, base, mine in (("/find", tutorial.find_ms, bot.find_ms), ("/similar", tutorial.similar_ms, bot.similar_ms)):
        ctx.add(Row("load", f"{kind} p50 under load", percentile(base, 50), percentile(mine, 50), "ms"))
        ctx.add(Row("load", f"{kind} p99 under load", percentile(base, 99), percentile(mine, 99), "ms"))
    for result in (bot, *variants):
        how = result.name.removeprefix("clipbot ")
        if result is not bot:
            ctx.add(
                Row(
                    "load",
                    f"throughput, {how}, vs clipbot's encoder one at a time",
                    single.throughput,
                    result.throughput,
                    "req/s",
                    higher_is_better=True,
                )
            )
        ctx.add(
            Row(
                "load",
                f"event loop lag max (10 ms ticks), {how}",
                max(tutorial.lag_ms, default=0.0),
                max(result.lag_ms, default=0.0),
                "ms",
                limit=20.0 if result is bot else None,
            )
        )
        ctx.add(
            Row("load", f"event loop lag p99, {how}", percentile(tutorial.lag_ms, 99), percentile(result.lag_ms, 99), "ms")
        )
    stats = serving.batching.stats
    ctx.notes.append(
        f"micro-batching over the whole run: {stats.requests} requests in {stats.batches} batches "
        f"(mean {stats.items / max(stats.batches, 1):.1f} items, largest {stats.largest}); "
        "event loop lag max: "
        + ", ".join(f"{r.name} {max(r.lag_ms, default=0):.1f} ms" for r in (tutorial, single, bot, *variants))
    )
