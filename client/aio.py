"""`AsyncClient`: the asyncio client, over aiohttp (measured against httpx's async client in
bench/results/RESULTS-client-transports.md). Same surface and decisions as `Client` (core.py);
only the sending differs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractContextManager
from typing import Any

import aiohttp

from . import protocol
from .core import Attempts, Core, ReadFrom, Retry, Session, WatchPosition
from .errors import Unavailable
from .models import Item, KeyInfo, TxnOp, TxnResult, WriteResult
from .protocol import Answer, Call
from .sync import STATUS_TIMEOUT_S, USER_AGENT, WATCH_READ_TIMEOUT_S, failure_reason


class AsyncClient:
    """`Client`'s surface for asyncio: `await kv.get(key)`, `async for event in kv.watch(prefix)`.
    Create and use it inside a running event loop; `async with`, or `await close()`."""

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
        max_connections: int = 100,
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
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._watch_timeout = aiohttp.ClientTimeout(connect=connect_timeout_s, sock_read=WATCH_READ_TIMEOUT_S)
        self._status_timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None
        self._login_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def primary(self) -> str | None:
        return self._core.primary

    def session(self) -> AbstractContextManager[Session]:
        """`with kv.session():` reads in this task see every write it made in the block."""
        return self._core.session()

    # -- data -------------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        return protocol.item(key, await self._send(protocol.get(key)))

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        ttl: int | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> WriteResult:
        return protocol.written(await self._send(protocol.put(key, value, ttl, if_version, if_absent)))

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        return protocol.deleted(await self._send(protocol.delete(key, if_version)))

    async def incr(self, key: str, by: int = 1) -> int:
        return protocol.incremented(await self._send(protocol.incr(key, by)))

    async def txn(self, ops: Iterable[TxnOp]) -> TxnResult:
        return protocol.txn_result(await self._send(protocol.txn(list(ops))))

    async def keys(self, prefix: str = "", *, page_size: int = 100) -> AsyncIterator[KeyInfo]:
        after: str | None = None
        while True:
            infos, after = protocol.key_page(await self._send(protocol.keys(prefix, after, page_size)))
            for info in infos:
                yield info
            if after is None:
                return

    async def status(self) -> dict[str, Any]:
        return (await self._send(protocol.status())).document()

    async def request(self, call: Call) -> Answer:
        return await self._send(call)

    async def watch(
        self, prefix: str = "", from_lsn: str | None = None, *, progress: bool = False
    ) -> AsyncIterator[Any]:
        """`Client.watch`: events (and with `progress`, `Progress` marks), resumed after a drop."""
        position = WatchPosition(from_lsn)
        failures = 0
        while True:
            attempts = Attempts(protocol.watch(prefix, position.resume_from()), count=failures + 1)
            url = await self._target(attempts)
            call = attempts.call
            try:
                async with self._session().get(
                    url + call.path, params=call.params, headers=self._core.headers(call), timeout=self._watch_timeout
                ) as response:
                    if response.status != 200:
                        step = self._core.after_answer(attempts, await _answer(response, url))
                        if step.error is not None:
                            raise step.error
                        failures += 1
                        await asyncio.sleep(step.delay_s)
                        continue
                    failures = 0
                    async for line in _lines(response):
                        item, ended = position.take(line, url, progress)
                        if item is not None:
                            yield item
                        if ended:
                            break
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                step = self._core.after_failure(attempts, url, failure_reason(exc), sent=False)
                if step.error is not None:
                    raise step.error from None
                await asyncio.sleep(step.delay_s)

    # -- sending ----------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on first use: aiohttp wants a running loop
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"user-agent": USER_AGENT}
            )
        return self._http

    async def _send(self, call: Call) -> Answer:
        attempts = Attempts(call)
        while True:
            attempts.count += 1
            url = await self._target(attempts)
            try:
                timeout = self._timeout if call.timeout_s is None else aiohttp.ClientTimeout(total=call.timeout_s)
                async with self._session().request(
                    call.method,
                    url + call.path,
                    params=call.params,
                    headers=self._core.headers(call),
                    data=call.body,
                    timeout=timeout,
                ) as response:
                    answer = await _answer(response, url)
            except (aiohttp.ClientError, TimeoutError) as exc:
                sent = not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
                step = self._core.after_failure(attempts, url, failure_reason(exc), sent)
            else:
                step = self._core.after_answer(attempts, answer)
            if step.answer is not None:
                return step.answer
            if step.error is not None:
                raise step.error
            if step.relogin:
                await self._login(force=True)
            if step.rediscover:
                self._core.forget_primary()
            await asyncio.sleep(step.delay_s)

    async def _target(self, attempts: Attempts) -> str:
        if self._core.needs_login():
            await self._login()
        url = self._core.target(attempts)
        while url is None:
            reached = await self._discover()
            url = self._core.target(attempts)
            if url is None:
                if attempts.count >= self._core.retry.attempts:
                    raise self._core.no_primary(attempts, reached)
                await asyncio.sleep(self._core.retry.delay(attempts.count))
                attempts.count += 1
        attempts.tried.add(url)
        return url

    async def _discover(self) -> int:
        urls = self._core.discovery_candidates()
        found = await asyncio.gather(*(self._status_of(url) for url in urls))
        statuses = {url: status for url, status in zip(urls, found) if status}
        for url in self._core.named_primaries(statuses):
            if status := await self._status_of(url):
                statuses[url] = status
        self._core.learn(statuses)
        return len(statuses)

    async def _status_of(self, url: str) -> dict[str, Any] | None:
        call = protocol.status()
        try:
            async with self._session().get(
                url + call.path, headers=self._core.headers(call), timeout=self._status_timeout
            ) as response:
                answer = await _answer(response, url)
        except (aiohttp.ClientError, TimeoutError):
            return None
        document = answer.json() if answer.status == 200 else None
        return document if isinstance(document, dict) else None

    async def _login(self, force: bool = False) -> None:
        """One login at a time: concurrent calls that find the token stale wait for it."""
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            if not force and not self._core.needs_login():
                return
            call = self._core.login_call()
            reasons = []
            for url in self._core.discovery_candidates():
                try:
                    async with self._session().post(
                        url + call.path,
                        headers=call.headers,
                        data=call.body,
                        timeout=aiohttp.ClientTimeout(total=call.timeout_s),
                    ) as response:
                        answer = await _answer(response, url)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reasons.append(f"{url}: {failure_reason(exc)}")
                    continue
                reason = self._core.after_login(answer)
                if reason is None:
                    return
                reasons.append(reason)
            raise Unavailable(f"cannot log in: {'; '.join(reasons)}", "unreachable")


async def _answer(response: aiohttp.ClientResponse, url: str) -> Answer:
    return Answer(response.status, response.headers, await response.read(), url)


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The response's lines, however long (aiohttp's own readline stops at its buffer size);
    a long line's chunks are joined once, not re-copied with every chunk."""
    parts: list[bytes] = []
    async for chunk in response.content.iter_any():
        while (end := chunk.find(b"\n")) >= 0:
            parts.append(chunk[:end])
            yield b"".join(parts)
            parts, chunk = [], chunk[end + 1 :]
        if chunk:
            parts.append(chunk)
