"""The open-loop engine of kvload: a schedule of intended starts, senders that run them, metrics.

Open loop: the scheduler releases ops at their intended times whatever the server does, and
each op's latency is measured from its intended start, so a slow server shows as latency and
lag rather than as a quietly lower rate (no coordinated omission). One event loop: the
scheduler, `max_in_flight` sender tasks sharing one aiohttp session, and the reporter. aiohttp
was chosen by measurement: ~10x httpx's async client and threads of httpx sync clients at 50
concurrent requests here (bench/results/RESULTS-client-transports.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from yarl import URL

OPS = ("get", "set", "del", "incr")
# Ops waiting for a sender beyond this many are not queued but counted as errors
# (reason generator_saturated): the generator says it cannot keep up instead of piling up.
MAX_BACKLOG = 5000
# How often the achieved rate is compared with the target, and the shortfall that warns.
REPORT_SECONDS = 5.0
SHORTFALL = 0.95
REQUEST_TIMEOUT_S = 10.0
# URLs kept parsed: all of them at the default 1,000 keys per op kind.
URL_CACHE = 8192
# Ops the scheduler releases at most between two turns of the event loop when behind schedule.
RELEASE_BATCH = 64
METHODS: dict[str, tuple[str, bytes | None]] = {
    "get": ("GET", None),
    "set": ("PUT", b"kvload-value"),
    "del": ("DELETE", None),
    "incr": ("POST", None),
}

log = logging.getLogger("kvload")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str
    token: str | None
    ops_per_sec: float
    ratios: dict[str, float]  # normalised: sums to 1
    poisson: bool
    duration: float | None
    max_in_flight: int
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
            "kvload_schedule_lag_seconds", "How far behind its schedule a sender starts ops", registry=registry
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


@functools.lru_cache(maxsize=URL_CACHE)
def request_url(base: str, op: str, key: int) -> URL:
    """Cached: parsing and quoting a URL per request is a measurable share of kvload's CPU."""
    # Counters under their own prefix: a set never makes one a non-integer.
    path = f"/v1/kv/kvload-counter/{key}/incr" if op == "incr" else f"/v1/kv/kvload/{key}"
    return URL(base + path, encoded=True)


class LoadGenerator:
    def __init__(self, config: LoadConfig, metrics: LoadMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.pending: asyncio.Queue[tuple[float, str, int]] = asyncio.Queue()
        self.completed = 0
        self.lag = 0.0  # the last op's start lag, for the warning line
        self.base = config.url.rstrip("/")

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set or the duration is over; the backlog and in-flight ops are then abandoned."""
        self.metrics.target.set(self.config.ops_per_sec)
        headers = {"authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        # The connector's limit is the in-flight bound too: one connection per sender, kept alive.
        connector = aiohttp.TCPConnector(limit=self.config.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        cookies = aiohttp.DummyCookieJar()  # the API sets none; a real jar costs per request
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=timeout, cookie_jar=cookies
        ) as session:
            tasks = [asyncio.create_task(self._send_loop(session)) for _ in range(self.config.max_in_flight)]
            tasks.append(asyncio.create_task(self._report()))
            scheduler = asyncio.create_task(self._schedule())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait((scheduler, stopped), return_when=asyncio.FIRST_COMPLETED)
            for task in (*tasks, scheduler, stopped):
                task.cancel()
            await asyncio.gather(*tasks, scheduler, stopped, return_exceptions=True)

    async def _schedule(self) -> None:
        rng = random.Random()
        interval = 1.0 / self.config.ops_per_sec
        start = time.monotonic()
        end = start + self.config.duration if self.config.duration is not None else float("inf")
        intended = start
        released = 0
        while True:
            intended += rng.expovariate(self.config.ops_per_sec) if self.config.poisson else interval
            now = time.monotonic()
            # The wall clock too: a scheduler saturated at a huge rate falls behind its own schedule.
            if intended >= end or now >= end:
                return
            if intended > now:
                await asyncio.sleep(intended - now)
            elif released % RELEASE_BATCH == 0:
                # Behind: ops already due go out in batches, not one loop turn each (that costs
                # as much as sending them), but the senders still run between batches.
                await asyncio.sleep(0)
            released += 1
            op = pick_op(self.config.ratios, rng)
            if self.pending.qsize() >= MAX_BACKLOG:
                self.metrics.errors.labels(op, "generator_saturated").inc()
                continue
            self.pending.put_nowait((intended, op, rng.randrange(self.config.keys)))

    async def _send_loop(self, session: aiohttp.ClientSession) -> None:
        latency = {op: self.metrics.latency.labels(op) for op in OPS}
        ops = {op: self.metrics.ops.labels(op) for op in OPS}
        while True:
            intended, op, key = await self.pending.get()
            self.lag = max(0.0, time.monotonic() - intended)
            self.metrics.lag.set(self.lag)
            reason = await self._send(session, op, key)
            latency[op].observe(time.monotonic() - intended)
            if reason is None:
                ops[op].inc()
                self.completed += 1
            else:
                self.metrics.errors.labels(op, reason).inc()

    async def _send(self, session: aiohttp.ClientSession, op: str, key: int) -> str | None:
        """One op; None when it succeeded, else the error's reason (a 404 on get or del is a miss, not an error)."""
        method, body = METHODS[op]
        try:
            async with session.request(method, request_url(self.base, op, key), data=body) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            return type(error).__name__
        if status < 400 or (status == 404 and op in ("get", "del")):
            return None
        return f"http_{status}"

    async def _report(self) -> None:
        """Every REPORT_SECONDS: the achieved rate to the gauge, and a warning when short of the target."""
        last = 0
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            achieved = (self.completed - last) / REPORT_SECONDS
            last = self.completed
            self.metrics.achieved.set(achieved)
            if achieved < SHORTFALL * self.config.ops_per_sec:
                log.warning(
                    "cannot hold the target rate: target %.0f ops/s, achieved %.0f ops/s, schedule lag %.3f s",
                    self.config.ops_per_sec,
                    achieved,
                    self.lag,
                )
