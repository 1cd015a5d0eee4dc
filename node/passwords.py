"""argon2id password hashing with explicit, configurable parameters, on threads of its own.

The parameters live in the hash string itself, so a node whose settings changed can
tell which stored hashes were made with older ones and rehash them at the next login
(when the password is in hand); nothing else ever sees a password.

A hash costs tens of milliseconds of CPU and tens of MiB, and anyone who can reach the
login route can ask for one. So hashes run in a `HashingPool`: a few threads of their own
(never the event loop's default executor, which replication's WAL reads and base backups
use) with a bounded number of hashes waiting; beyond it a login is refused at once instead
of queueing for seconds behind a flood.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import metrics


@dataclass(frozen=True, slots=True)
class HashParameters:
    """RFC 9106's second recommendation (memory-constrained) by default."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4


class Passwords:
    def __init__(self, parameters: HashParameters) -> None:
        self.parameters = parameters
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """True when the password matches; any malformed hash is simply a mismatch."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


T = TypeVar("T")


class HashingBusy(Exception):
    """Every hashing thread is busy and the queue is full: refuse the login now."""


class HashingPool:
    """`threads` hashing threads and at most `queue_max` hashes waiting for one."""

    def __init__(self, threads: int, queue_max: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._capacity = threads + queue_max
        self._pending = 0  # submitted and not finished; a cancelled caller does not end a running hash
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, work: Callable[..., T], *args: object, bounded: bool = True) -> T:
        """`work(*args)` on a hashing thread. HashingBusy when full, unless `bounded` is False
        (an administrator's own request: it waits its turn rather than be refused in a flood)."""
        with self._lock:
            if bounded and self._pending >= self._capacity:
                raise HashingBusy
            self._pending += 1
        metrics.LOGIN_HASHES.inc()
        future: Future[T] = self._executor.submit(work, *args)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _: object) -> None:  # any Future: only its end counts
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
