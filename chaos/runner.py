"""One run of one scenario: start the cluster, run the workload while the scenario injects
its faults, stop the load, read the final state, and judge it with the checkers.

`Run` is what a scenario's body works with; every fault it injects through it is recorded
with its times.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kvstore.client import AsyncClient, ClientError

from .backend import Backend, ClusterSpec, Corruption, WalDamage
from .checkers import Verdict, check_convergence, check_durability, check_linearizability, expectation, written_keys
from .client import NodeClient, NodeClients
from .history import Clock, Fault, History
from .workload import Workload, WorkloadConfig

CONVERGENCE_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2
FINAL_READ_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    body: Callable[[Run], None]
    spec: ClusterSpec = field(default_factory=ClusterSpec)


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    backend: str
    seed: int
    duration_s: float
    started_at: float  # wall clock, for people
    wall_s: float
    history: History
    verdicts: list[Verdict]
    recovery_s: list[float]
    promotion_s: list[float]
    error: str | None = None  # the run itself broke (a node never came back, ...)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.verdicts) and all(verdict.passed for verdict in self.verdicts)


class Run:
    """The cluster under fault: the current primary, and fault helpers that record themselves."""

    def __init__(self, backend: Backend, spec: ClusterSpec, history: History, duration_s: float, seed: int) -> None:
        self.backend = backend
        self.history = history
        self.duration_s = duration_s
        self.random = random.Random(seed)  # the scenario's own choices (which node, which fault next)
        self.primary = spec.primary
        self.members = list(spec.nodes)  # the nodes that must agree at the end
        self.clients = NodeClients(*backend.credentials())
        self.expectations: list[Verdict] = []
        self.recovery_s: list[float] = []
        self.promotion_s: list[float] = []

    def target(self) -> tuple[str, str]:
        return self.primary, self.backend.url(self.primary)

    def client(self, node: str) -> NodeClient:
        return NodeClient(self.backend.url(node), self.clients)

    def load(self, fraction: float) -> None:
        """Let the workload run for this fraction of the run's duration."""
        time.sleep(fraction * self.duration_s)

    def replicas(self) -> list[str]:
        return [node for node in self.members if node != self.primary]

    def expect(self, name: str, passed: bool, summary: str, **details: Any) -> None:
        self.expectations.append(expectation(name, passed, summary, **details))

    @contextmanager
    def fault(self, kind: str, node: str, **detail: Any) -> Iterator[Fault]:
        fault = self.history.fault(kind, node, **detail)
        try:
            yield fault
        finally:
            fault.end_s = self.history.clock.now()

    def kill(self, node: str) -> None:
        with self.fault("kill", node):
            self.backend.kill(node)

    def restart(self, node: str) -> None:
        with self.fault("restart", node) as fault:
            self.backend.restart(node)
        self.recovery_s.append(round(fault.end_s - fault.start_s, 3))  # type: ignore[operator]

    def promote(self, node: str) -> None:
        with self.fault("promote", node) as fault:
            answer = self.backend.promote(node)
            self.primary = node
        fault.detail["timeline"] = answer.get("timeline")
        self.promotion_s.append(round(fault.end_s - fault.start_s, 3))  # type: ignore[operator]

    def corrupt_wal(self, node: str, kind: Corruption) -> WalDamage:
        with self.fault("corrupt-wal", node) as fault:
            damage = self.backend.corrupt_wal(node, kind)
            fault.detail.update(damage.to_json())
        return damage


def execute(scenario: Scenario, backend: Backend, duration_s: float, seed: int, workload: WorkloadConfig) -> RunResult:
    started_at = time.time()
    history = History(Clock())
    verdicts: list[Verdict] = []
    run: Run | None = None
    error = None
    try:
        backend.start(scenario.spec)
        run = Run(backend, scenario.spec, history, duration_s, seed)
        clients = Workload(history, run.clients, run.target, seed, workload)
        clients.start()
        try:
            scenario.body(run)
        finally:
            clients.stop()
        verdicts = [*run.expectations, *judge(run)]
    except Exception:  # the run broke (a node never came back, ...): reported as such, never as a pass
        error = traceback.format_exc()
        if run is not None:
            verdicts = run.expectations
    finally:
        if run is not None:
            run.clients.close()
        backend.stop()
    return RunResult(
        scenario,
        backend.name,
        seed,
        duration_s,
        started_at,
        history.clock.now(),
        history,
        verdicts,
        run.recovery_s if run else [],
        run.promotion_s if run else [],
        error,
    )


def judge(run: Run) -> list[Verdict]:
    """The checkers' verdicts, once the load has stopped: convergence first, since the
    durability check reads the primary and the replicas must have caught up by then anyway."""
    ops = run.history.ops
    convergence = check_convergence(run.primary, settled_digests(run))
    url = run.backend.url(run.primary)
    final = asyncio.run(read_values(url, run.clients, written_keys(ops)))
    return [check_durability(ops, final), convergence, check_linearizability(ops)]


def settled_digests(run: Run) -> dict[str, dict[str, Any] | None]:
    """Every member's digest, once they agree or the wait is over (the last ones seen)."""
    deadline = time.monotonic() + CONVERGENCE_TIMEOUT_S
    while True:
        digests: dict[str, dict[str, Any] | None] = {}
        for node in run.members:
            try:
                digests[node] = run.client(node).digest()
            except ClientError:
                digests[node] = None
        if check_convergence(run.primary, digests).passed or time.monotonic() > deadline:
            return digests
        time.sleep(POLL_INTERVAL_S)


async def read_values(url: str, clients: NodeClients, keys: list[str]) -> dict[str, str | None]:
    limit = asyncio.Semaphore(FINAL_READ_CONCURRENCY)
    async with AsyncClient(
        url, username=clients.username, password=clients.password, pinned=True, timeout_s=30
    ) as client:

        async def read(key: str) -> tuple[str, str | None]:
            async with limit:
                item = await client.get(key)
            return key, None if item is None else item.value.decode()

        return dict(await asyncio.gather(*(read(key) for key in keys)))
