"""Service metrics: command counts, errors and recent latencies; exported to Prometheus when it is installed."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass

# Seconds; spans a cached "More" (milliseconds) to a cold image search under load (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECENT = 200


@dataclass(frozen=True)
class LatencySummary:
    """Median and 99th percentile of recent latencies of one command, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float


class Metrics:
    """Thread-safe counters and latency windows, mirrored into prometheus_client if available."""

    def __init__(self, queue_depth=lambda: 0) -> None:
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RECENT))
        self.commands: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.queue_depth = queue_depth
        self.registry = None
        try:
            import prometheus_client as prom
        except ImportError:
            return
        self.registry = prom.CollectorRegistry()
        self._prom_commands = prom.Counter("clipbot_commands", "Commands served", ["command"], registry=self.registry)
        self._prom_errors = prom.Counter("clipbot_errors", "Commands that failed", ["command", "kind"],
                                         registry=self.registry)
        self._prom_latency = prom.Histogram("clipbot_command_seconds", "Service time per command", ["command"],
                                            buckets=LATENCY_BUCKETS, registry=self.registry)
        gauge = prom.Gauge("clipbot_queue_depth", "Requests waiting for the encoder", registry=self.registry)
        gauge.set_function(lambda: float(self.queue_depth()))

    def observe(self, command: str, seconds: float) -> None:
        """Record one served command and how long it took."""
        with self._lock:
            self.commands[command] += 1
            self._recent[command].append(seconds)
        if self.registry is not None:
            self._prom_commands.labels(command).inc()
            self._prom_latency.labels(command).observe(seconds)

    def error(self, command: str, kind: str) -> None:
        """Record one failed command by error class."""
        with self._lock:
            self.errors[f"{command}:{kind}"] += 1
        if self.registry is not None:
            self._prom_errors.labels(command, kind).inc()

    def summary(self, command: str) -> LatencySummary | None:
        """Recent latency of one command, or None if it has not run yet."""
        with self._lock:
            values = sorted(self._recent.get(command, ()))
        if not values:
            return None

        def pick(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] * 1e3

        return LatencySummary(count=len(values), p50_ms=pick(0.5), p99_ms=pick(0.99))

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (empty without prometheus_client)."""
        if self.registry is None:
            return b""
        import prometheus_client as prom

        return prom.generate_latest(self.registry)
