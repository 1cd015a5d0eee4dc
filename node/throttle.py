"""Failed-login throttling, reserved before the password is checked. Pure.

Three counters, each of failures within `window_s`:

- per (user, address): `max_failures` lock that pair for `lockout_s`. It is the one that
  stops a guesser, and it cannot be turned against the real user: failures from one
  address lock that user out of that address only.
- per address (every user name): `max_failures` lock the address for `lockout_s`, so one
  address cannot spray guesses over many user names.
- per user (every address): from `user_slowdown_after_failures` on, the user's attempts
  go one at a time, each after a growing interval (1 s, doubling, capped at
  `user_slowdown_max_s`) counted from the end of the previous one. A guesser with many addresses is slowed down; the real user is
  never locked out, and one address cannot get there alone while that threshold is above
  `max_failures` (its own pair lock stops it first).

An attempt is *reserved* before the (slow) password check and counts against the pair and
the address while it is in flight, so N concurrent guesses cannot all pass a count taken
afterwards: at most `max_failures` are in flight or counted. Unknown and known user names
are treated the same, so the answers never tell whether a user exists. Memory is bounded:
beyond `max_tracked_keys` the oldest entries are forgotten.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass

# While in-flight attempts fill a key's allowance, a new one is refused for this long: the
# attempts in flight decide within about one password hash.
IN_FLIGHT_RETRY_S = 1.0
# The first wait of the per-user slowdown; each further failure doubles it.
SLOWDOWN_FIRST_S = 1.0

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failures: int = 5
    window_s: float = 300.0
    lockout_s: float = 300.0
    user_slowdown_after_failures: int = 20
    user_slowdown_max_s: float = 60.0
    max_tracked_keys: int = 100_000


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved login attempt: finish it with `failed`, `succeeded` or `released`."""

    user: str
    address: str

    @property
    def pair(self) -> Key:
        return ("pair", self.user, self.address)

    @property
    def address_key(self) -> Key:
        return ("addr", self.address)

    @property
    def user_key(self) -> Key:
        return ("user", self.user)


def describe(key: Key) -> str:
    """A key as the audit log names it: `user:alice@127.0.0.2`, `addr:127.0.0.2`."""
    if key[0] == "pair":
        return f"user:{key[1]}@{key[2]}"
    return f"{key[0]}:{key[1]}"


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()
        self._locked_until: dict[Key, float] = {}
        self._in_flight: Counter[Key] = Counter()
        self._user_next_at: dict[Key, float] = {}  # the slowdown: when the user's next attempt may start
        self._user_slot_taken: set[Key] = set()  # slowed-down users with their one attempt in flight

    def reserve(self, user: str, address: str, now: float) -> Attempt | float:
        """An Attempt, or the seconds to wait before trying again."""
        attempt = Attempt(user, address)
        wait = 0.0
        for key in (attempt.pair, attempt.address_key):
            until = self._locked_until.get(key)
            if until is not None and until > now:
                wait = max(wait, until - now)
            elif len(self._recent(key, now)) + self._in_flight[key] >= self.policy.max_failures:
                wait = max(wait, IN_FLIGHT_RETRY_S)
        slowed, user_wait = self._slowdown_s(attempt.user_key, now)
        if wait > 0 or user_wait > 0:
            return max(wait, user_wait)
        for key in (attempt.pair, attempt.address_key):
            self._in_flight[key] += 1
        if slowed:
            self._user_slot_taken.add(attempt.user_key)
        return attempt

    def _recent(self, key: Key, now: float) -> deque[float]:
        times = self._failures.get(key) or deque()
        while times and times[0] <= now - self.policy.window_s:
            times.popleft()
        return times

    def _slowdown_s(self, key: Key, now: float) -> tuple[bool, float]:
        """(whether the user is slowed down, seconds it must still wait)."""
        if len(self._recent(key, now)) < self.policy.user_slowdown_after_failures:
            return False, 0.0
        if key in self._user_slot_taken:
            return True, IN_FLIGHT_RETRY_S
        return True, max(0.0, self._user_next_at.get(key, 0.0) - now)

    def failed(self, attempt: Attempt, now: float) -> list[Key]:
        """Count a failure of a reserved attempt; returns the keys it locked."""
        self._finish(attempt)
        locked = []
        for key in (attempt.pair, attempt.address_key, attempt.user_key):
            times = self._recent(key, now)
            self._failures.pop(key, None)
            times.append(now)
            if key[0] == "user":
                self._slow_down(key, len(times), now)
            if key[0] != "user" and len(times) >= self.policy.max_failures:
                self._locked_until[key] = now + self.policy.lockout_s
                times.clear()
                locked.append(key)
            else:
                self._failures[key] = times  # re-inserted last: the OrderedDict is oldest-first
        while len(self._failures) > self.policy.max_tracked_keys:
            self._failures.popitem(last=False)
        self._bound(self._locked_until)
        return locked

    def _slow_down(self, key: Key, failures: int, now: float) -> None:
        self._user_slot_taken.discard(key)
        excess = failures - self.policy.user_slowdown_after_failures
        if excess >= 0:
            self._user_next_at[key] = now + min(SLOWDOWN_FIRST_S * 2.0**excess, self.policy.user_slowdown_max_s)
            self._bound(self._user_next_at)

    def succeeded(self, attempt: Attempt) -> None:
        """The right password: the pair and the user start afresh (the address does not, or a
        guesser with one account of its own could reset its address between guesses)."""
        self._finish(attempt)
        for key in (attempt.pair, attempt.user_key):
            self._failures.pop(key, None)
        self._user_next_at.pop(attempt.user_key, None)
        self._user_slot_taken.discard(attempt.user_key)

    def released(self, attempt: Attempt) -> None:
        """The attempt ended without a password check (refused for another reason)."""
        self._finish(attempt)
        self._user_slot_taken.discard(attempt.user_key)

    def _finish(self, attempt: Attempt) -> None:
        for key in (attempt.pair, attempt.address_key):
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def unlock(self, user: str) -> None:
        """An administrator's unlock: the user's pair lockouts and slowdown end; address lockouts stay."""
        for table in (self._locked_until, self._failures):
            for key in [key for key in table if key[0] == "pair" and key[1] == user]:
                del table[key]
        self._failures.pop(("user", user), None)
        self._user_next_at.pop(("user", user), None)
        self._user_slot_taken.discard(("user", user))

    def _bound(self, table: dict[Key, float]) -> None:
        """Forget the oldest entries beyond max_tracked_keys (most will have ended long ago)."""
        while len(table) > self.policy.max_tracked_keys:
            del table[next(iter(table))]
