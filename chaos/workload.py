"""The clients: threads that write and read through the current primary as fast as they can
and record every operation, its outcome included, in the History.

Two kinds of client: durable writers put each value under a key of its own (`dur:...`),
so every acknowledged write can be looked for afterwards; register clients write unique
values to and read a few hot keys (`reg:...`), whose histories are checked for
linearizability.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kvstore.client import Client, ClientError, OutcomeUnknown, Retry

from .client import NodeClients
from .history import DURABLE_PREFIX, REGISTER_PREFIX, History, OpKind, Outcome

Target = Callable[[], tuple[str, str]]
NO_RETRY = Retry(attempts=1)  # the node clients should use now: (name, url)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    durable_clients: int = 2
    register_clients: int = 3
    register_keys: int = 3
    read_fraction: float = 0.5
    # Short, so that a paused node turns requests into unknown outcomes rather than a stall.
    request_timeout_s: float = 2.0
    # After a refused connection: the node is down, do not spin.
    backoff_s: float = 0.05
    stop_timeout_s: float = 10.0


class Workload:
    def __init__(
        self, history: History, clients: NodeClients, target: Target, seed: int, config: WorkloadConfig
    ) -> None:
        self._history = history
        self._clients = clients
        self._target = target
        self._config = config
        self._halt = threading.Event()
        self._threads = [
            threading.Thread(target=self._durable, args=(n,), name=f"durable-{n}", daemon=True)
            for n in range(config.durable_clients)
        ] + [
            threading.Thread(
                target=self._register,
                args=(config.durable_clients + n, random.Random(seed * 1000 + n)),
                name=f"register-{n}",
                daemon=True,
            )
            for n in range(config.register_clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(self._config.stop_timeout_s)
            if thread.is_alive():
                raise RuntimeError(f"workload client {thread.name} did not stop")

    def _durable(self, client: int) -> None:
        with _Session(self._clients, self._config.request_timeout_s) as session:
            n = 0
            while not self._halt.is_set():
                self._write(session, client, f"{DURABLE_PREFIX}{client}:{n}", f"{client}-{n}")
                n += 1

    def _register(self, client: int, rng: random.Random) -> None:
        keys = [f"{REGISTER_PREFIX}{n}" for n in range(self._config.register_keys)]
        with _Session(self._clients, self._config.request_timeout_s) as session:
            n = 0
            while not self._halt.is_set():
                key = rng.choice(keys)
                if rng.random() < self._config.read_fraction:
                    self._read(session, client, key)
                else:
                    self._write(session, client, key, f"{client}-{n}")
                n += 1

    def _write(self, session: _Session, client: int, key: str, value: str) -> None:
        node, url = self._target()
        start_s = self._history.clock.now()
        outcome, commit_lsn, error = session.put(url, key, value)
        end_s = self._history.clock.now()
        record = dict(client=client, kind=OpKind.WRITE, key=key, value=value, node=node)
        self._history.record(
            **record, start_s=start_s, end_s=end_s, outcome=outcome, commit_lsn=commit_lsn, error=error
        )
        self._after(outcome)

    def _read(self, session: _Session, client: int, key: str) -> None:
        node, url = self._target()
        start_s = self._history.clock.now()
        outcome, value, error = session.get(url, key)
        end_s = self._history.clock.now()
        record = dict(client=client, kind=OpKind.READ, key=key, value=value, node=node)
        self._history.record(**record, start_s=start_s, end_s=end_s, outcome=outcome, error=error)
        self._after(outcome)

    def _after(self, outcome: Outcome) -> None:
        if outcome is not Outcome.OK:
            self._halt.wait(self._config.backoff_s)


class _Session:
    """The workload's kvstore.client clients (one per node URL, shared by the threads: one
    login per node), each pinned to its node and never retrying: the history records each
    request once, on the node it went to."""

    def __init__(self, clients: NodeClients, timeout_s: float) -> None:
        self._clients = clients
        self._timeout_s = timeout_s

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # the clients are the run's (NodeClients.close)

    def _client(self, url: str) -> Client:
        return self._clients.pinned(url, self._timeout_s, NO_RETRY)

    def put(self, url: str, key: str, value: str) -> tuple[Outcome, str | None, str | None]:
        """The write's outcome, its commit LSN if acknowledged, and what went wrong if anything."""
        try:
            return Outcome.OK, self._client(url).put(key, value).commit_lsn, None
        except ClientError as error:
            return _outcome(error), None, repr(error)

    def get(self, url: str, key: str) -> tuple[Outcome, str | None, str | None]:
        """The read's outcome, the value it saw (None: no such key), and what went wrong if anything."""
        try:
            item = self._client(url).get(key)
        except ClientError as error:
            return _outcome(error), None, repr(error)
        return Outcome.OK, None if item is None else item.value.decode(), None


def _outcome(error: ClientError) -> Outcome:
    """Sent and unanswered (timeout, connection lost), or 5xx (e.g. committed locally but not
    confirmed by the synchronous replica): unknown. Never sent, or refused: failed."""
    if isinstance(error, OutcomeUnknown) or (error.status is not None and error.status >= 500):
        return Outcome.UNKNOWN
    return Outcome.FAILED
