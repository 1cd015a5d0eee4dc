"""One python-engine worker process: its connections, its schedule and its histograms.

Closed loop: each connection sends its next request as soon as the previous one is answered.
Open loop (`rate`): each connection has a fixed schedule (the rate split over every
connection, starts staggered), and latency is measured from the request's intended start,
so a stalled server shows as latency rather than as fewer requests (wrk2's
coordinated-omission fix). Only requests due inside the measured window count; the warmup
before it is run and discarded.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop
from hdrh.histogram import HdrHistogram

from .kvb_http import Connection
from .kvb_workload import OPS, RequestMaker, Target, Workload

# Latencies are recorded in microseconds, 1 us to 1 hour, 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
RECONNECT_DELAY_S = 0.1  # after a refused connection, so a down node is not hammered
CHECK_INTERVAL_S = 0.1  # timeouts and progress


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    target: Target
    token: str | None
    workload: Workload
    connections: int
    first_connection: int  # this worker's first connection's index among all workers'
    total_connections: int
    rate: float | None  # requests/s over all workers; None: closed loop
    warmup_s: float
    duration_s: float
    timeout_s: float


@dataclass(slots=True)
class WorkerResult:
    """What a worker sends back: histograms encoded (HdrHistogram's format), counts, CPU."""

    latencies: dict[str, str] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    cpu_s: float = 0.0


class Worker:
    def __init__(self, plan: WorkerPlan, start_ns: int, progress: Any) -> None:
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        self.maker = RequestMaker(plan.workload, plan.target, plan.token)
        self.window_start_ns = start_ns + int(plan.warmup_s * 1e9)
        self.window_end_ns = self.window_start_ns + int(plan.duration_s * 1e9)
        self.counts: list[dict[int, int]] = [{} for _ in OPS]
        self.errors: list[dict[str, int]] = [{} for _ in OPS]
        self.progress = progress
        self.responses = 0
        self.connections: set[Connection] = set()
        self.due: dict[Connection, int] = {}  # open loop: each connection's next intended start
        self.interval_ns = int(plan.total_connections / plan.rate * 1e9) if plan.rate else 0
        self.stopping = False
        self.connect_op = OPS.index(plan.workload.ops()[0])  # a refused connection has no request yet
        self.cpu_at_start = 0.0
        self.cpu_s = 0.0

    async def run(self, start_ns: int) -> WorkerResult:
        self.loop.call_later(_seconds_until(self.window_start_ns), self.window_opens)
        self.loop.call_later(_seconds_until(self.window_end_ns), self.window_closes)
        self.loop.call_later(CHECK_INTERVAL_S, self.check)
        await asyncio.gather(*(self.connect(start_ns + self.stagger_ns(i)) for i in range(self.plan.connections)))
        while not self.stopping or any(conn.in_flight for conn in self.connections):
            await asyncio.sleep(CHECK_INTERVAL_S)
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()
        return self.result()

    def stagger_ns(self, index: int) -> int:
        """Open loop: connection k of all starts k/rate seconds after the start."""
        if not self.plan.rate:
            return 0
        return int((self.plan.first_connection + index) / self.plan.rate * 1e9)

    async def connect(self, first_due_ns: int) -> None:
        while not self.stopping:
            try:
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self.on_response, self.on_lost), self.plan.target.host, self.plan.target.port
                )
            except OSError:
                self.count_error(self.connect_op, time.monotonic_ns(), "connect")
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            self.connections.add(conn)
            # Open loop: a replaced connection keeps its schedule, and a backlog is sent at once.
            self.due[conn] = first_due_ns
            self.schedule(conn)
            return

    def schedule(self, conn: Connection) -> None:
        """Send the connection's next request now (closed loop, or late) or when it is due."""
        if self.stopping or conn.transport is None or conn.transport.is_closing():
            return
        if not self.plan.rate:
            now = time.monotonic_ns()
            op, request = self.maker.next()
            conn.send(op, request, now, now)
            return
        due = self.due[conn]
        if due >= self.window_end_ns:
            return
        if due > time.monotonic_ns():
            self.loop.call_later(_seconds_until(due), self.send_due, conn)
        else:
            self.send_due(conn)

    def send_due(self, conn: Connection) -> None:
        if self.stopping or conn.transport is None or conn.transport.is_closing():
            return
        due = self.due[conn]
        self.due[conn] = due + self.interval_ns
        now = time.monotonic_ns()
        op, request = self.maker.next()
        # Late: measured from when it was due. Early (a timer may fire early): from now.
        conn.send(op, request, min(due, now), now)

    def on_response(self, conn: Connection, status: int, error: str) -> None:
        # The hot path: everything here runs once per request.
        now = time.monotonic_ns()
        self.responses += 1
        started = conn.started_ns
        if self.window_start_ns <= started < self.window_end_ns:
            if error:
                self.count_error(conn.op, now, error, force=True)
            else:
                counts = self.counts[conn.op]
                micros = (now - started) // 1000 or LOWEST_US
                counts[micros] = counts.get(micros, 0) + 1
        if self.interval_ns or self.stopping or conn.transport is None or conn.transport.is_closing():
            self.schedule(conn)
        else:  # closed loop: the next request at once
            op, request = self.maker.next()
            conn.send(op, request, now, now)

    def count_error(self, op: int, now_ns: int, kind: str, force: bool = False) -> None:
        if force or self.window_start_ns <= now_ns < self.window_end_ns:
            errors = self.errors[op]
            errors[kind] = errors.get(kind, 0) + 1

    def on_lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        due = self.due.pop(conn, 0)
        if not self.stopping:
            self.loop.create_task(self.connect(due))

    def check(self) -> None:
        """Time out stalled requests (the connection is replaced) and publish progress."""
        now = time.monotonic_ns()
        limit = int(self.plan.timeout_s * 1e9)
        for conn in list(self.connections):
            if conn.in_flight and now - conn.sent_ns > limit:
                conn.fail("timeout")
        self.progress.value = self.responses
        self.loop.call_later(CHECK_INTERVAL_S, self.check)

    def window_opens(self) -> None:
        self.cpu_at_start = _cpu_s()

    def window_closes(self) -> None:
        self.cpu_s = _cpu_s() - self.cpu_at_start
        self.stopping = True

    def result(self) -> WorkerResult:
        result = WorkerResult(cpu_s=self.cpu_s)
        for index, op in enumerate(OPS):
            histogram = new_histogram()
            for micros, count in self.counts[index].items():
                histogram.record_value(min(micros, HIGHEST_US), count)
            result.latencies[op] = histogram.encode().decode()
            result.errors[op] = self.errors[index]
        return result


def _seconds_until(when_ns: int) -> float:
    # call_later, not call_at: uvloop's loop.time() has its own origin, time.monotonic_ns ours.
    return max(0.0, (when_ns - time.monotonic_ns()) / 1e9)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(plan: WorkerPlan, start: Any, ready: Any, results: Any, progress: Any) -> None:
    """A worker process: wait for the common start time, run, send the result back."""

    async def main() -> WorkerResult:
        ready.release()
        while start.value == 0:
            await asyncio.sleep(0.01)
        start_ns = int(start.value)
        await asyncio.sleep(max(0.0, start_ns / 1e9 - time.monotonic()))
        return await Worker(plan, start_ns, progress).run(start_ns)

    results.put(uvloop.run(main()))
