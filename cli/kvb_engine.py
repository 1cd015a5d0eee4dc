"""The python engine: worker processes (cli/kvb_worker.py) whose histograms are merged.

Several processes, because one Python process tops out near one core; each runs its share
of the connections (and of the rate) on its own event loop, and sends back HdrHistograms in
their compressed encoding, added up here.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

from hdrh.histogram import HdrHistogram

from .kvb_progress import ProgressLine
from .kvb_result import Latency, OpResult, RunResult
from .kvb_worker import WorkerPlan, WorkerResult, new_histogram, worker_main
from .kvb_workload import Target, Workload

START_DELAY_S = 0.2  # after every worker is ready, so they all start on the same clock
READY_TIMEOUT_S = 60.0
PROGRESS_INTERVAL_S = 0.5


class EngineError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RunSettings:
    target: Target
    token: str | None
    connections: int
    duration_s: float
    warmup_s: float
    rate: float | None
    timeout_s: float
    processes: int


def run_python(workload: Workload, settings: RunSettings) -> RunResult:
    # fork: workers start in milliseconds and need not re-import the caller's main module. kvb
    # holds no threads yet (the progress line starts after).
    context = multiprocessing.get_context("fork")
    processes = min(settings.processes, settings.connections)
    shares = [
        settings.connections // processes + (1 if i < settings.connections % processes else 0) for i in range(processes)
    ]
    start = context.Value("q", 0, lock=False)
    ready = context.Semaphore(0)
    results = context.Queue()
    counters = [context.Value("q", 0, lock=False) for _ in shares]
    workers = []
    first = 0
    for share, counter in zip(shares, counters):
        plan = WorkerPlan(
            settings.target,
            settings.token,
            workload,
            share,
            first,
            settings.connections,
            settings.rate,
            settings.warmup_s,
            settings.duration_s,
            settings.timeout_s,
        )
        first += share
        process = context.Process(target=worker_main, args=(plan, start, ready, results, counter), daemon=True)
        process.start()
        workers.append(process)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        started = 0
        while started < len(workers):
            if ready.acquire(timeout=PROGRESS_INTERVAL_S):
                started += 1
            elif time.monotonic() > deadline or any(p.exitcode is not None for p in workers):
                raise EngineError("a worker process failed to start; see its error above")
        start.value = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        collected = _collect(workload, settings, workers, results, lambda: sum(c.value for c in counters))
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
            process.join()
    return _merge(workload, settings, collected)


def _collect(
    workload: Workload,
    settings: RunSettings,
    workers: Sequence[BaseProcess],
    results: Queue[WorkerResult],
    responses: Callable[[], int],
) -> list[WorkerResult]:
    collected: list[WorkerResult] = []
    # The run, its drain (requests in flight get up to the timeout) and some slack.
    deadline = time.monotonic() + START_DELAY_S + settings.warmup_s + settings.duration_s + settings.timeout_s + 30
    with ProgressLine(workload.name, settings.warmup_s + settings.duration_s, responses) as line:
        while len(collected) < len(workers):
            try:
                collected.append(results.get(timeout=PROGRESS_INTERVAL_S))
            except queue.Empty:
                if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in workers):
                    raise EngineError("a worker process failed or hung; see its error above") from None
                line.update()
    return collected


def _merge(workload: Workload, settings: RunSettings, collected: list[WorkerResult]) -> RunResult:
    overall = new_histogram()
    ops: dict[str, OpResult] = {}
    for op in workload.ops():
        histogram = new_histogram()
        errors: dict[str, int] = {}
        for result in collected:
            histogram.add(HdrHistogram.decode(result.latencies[op].encode()))
            for kind, count in result.errors[op].items():
                errors[kind] = errors.get(kind, 0) + count
        overall.add(histogram)
        ops[op] = OpResult(Latency.from_histogram(histogram), errors)
    run = RunResult(
        test=workload.name,
        engine="python",
        connections=settings.connections,
        duration_s=settings.duration_s,
        rate=settings.rate,
        ops=ops,
        overall=Latency.from_histogram(overall),
        client_cpu=[round(result.cpu_s / settings.duration_s, 3) for result in collected],
    )
    run.check()
    return run
