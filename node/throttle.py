"""Failed-login throttling: per-user and per-address lockout after repeated failures. Pure.

Each key (a user name, or a client address) keeps the times of its recent failures;
`max_failures` within `window_s` locks the key for `lockout_s`. A locked key is
refused even with the right password, until the lockout ends. Unknown and known user
names are treated the same, so the answer never tells whether a user exists. Memory is
bounded: beyond `max_tracked_keys` the oldest entries are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failures: int = 5
    window_s: float = 300.0
    lockout_s: float = 300.0
    max_tracked_keys: int = 100_000


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def retry_after_s(self, keys: tuple[str, ...], now: float) -> float:
        """Seconds until every key may try again; 0 when none is locked."""
        wait = 0.0
        for key in keys:
            until = self._locked_until.get(key)
            if until is not None:
                if until <= now:
                    del self._locked_until[key]
                else:
                    wait = max(wait, until - now)
        return wait

    def failed(self, keys: tuple[str, ...], now: float) -> list[str]:
        """Count a failure against each key; returns the keys this failure locked."""
        locked = []
        for key in keys:
            times = self._failures.pop(key, None) or deque()
            times.append(now)
            while times and times[0] <= now - self.policy.window_s:
                times.popleft()
            if len(times) >= self.policy.max_failures:
                self._locked_until[key] = now + self.policy.lockout_s
                times.clear()
                locked.append(key)
            else:
                self._failures[key] = times  # re-inserted last: the OrderedDict is oldest-first
        while len(self._failures) > self.policy.max_tracked_keys:
            self._failures.popitem(last=False)
        return locked

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def unlock(self, key: str) -> None:
        self._locked_until.pop(key, None)
        self._failures.pop(key, None)
