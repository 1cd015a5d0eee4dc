"""Key listings that cost what the caller may see, not what the store holds.

A non-superuser's listing walks only the key ranges its read grants can match: every key
a pattern matches starts with the pattern's literal head (`app:` of `app:*`), so ranges
outside every head are never visited, and a grant on `app:*` lists `app:` keys at the cost
of those keys alone, however many others the store holds. Inside a range a key may still
fail its pattern (`app:*:public`, `*.json`); such hidden keys are examined, never shown,
and the keys examined by one request are bounded (`max_scan_examined_keys`). A page that
reaches the bound ends early, and its `next_after` is then an opaque cursor
(`~cursor:<token>`) this node keeps for a while: the caller goes on from where the walk
stopped without ever learning the name of a key it may not read.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from .catalog import SYS_PREFIX, Principal, literal_head
from .errors import BadRequest
from .store import Entry, Store, is_live

CURSOR_PREFIX: Final = "~cursor:"
CURSOR_TTL_S: Final = 300.0


def read_ranges(principal: Principal, prefix: str) -> list[str]:
    """The key prefixes a listing of `prefix` walks, in key order, none inside another."""
    if principal.superuser:
        return [prefix]
    starts = set()
    for grant in principal.grants:
        if "read" not in grant.actions:
            continue
        head = literal_head(grant.pattern)
        if head.startswith(prefix):
            starts.add(head)
        elif prefix.startswith(head):
            starts.add(prefix)
    ranges: list[str] = []
    for start in sorted(starts):  # a range sorts right before every range inside it
        if not start.startswith(SYS_PREFIX) and not (ranges and start.startswith(ranges[-1])):
            ranges.append(start)
    return ranges


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[tuple[str, Entry]]
    next_after: str | None  # more keys follow this last one shown; None: the walk is done, or stopped
    stopped_after: str | None  # the walk reached its examined-keys bound after this (maybe hidden) key


def list_page(
    store: Store,
    ranges: list[str],
    after: str | None,
    limit: int,
    max_examined: int,
    visible: Callable[[str], bool] | None,
    now_ms: int,
) -> Page:
    entries: list[tuple[str, Entry]] = []
    last_examined: str | None = None
    for examined, (key, entry) in enumerate(_walk(store, ranges, after)):
        if len(entries) == limit:
            return Page(entries, entries[-1][0], None)
        if examined == max_examined:
            return Page(entries, None, last_examined)
        last_examined = key
        if is_live(entry, now_ms) and (visible is None or visible(key)):
            entries.append((key, entry))
    return Page(entries, None, None)


def _walk(store: Store, ranges: list[str], after: str | None) -> Iterator[tuple[str, Entry]]:
    for start in ranges:
        if after is not None and after >= start and not after.startswith(start):
            continue  # this whole range lies before `after`
        yield from store.entries_from(start, after)


class ListingCursors:
    """Where walks that ran out of their examined-keys bound stopped, by token: bounded in
    number (the oldest go first) and in age. A cursor is good only for its owner and prefix."""

    def __init__(self, max_cursors: int) -> None:
        self._max_cursors = max_cursors
        self._cursors: OrderedDict[str, tuple[str, str, str, float]] = OrderedDict()  # token -> (owner, prefix, key, t)

    def issue(self, owner: str, prefix: str, stopped_after: str) -> str:
        token = secrets.token_urlsafe(16)
        self._cursors[token] = (owner, prefix, stopped_after, time.monotonic())
        while len(self._cursors) > self._max_cursors:
            self._cursors.popitem(last=False)
        return CURSOR_PREFIX + token

    def resolve(self, after: str | None, owner: str, prefix: str) -> str | None:
        """The key a listing goes on after: `after` itself, or where the walk of a cursor stopped."""
        if after is None or not after.startswith(CURSOR_PREFIX):
            return after
        found = self._cursors.pop(after[len(CURSOR_PREFIX) :], None)
        if found is None or found[3] + CURSOR_TTL_S < time.monotonic() or found[:2] != (owner, prefix):
            raise BadRequest(f"listing cursor {after!r} is unknown or expired here; list again from the start")
        return found[2]
