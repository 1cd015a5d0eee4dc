"""The open-loop engine of kvload: a schedule of intended starts, workers that run them, metrics.

Open loop: the scheduler thread releases ops at their intended times whatever the server
does, and each op's latency is measured from its intended start, so a slow server shows as
latency and lag rather than as a quietly lower rate (no coordinated omission). Workers are
threads with one httpx sync client each: measured to hold 2,000 ops/s here where httpx's
async client stalls at a few hundred (bench/results/RESULTS-kvload.md).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OPS = ("get", "set", "del", "incr")
# Ops waiting for a worker beyond this many are not queued but counted as errors
# (reason generator_saturated): the generator says it cannot keep up instead of piling up.
MAX_BACKLOG = 5000
# How often the achieved rate is compared with the target, and the shortfall that warns.
REPORT_SECONDS = 5.0
SHORTFALL = 0.95

log = logging.getLogger("kvload")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str
    token: str | None
    ops_per_sec: float
    ratios: dict[str, float]  # normalised: sums to 1
    poisson: bool
    duration: float | None
    workers: int
    keys: int


class LoadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ops = Counter("kvload_ops_total", "Ops completed, by op", ["op"], registry=registry)
        self.errors = Counter(
            "kvload_errors_total", "Ops failed, by op and reason", ["op", "reason"], registry=registry
        )
        self.latency = Histogram(
            "kvload_request_duration_seconds",
            "Latency from each op's intended start to its response",
            ["op"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag = Gauge(
            "kvload_schedule_lag_seconds", "How far behind its schedule a worker starts ops", registry=registry
        )
        self.target = Gauge("kvload_target_ops_per_second", "The rate kvload was asked for", registry=registry)
        self.achieved = Gauge(
            "kvload_achieved_ops_per_second", "Ops completed per second over the last window", registry=registry
        )


def pick_op(ratios: dict[str, float], rng: random.Random) -> str:
    draw = rng.random()
    for op, share in ratios.items():
        draw -= share
        if draw < 0:
            return op
    return next(op for op, share in reversed(ratios.items()) if share > 0)


class LoadGenerator:
    def __init__(self, config: LoadConfig, metrics: LoadMetrics, stop: threading.Event) -> None:
        self.config = config
        self.metrics = metrics
        self.stop = stop
        self.pending: queue.Queue[tuple[float, str, int]] = queue.Queue()
        self.completed = 0
        self._count_lock = threading.Lock()
        self.lag = 0.0  # the last op's start lag, for the warning line

    def run(self) -> None:
        self.metrics.target.set(self.config.ops_per_sec)
        workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.config.workers)]
        for worker in workers:
            worker.start()
        reporter = threading.Thread(target=self._report, daemon=True)
        reporter.start()
        self._schedule()
        self.stop.set()
        for worker in workers:
            worker.join(timeout=30)

    def _schedule(self) -> None:
        rng = random.Random()
        interval = 1.0 / self.config.ops_per_sec
        start = time.monotonic()
        end = start + self.config.duration if self.config.duration is not None else float("inf")
        intended = start
        while not self.stop.is_set():
            intended += rng.expovariate(self.config.ops_per_sec) if self.config.poisson else interval
            # The wall clock too: a scheduler saturated at a huge rate falls behind its own schedule.
            if intended >= end or time.monotonic() >= end:
                return
            delay = intended - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            op = pick_op(self.config.ratios, rng)
            if self.pending.qsize() >= MAX_BACKLOG:
                self.metrics.errors.labels(op, "generator_saturated").inc()
                continue
            self.pending.put((intended, op, rng.randrange(self.config.keys)))

    def _work(self) -> None:
        headers = {"authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        with httpx.Client(base_url=self.config.url, headers=headers, timeout=10) as client:
            # On stop the backlog is abandoned, not drained: SIGTERM exits promptly.
            while not self.stop.is_set():
                try:
                    intended, op, key = self.pending.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.lag = max(0.0, time.monotonic() - intended)
                self.metrics.lag.set(self.lag)
                reason = self._send(client, op, key)
                self.metrics.latency.labels(op).observe(time.monotonic() - intended)
                if reason is None:
                    self.metrics.ops.labels(op).inc()
                    with self._count_lock:
                        self.completed += 1
                else:
                    self.metrics.errors.labels(op, reason).inc()

    @staticmethod
    def _send(client: httpx.Client, op: str, key: int) -> str | None:
        """One op; None when it succeeded, else the error's reason (a 404 on get or del is a miss, not an error)."""
        send: dict[str, Callable[[], httpx.Response]] = {
            "get": lambda: client.get(f"/v1/kv/kvload/{key}"),
            "set": lambda: client.put(f"/v1/kv/kvload/{key}", content=b"kvload-value"),
            "del": lambda: client.delete(f"/v1/kv/kvload/{key}"),
            # Counters under their own prefix: a set never makes one a non-integer.
            "incr": lambda: client.post(f"/v1/kv/kvload-counter/{key}/incr"),
        }
        try:
            status = send[op]().status_code
        except httpx.HTTPError as error:
            return type(error).__name__
        if status < 400 or (status == 404 and op in ("get", "del")):
            return None
        return f"http_{status}"

    def _report(self) -> None:
        """Every REPORT_SECONDS: the achieved rate to the gauge, and a warning when short of the target."""
        last = 0
        while not self.stop.wait(REPORT_SECONDS):
            with self._count_lock:
                done = self.completed
            achieved = (done - last) / REPORT_SECONDS
            last = done
            self.metrics.achieved.set(achieved)
            if achieved < SHORTFALL * self.config.ops_per_sec:
                log.warning(
                    "cannot hold the target rate: target %.0f ops/s, achieved %.0f ops/s, schedule lag %.3f s",
                    self.config.ops_per_sec,
                    achieved,
                    self.lag,
                )
