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

import httpx

from .client import Tokens
from .history import DURABLE_PREFIX, REGISTER_PREFIX, History, OpKind, Outcome

Target = Callable[[], tuple[str, str]]  # the node clients should use now: (name, url)


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
    def __init__(self, history: History, tokens: Tokens, target: Target, seed: int, config: WorkloadConfig) -> None:
        self._history = history
        self._tokens = tokens
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
        with _Session(self._tokens, self._config.request_timeout_s) as session:
            n = 0
            while not self._halt.is_set():
                self._write(session, client, f"{DURABLE_PREFIX}{client}:{n}", f"{client}-{n}")
                n += 1

    def _register(self, client: int, rng: random.Random) -> None:
        keys = [f"{REGISTER_PREFIX}{n}" for n in range(self._config.register_keys)]
        with _Session(self._tokens, self._config.request_timeout_s) as session:
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
        outcome, response, error = session.send("PUT", url, f"/v1/kv/{key}", value.encode())
        end_s = self._history.clock.now()
        commit_lsn = response.headers.get("x-kv-commit-lsn") if response is not None else None
        record = dict(client=client, kind=OpKind.WRITE, key=key, value=value, node=node)
        self._history.record(
            **record, start_s=start_s, end_s=end_s, outcome=outcome, commit_lsn=commit_lsn, error=error
        )
        self._after(outcome)

    def _read(self, session: _Session, client: int, key: str) -> None:
        node, url = self._target()
        start_s = self._history.clock.now()
        outcome, response, error = session.send("GET", url, f"/v1/kv/{key}")
        end_s = self._history.clock.now()
        value = response.text if response is not None and response.status_code == 200 else None
        record = dict(client=client, kind=OpKind.READ, key=key, value=value, node=node)
        self._history.record(**record, start_s=start_s, end_s=end_s, outcome=outcome, error=error)
        self._after(outcome)

    def _after(self, outcome: Outcome) -> None:
        if outcome is not Outcome.OK:
            self._halt.wait(self._config.backoff_s)


class _Session:
    """One client's HTTP connections, one pool per node URL."""

    def __init__(self, tokens: Tokens, timeout_s: float) -> None:
        self._tokens = tokens
        self._timeout_s = timeout_s
        self._clients: dict[str, httpx.Client] = {}

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self._clients.values():
            client.close()

    def send(
        self, method: str, url: str, path: str, body: bytes | None = None
    ) -> tuple[Outcome, httpx.Response | None, str | None]:
        """The request's outcome, its response if any, and what went wrong if anything."""
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = httpx.Client(base_url=url, timeout=self._timeout_s)
        try:
            headers = self._tokens.headers(url)
        except httpx.HTTPError as error:  # the node is down or restarting: nothing was sent
            return Outcome.FAILED, None, f"login: {error!r}"
        try:
            response = client.request(method, path, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            return Outcome.FAILED, None, repr(error)  # never reached a node
        except httpx.TransportError as error:
            return Outcome.UNKNOWN, None, repr(error)  # sent; the node may have acted on it
        if response.status_code == 401:
            self._tokens.forget(url)
        if response.status_code < 400 or (method == "GET" and response.status_code == 404):
            return Outcome.OK, response, None
        if response.status_code >= 500:
            # 503/504: e.g. committed locally but not confirmed by the synchronous replica.
            return Outcome.UNKNOWN, response, f"HTTP {response.status_code}"
        return Outcome.FAILED, response, f"HTTP {response.status_code}"
