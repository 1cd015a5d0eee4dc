"""What `Client` and `AsyncClient` decide alike, without I/O: which node a call goes to, the
headers it carries (credentials, the session's LSN), and what to do after each attempt
(return, retry after a delay, find the primary again, log in again, or raise).
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from . import protocol
from .errors import ClientError, Compacted, OutcomeUnknown, ReadOnlyReplica, TooManyRequests, Unavailable
from .models import Event
from .protocol import Answer, Call

ReadFrom = Literal["primary", "replica", "any"]
RENEW_BEFORE_S = 60.0  # a login token is renewed when it has less than this left


@dataclass(frozen=True, slots=True)
class Retry:
    """Capped exponential backoff with full jitter (the AWS architecture blog's), `attempts` in all."""

    attempts: int = 8
    first_s: float = 0.05
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_s, self.first_s * 2**attempt))


@dataclass(slots=True)
class Session:
    """Read-your-writes: reads in the session wait, on any node, until the node has applied the
    newest write the session saw (`X-KV-Min-LSN`)."""

    min_lsn: str | None = None

    def observe(self, lsn: str | None) -> None:
        if lsn and (self.min_lsn is None or protocol.parse_lsn(lsn) > protocol.parse_lsn(self.min_lsn)):
            self.min_lsn = lsn


_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar("kvstore_client_session", default=None)


@dataclass(slots=True)
class Step:
    """What to do after an attempt: `answer` to return, `error` to raise, or else retry after
    `delay_s` (finding the primary again first when `rediscover`, logging in when `relogin`)."""

    answer: Answer | None = None
    error: ClientError | None = None
    delay_s: float = 0.0
    rediscover: bool = False
    relogin: bool = False


@dataclass(slots=True)
class Attempts:
    """One call's attempts so far."""

    call: Call
    count: int = 0
    maybe_sent: bool = False  # a write went out and its answer was lost: it may have committed
    relogged: bool = False
    tried: set[str] = field(default_factory=set)


class Core:
    def __init__(
        self,
        urls: list[str] | str,
        *,
        token: str | None,
        username: str | None,
        password: str | None,
        read_from: ReadFrom,
        retry: Retry,
        pinned: bool = False,
    ) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise ValueError("give at least one node URL")
        if token is not None and username is not None:
            raise ValueError("give a token (or API key) or a user name and password, not both")
        if (username is None) != (password is None):
            raise ValueError("a user name needs a password, and a password a user name")
        self.urls = [url.rstrip("/") for url in listed]
        self.read_from = read_from
        self.retry = retry
        self.pinned = pinned
        self.primary: str | None = self.urls[0]  # a guess until a 421 or a failure says otherwise
        self.replicas: list[str] = []
        self._token = token
        self._token_expires_at: float | None = None
        self._login = None if username is None or password is None else (username, password)
        self._next_replica = 0
        self._discovered = False

    # -- where calls go ---------------------------------------------------------------------

    def target(self, attempts: Attempts) -> str | None:
        """The node for the next attempt; None: find the primary (and the replicas) first."""
        call = attempts.call
        if self.pinned:
            return self.urls[0]
        if call.write or self.read_from == "primary":
            return self.primary
        if not self._discovered:
            return None
        pool = self.replicas if self.read_from == "replica" else [*self.replicas, *filter(None, [self.primary])]
        if not pool:
            return self.primary
        fresh = [url for url in pool if url not in attempts.tried] or pool
        self._next_replica += 1
        return fresh[self._next_replica % len(fresh)]

    def forget_primary(self) -> None:
        """Look for the primary again before the next write (never, when pinned to one node)."""
        if not self.pinned:
            self.primary = None

    def discovery_candidates(self) -> list[str]:
        return list(dict.fromkeys([*self.urls, *self.replicas, *([self.primary] if self.primary else [])]))

    def learn(self, statuses: dict[str, dict[str, Any]]) -> None:
        """Take the primary and the replicas from the nodes' `/v1/status` documents."""
        primaries = [
            (int(document.get("timeline") or 0), url)
            for url, document in statuses.items()
            if document.get("role") == "primary" and document.get("state") == "running"
        ]
        self.primary = max(primaries)[1] if primaries else None
        self.replicas = [url for url, document in statuses.items() if document.get("role") == "replica"]
        self._discovered = True

    def named_primaries(self, statuses: dict[str, dict[str, Any]]) -> list[str]:
        """Primaries the replicas follow that the client was not given: asked next."""
        named = []
        for document in statuses.values():
            replication = document.get("replication") or {}
            url = replication.get("primary")
            if isinstance(url, str) and url.rstrip("/") not in statuses:
                named.append(url.rstrip("/"))
        return list(dict.fromkeys(named))

    # -- credentials and sessions -------------------------------------------------------------

    def needs_login(self) -> bool:
        if self._login is None:
            return False
        return self._token is None or (
            self._token_expires_at is not None and self._token_expires_at - time.time() < RENEW_BEFORE_S
        )

    def login_call(self) -> Call:
        assert self._login is not None
        return protocol.login(*self._login)

    def after_login(self, answer: Answer) -> str | None:
        """Take a login's answer: None once logged in; the reason to try the next node (a 5xx);
        a refusal (wrong password, throttled) raises, since no other node would say otherwise."""
        if answer.status == 200:
            self.logged_in(answer)
            return None
        error = answer.error()
        if answer.status < 500:
            raise error
        return f"{answer.url}: {error.message}"

    def logged_in(self, answer: Answer) -> None:
        document = answer.document()
        self._token = str(document["token"])
        expires_at = document.get("expires_at")
        self._token_expires_at = float(expires_at) if isinstance(expires_at, int | float) else None

    def headers(self, call: Call) -> dict[str, str]:
        headers = dict(call.headers)
        if self.retry.attempts == 1:  # never re-sent: nothing for the node to recognise, or keep
            headers.pop(protocol.IDEMPOTENCY_HEADER, None)
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token}"
        session = _session.get()
        if session is not None and session.min_lsn is not None and not call.write:
            headers[protocol.MIN_LSN_HEADER] = session.min_lsn
        return headers

    @staticmethod
    @contextmanager
    def session() -> Iterator[Session]:
        session = Session()
        token = _session.set(session)
        try:
            yield session
        finally:
            _session.reset(token)

    # -- after an attempt ---------------------------------------------------------------------

    def after_answer(self, attempts: Attempts, answer: Answer) -> Step:
        call = attempts.call
        if answer.status in call.ok:
            session = _session.get()
            if session is not None:
                session.observe(protocol.commit_lsn(answer) or answer.headers.get("x-kv-lsn"))
            return Step(answer=answer)
        error = answer.error()
        last = attempts.count >= self.retry.attempts
        if answer.status == 401 and self._login is not None and not attempts.relogged:
            attempts.relogged = True
            return Step(relogin=True)
        if answer.status == 421:  # a replica, or a fenced primary: nothing was written
            self.forget_primary()
            return Step(error=error) if last else Step(delay_s=self.retry.delay(attempts.count), rediscover=True)
        if answer.status in (429, 503) and not last:
            if isinstance(error, TooManyRequests) and "retry_after_s" not in error.details:
                return Step(error=error)  # throttled with no time given: the caller decides
            delay = float(answer.headers.get("retry-after") or 0) or self.retry.delay(attempts.count)
            return Step(delay_s=delay, rediscover=call.write)
        if answer.status == 504 and call.write:  # logged, but not confirmed in time: it may commit
            attempts.maybe_sent = True
            if not call.retry_safe or last:
                return Step(error=OutcomeUnknown(error.message, error.code, 504, answer.url))
            return Step(delay_s=self.retry.delay(attempts.count), rediscover=True)
        if answer.status == 504 and not last:
            return Step(delay_s=self.retry.delay(attempts.count))
        return Step(error=self._outcome(attempts, error))

    def after_failure(self, attempts: Attempts, url: str, reason: str, sent: bool) -> Step:
        """No answer from `url`: refused or timed out connecting (`sent` False: nothing was done),
        or cut off after the request went out."""
        call = attempts.call
        if url == self.primary:
            self.forget_primary()
        if sent and call.write:
            attempts.maybe_sent = True
            if not call.retry_safe:
                return Step(
                    error=OutcomeUnknown(f"{url}: {reason} after the write was sent", "outcome_unknown", None, url)
                )
        if attempts.count >= self.retry.attempts:
            tries = f" ({attempts.count} attempts)" if attempts.count > 1 else ""
            error = Unavailable(f"cannot reach {url}: {reason}{tries}", "unreachable", None, url, reason=reason)
            return Step(error=self._outcome(attempts, error))
        return Step(delay_s=self.retry.delay(attempts.count), rediscover=call.write or self.primary is None)

    def no_primary(self, attempts: Attempts, reached: int) -> ClientError:
        if reached:
            return ReadOnlyReplica(
                f"none of the {reached} nodes that answered is a writable primary", "read_only", 421, ""
            )
        return self._outcome(attempts, Unavailable(f"no node answered: {', '.join(self.urls)}", "unreachable"))

    @staticmethod
    def _outcome(attempts: Attempts, error: ClientError) -> ClientError:
        """A write whose answer was lost earlier stays unknown, whatever later attempts met."""
        if attempts.maybe_sent and isinstance(error, Unavailable):
            return OutcomeUnknown(error.message, "outcome_unknown", error.status, error.url)
        return error


class WatchPosition:
    """How far a watch has delivered, so that a resumed stream repeats nothing and misses
    nothing, even when the connection dropped inside a transaction (whose changes share an LSN):
    it resumes after the last LSN delivered in full and skips what it already gave of the next."""

    def __init__(self, from_lsn: str | None) -> None:
        self.done = from_lsn
        self._open_lsn: str | None = None  # the LSN whose changes are being delivered
        self._open_count = 0
        self._skip_lsn: str | None = None
        self._skip_left = 0

    def resume_from(self) -> str | None:
        self._skip_lsn, self._skip_left = self._open_lsn, self._open_count
        self._open_lsn, self._open_count = None, 0
        return self.done

    def accept(self, event: Event) -> bool:
        if self._skip_left and event.lsn == self._skip_lsn:
            self._skip_left -= 1
            self._open_lsn = event.lsn
            self._open_count += 1
            return False
        self._skip_left = 0
        if event.lsn != self._open_lsn:
            if self._open_lsn is not None:
                self.done = self._open_lsn
            self._open_lsn, self._open_count = event.lsn, 0
        self._open_count += 1
        return True

    def progress(self, lsn: str) -> None:
        self.done, self._open_lsn, self._open_count, self._skip_left = lsn, None, 0, 0

    def take(self, line: bytes, url: str, progress: bool) -> tuple[Event | protocol.Progress | None, bool]:
        """One line of the stream: what to hand the caller (None: nothing), and whether the
        node ended the stream (reconnect and resume). A compacted WAL raises `Compacted`."""
        parsed = protocol.watch_line(line)
        if isinstance(parsed, Event):
            return (parsed if self.accept(parsed) else None), False
        if isinstance(parsed, protocol.Progress):
            self.progress(parsed.lsn)
            return (parsed if progress else None), False
        if isinstance(parsed, protocol.Cancelled):
            if parsed.compacted:
                raise Compacted(parsed.reason, "compacted", 410, url)
            return None, True
        return None, False
