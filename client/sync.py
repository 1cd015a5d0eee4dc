"""`Client`: the blocking client, over httpx (one connection pool for every node)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal, overload

import httpx

from . import protocol
from .core import Attempts, Core, ReadFrom, Retry, Session, WatchPosition
from .errors import Unavailable
from .models import Event, Item, KeyInfo, TxnOp, TxnResult, WriteResult
from .protocol import Answer, Call, Progress

USER_AGENT = "kvstore-client"
WATCH_READ_TIMEOUT_S = 30.0  # the node sends progress every 5 s: six missed ones mean it is gone
STATUS_TIMEOUT_S = 2.0  # finding the primary asks every node; a dead one must not hold it long


def failure_reason(exc: BaseException) -> str:
    """The innermost OS error ("connection refused"), else the exception's own words."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


class Client:
    """A KVStore++ client for one cluster. `urls`: any of its nodes (a replica's 421 leads to
    the primary); credentials: a `token` (or an `api_key`, which is one), or `username` and
    `password` (it logs in, and again before the token expires). `read_from`: "primary",
    "replica" or "any" node. `pinned`: every call goes to the first URL and a 421 is an error
    (tools that act on the node they are told: kvctl, kvchaos). Use as a context manager, or
    call `close`."""

    def __init__(
        self,
        urls: list[str] | str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        read_from: ReadFrom = "primary",
        timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        retry: Retry | None = None,
        pinned: bool = False,
    ) -> None:
        self._core = Core(
            urls,
            token=token or api_key,
            username=username,
            password=password,
            read_from=read_from,
            retry=retry or Retry(),
            pinned=pinned,
        )
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._watch_timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s, read=WATCH_READ_TIMEOUT_S)
        self._http = httpx.Client(headers={"user-agent": USER_AGENT}, timeout=self._timeout)
        self._login_lock = threading.Lock()  # threads that find the token stale wait for one login

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def primary(self) -> str | None:
        """The node the client takes for the primary now (None: it will look on the next write)."""
        return self._core.primary

    def session(self) -> AbstractContextManager[Session]:
        """`with client.session():` reads see every write made in the block, on any node."""
        return self._core.session()

    # -- data -------------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        return protocol.item(key, self._send(protocol.get(key)))

    def put(
        self,
        key: str,
        value: bytes | str,
        *,
        ttl: int | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> WriteResult:
        return protocol.written(self._send(protocol.put(key, value, ttl, if_version, if_absent)))

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """True if the key was there and is now deleted; False if it was not there."""
        return protocol.deleted(self._send(protocol.delete(key, if_version)))

    def incr(self, key: str, by: int = 1) -> int:
        return protocol.incremented(self._send(protocol.incr(key, by)))

    def txn(self, ops: Iterable[TxnOp]) -> TxnResult:
        """Every op or none (`Set`, `Delete`, `Check` from kvstore.client)."""
        return protocol.txn_result(self._send(protocol.txn(list(ops))))

    def keys(self, prefix: str = "", *, page_size: int = 100) -> Iterator[KeyInfo]:
        """Every key under `prefix` that the caller may read, in key order, page by page."""
        after: str | None = None
        while True:
            infos, after = protocol.key_page(self._send(protocol.keys(prefix, after, page_size)))
            yield from infos
            if after is None:
                return

    def status(self) -> dict[str, Any]:
        return self._send(protocol.status()).document()

    def request(self, call: Call) -> Answer:
        """Any other route (the admin API): `call` says the method, path and expected statuses."""
        return self._send(call)

    def stream_lines(self, call: Call) -> Iterator[str]:
        """The non-empty lines of a long NDJSON answer (the admin WAL stream), as sent; no resume."""
        attempts = Attempts(call, count=1)
        url = self._target(attempts)
        try:
            with self._http.stream(
                call.method,
                url + call.path,
                params=call.params,
                headers=self._core.headers(call),
                timeout=self._watch_timeout,
            ) as response:
                if response.status_code not in call.ok:
                    response.read()
                    raise _answer(response, url).error()
                for line in response.iter_lines():
                    if line.strip():
                        yield line
        except httpx.TransportError as exc:
            step = self._core.after_failure(attempts, url, failure_reason(exc), sent=False)
            assert step.error is not None
            raise step.error from None

    @overload
    def watch(self, prefix: str = "", from_lsn: str | None = None) -> Iterator[Event]: ...

    @overload
    def watch(self, prefix: str, from_lsn: str | None, *, progress: Literal[True]) -> Iterator[Event | Progress]: ...

    def watch(self, prefix: str = "", from_lsn: str | None = None, *, progress: bool = False) -> Iterator[Any]:
        """The committed changes under `prefix`, in commit order, after `from_lsn` (else from now);
        reconnects by itself (to another node if need be) and resumes where it was. Raises
        `Compacted` when the WAL no longer reaches back to where it must resume. `progress`:
        also yield the node's `Progress` marks (everything up to its LSN has been sent)."""
        position = WatchPosition(from_lsn)
        failures = 0
        while True:
            attempts = Attempts(protocol.watch(prefix, position.resume_from()), count=failures + 1)
            url = self._target(attempts)
            call = attempts.call
            try:
                with self._http.stream(
                    "GET",
                    url + call.path,
                    params=call.params,
                    headers=self._core.headers(call),
                    timeout=self._watch_timeout,
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        step = self._core.after_answer(attempts, _answer(response, url))
                        if step.error is not None:
                            raise step.error
                        failures += 1
                        time.sleep(step.delay_s)
                        continue
                    failures = 0
                    for line in response.iter_lines():
                        item, ended = position.take(line.encode(), url, progress)
                        if item is not None:
                            yield item
                        if ended:
                            break
            except httpx.TransportError as exc:
                failures += 1
                step = self._core.after_failure(attempts, url, failure_reason(exc), sent=False)
                if step.error is not None:
                    raise step.error from None
                time.sleep(step.delay_s)

    # -- sending ----------------------------------------------------------------------------

    def _send(self, call: Call) -> Answer:
        attempts = Attempts(call)
        while True:
            attempts.count += 1
            url = self._target(attempts)
            try:
                response = self._http.request(
                    call.method,
                    url + call.path,
                    params=call.params,
                    headers=self._core.headers(call),
                    content=call.body,
                    timeout=self._timeout if call.timeout_s is None else call.timeout_s,
                )
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                step = self._core.after_failure(attempts, url, failure_reason(exc), sent)
            else:
                step = self._core.after_answer(attempts, _answer(response, url))
            if step.answer is not None:
                return step.answer
            if step.error is not None:
                raise step.error
            if step.relogin:
                self._login(force=True)
            if step.rediscover:
                self._core.forget_primary()
            time.sleep(step.delay_s)

    def _target(self, attempts: Attempts) -> str:
        """The node for this attempt, logging in and finding the primary first when needed."""
        if self._core.needs_login():
            self._login()
        url = self._core.target(attempts)
        while url is None:
            reached = self._discover()
            url = self._core.target(attempts)
            if url is None:
                if attempts.count >= self._core.retry.attempts:
                    raise self._core.no_primary(attempts, reached)
                time.sleep(self._core.retry.delay(attempts.count))
                attempts.count += 1
        attempts.tried.add(url)
        return url

    def _discover(self) -> int:
        """Ask every node known for its role; returns how many answered."""
        statuses = {url: status for url in self._core.discovery_candidates() if (status := self._status_of(url))}
        for url in self._core.named_primaries(statuses):  # a primary the replicas follow, not in the list
            if status := self._status_of(url):
                statuses[url] = status
        self._core.learn(statuses)
        return len(statuses)

    def _status_of(self, url: str) -> dict[str, Any] | None:
        call = protocol.status()
        try:
            response = self._http.get(url + call.path, headers=self._core.headers(call), timeout=STATUS_TIMEOUT_S)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        document = _answer(response, url).json()
        return document if isinstance(document, dict) else None

    def _login(self, force: bool = False) -> None:
        with self._login_lock:
            if not force and not self._core.needs_login():
                return
            call = self._core.login_call()
            reasons = []
            for url in self._core.discovery_candidates():
                try:
                    response = self._http.post(
                        url + call.path, headers=call.headers, content=call.body, timeout=call.timeout_s
                    )
                except httpx.TransportError as exc:
                    reasons.append(f"{url}: {failure_reason(exc)}")
                    continue
                reason = self._core.after_login(_answer(response, url))
                if reason is None:
                    return
                reasons.append(reason)
            raise Unavailable(f"cannot log in: {'; '.join(reasons)}", "unreachable")


def _answer(response: httpx.Response, url: str) -> Answer:
    return Answer(response.status_code, response.headers, response.content, url)
