"""The in-memory key-value state and `apply`, the one function that changes it.

Live writes (once committed), crash recovery and replicas all change the store only
through `Store.apply(record, end_lsn)`. No I/O here.

Entries are plain tuples `(value, version, created_at_ms, expires_at_ms)`: a tuple of
bytes and ints is untracked by Python's cyclic GC after its first collection, so a
million keys add nothing to GC pauses (a `__slots__` object would be scanned on every
full collection). Keys are spread over `SHARD_COUNT` dicts so a checkpoint can copy
the store one small shard per event-loop turn instead of stalling on one huge dict;
a sorted key list serves prefix scans in key order.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Final

from sortedcontainers import SortedList

from . import records

Entry = tuple[bytes, int, int, int]
VALUE: Final = 0
VERSION: Final = 1
CREATED_AT_MS: Final = 2
EXPIRES_AT_MS: Final = 3  # 0 = never

# How modules above the storage core read an entry, without knowing its layout. itemgetter
# runs in C (no Python frame per call), so the hot GET path stays close to a tuple index.
entry_value: Final[Callable[[Entry], bytes]] = itemgetter(VALUE)
entry_version: Final[Callable[[Entry], int]] = itemgetter(VERSION)
entry_expires_at_ms: Final[Callable[[Entry], int]] = itemgetter(EXPIRES_AT_MS)  # 0 = never

SHARD_COUNT: Final = 1024
_SHARD_MASK: Final = SHARD_COUNT - 1
# Entries measured for the memory estimate: evenly spaced in key order, so a store whose value
# sizes differ by key range is still represented; a scrape costs ~100 us at most.
MEMORY_SAMPLE_ENTRIES: Final = 256
_POINTER_BYTES: Final = 8


def is_live(entry: Entry, now_ms: int) -> bool:
    expires_at_ms = entry[EXPIRES_AT_MS]
    return expires_at_ms == 0 or expires_at_ms > now_ms


class Store:
    def __init__(self) -> None:
        self._shards: list[dict[str, Entry]] = [{} for _ in range(SHARD_COUNT)]
        self._keys: SortedList[str] = SortedList()
        self._expiry_heap: list[tuple[int, str, int]] = []  # (expires_at_ms, key, version); may hold stale items
        self._expiring_keys = 0
        self.revision = 0  # highest version applied
        self.applied_lsn = 0  # end LSN of the last record applied
        # Keys under the watched prefix (the catalog's, named by the layer above: the store
        # knows nothing of catalogs) bump the epoch, which invalidates caches built from them,
        # and are passed to `_on_watched_change` once applied.
        self._watched_prefix: str | None = None
        self._unwatched_prefixes: tuple[str, ...] = ()
        self._on_watched_change: Callable[[str, Entry | None], None] | None = None
        self.watched_epoch = 0

    def watch(
        self, prefix: str, on_change: Callable[[str, Entry | None], None], unwatched: tuple[str, ...] = ()
    ) -> None:
        """Count every change to a key under `prefix`, but not under one of `unwatched`, in
        `watched_epoch` and tell `on_change` of it."""
        self._watched_prefix = prefix
        self._unwatched_prefixes = unwatched
        self._on_watched_change = on_change

    def __len__(self) -> int:
        return len(self._keys)

    def memory_estimate(self) -> int:
        """Bytes the store holds: the shard dicts' own tables (exact), plus, per key, the key
        string, the entry tuple, its value and ints and the sorted index's pointer, averaged
        over a sample of entries. Shared objects (interned keys, small ints) are counted as
        owned, so this leans high; the allocator's free lists are not counted at all."""
        count = len(self._keys)
        tables = sum(map(sys.getsizeof, self._shards))
        heap = sys.getsizeof(self._expiry_heap) + len(self._expiry_heap) * sys.getsizeof((0, "", 0))
        if count == 0:
            return tables + heap
        step = max(1, count // MEMORY_SAMPLE_ENTRIES)
        sampled = self._keys[::step] if step > 1 else list(self._keys)
        total = 0
        for key in sampled:
            entry = self._shards[hash(key) & _SHARD_MASK][key]
            total += sys.getsizeof(key) + sys.getsizeof(entry) + _POINTER_BYTES
            total += sum(map(sys.getsizeof, entry))
        return tables + heap + total * count // len(sampled)

    def get(self, key: str, now_ms: int) -> Entry | None:
        """The committed entry, hiding an expired one (lazy expiry)."""
        entry = self._shards[hash(key) & _SHARD_MASK].get(key)
        if entry is None or not is_live(entry, now_ms):
            return None
        return entry

    def apply(self, record: records.Record, end_lsn: int) -> None:
        kind = record[0]
        if kind == records.SET or kind == records.DEL:
            self._apply_op(record)
        elif kind == records.TXN:
            for op in record[1]:
                self._apply_op(op)
        # CHECKPOINT, TIMELINE_SWITCH and TIME change no key.
        self.applied_lsn = end_lsn

    def _apply_op(self, op: records.Record) -> None:
        key = op[1]
        watched = (
            self._watched_prefix is not None
            and key.startswith(self._watched_prefix)
            and not key.startswith(self._unwatched_prefixes)
        )
        if watched:
            self.watched_epoch += 1
        shard = self._shards[hash(key) & _SHARD_MASK]
        old = shard.get(key)
        if old is not None and old[EXPIRES_AT_MS]:
            self._expiring_keys -= 1
        if op[0] == records.SET:
            entry = (op[2], op[3], op[4], op[5])
            shard[key] = entry
            if old is None:
                self._keys.add(key)
            if entry[EXPIRES_AT_MS]:
                self._expiring_keys += 1
                self._track_expiry(key, entry)
            version = op[3]
        else:
            if old is not None:
                del shard[key]
                self._keys.remove(key)
            version = op[2]
        if version > self.revision:
            self.revision = version
        if watched and self._on_watched_change is not None:
            self._on_watched_change(key, shard.get(key))

    def _track_expiry(self, key: str, entry: Entry) -> None:
        heapq.heappush(self._expiry_heap, (entry[EXPIRES_AT_MS], key, entry[VERSION]))
        # Overwritten TTL keys leave stale heap items; drop them once they dominate. The
        # pass walks the heap itself, never the whole keyspace.
        if len(self._expiry_heap) > 2 * self._expiring_keys + 1024:
            shards = self._shards
            self._expiry_heap = [
                item
                for item in self._expiry_heap
                if (live := shards[hash(item[1]) & _SHARD_MASK].get(item[1])) is not None
                and live[VERSION] == item[2]
                and live[EXPIRES_AT_MS] == item[0]
            ]
            heapq.heapify(self._expiry_heap)

    def due_expiries(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` (key, version) pairs whose expiry has passed, oldest first."""
        due: list[tuple[str, int]] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now_ms and len(due) < limit:
            expires_at_ms, key, version = heapq.heappop(heap)
            entry = self._shards[hash(key) & _SHARD_MASK].get(key)
            if entry is not None and entry[VERSION] == version and entry[EXPIRES_AT_MS] == expires_at_ms:
                due.append((key, version))
        return due

    def requeue_expiry(self, key: str, now_ms: int) -> None:
        """Put a key back in the expiry queue (its DEL could not be logged this time)."""
        entry = self._shards[hash(key) & _SHARD_MASK].get(key)
        if entry is not None and entry[EXPIRES_AT_MS]:
            heapq.heappush(self._expiry_heap, (max(entry[EXPIRES_AT_MS], now_ms), key, entry[VERSION]))

    def entries_from(self, prefix: str, after: str | None) -> Iterator[tuple[str, Entry]]:
        """Every entry with `prefix` in key order, strictly after `after`, expired ones included."""
        start = prefix if after is None or after < prefix else after
        shards = self._shards
        for key in self._keys.irange(minimum=start, inclusive=(after is None or after < prefix, True)):
            if not key.startswith(prefix):
                return
            yield key, shards[hash(key) & _SHARD_MASK][key]

    def scan(self, prefix: str, after: str | None, limit: int, now_ms: int) -> tuple[list[tuple[str, Entry]], bool]:
        """Live entries with `prefix`, in key order, strictly after `after`; (page, more)."""
        page: list[tuple[str, Entry]] = []
        for key, entry in self.entries_from(prefix, after):
            if not is_live(entry, now_ms):
                continue
            if len(page) == limit:
                return page, True
            page.append((key, entry))
        return page, False

    # -- checkpoint and recovery ------------------------------------------------------

    def shard(self, index: int) -> dict[str, Entry]:
        return self._shards[index]

    def bulk_load(self, items: Iterable[tuple[str, Entry]]) -> int:
        """Fill an empty store from a snapshot in one pass (keys sorted once); returns the count."""
        if self._keys:
            raise ValueError("bulk_load needs an empty store")
        shards = self._shards
        keys: list[str] = []
        expiring: list[tuple[int, str, int]] = []
        revision = self.revision
        for key, entry in items:
            shards[hash(key) & _SHARD_MASK][key] = entry
            keys.append(key)
            if entry[EXPIRES_AT_MS]:
                expiring.append((entry[EXPIRES_AT_MS], key, entry[VERSION]))
            if entry[VERSION] > revision:
                revision = entry[VERSION]
        self._keys = SortedList(keys)
        heapq.heapify(expiring)
        self._expiry_heap, self._expiring_keys = expiring, len(expiring)
        self.revision = revision
        self.watched_epoch += 1
        return len(keys)

    def items_sorted(self) -> Iterator[tuple[str, Entry]]:
        """Every entry in key order, expired ones included (they go when their DEL is applied)."""
        shards = self._shards
        for key in self._keys:
            yield key, shards[hash(key) & _SHARD_MASK][key]

    def items(self) -> Iterator[tuple[str, Entry]]:
        for shard in self._shards:
            yield from shard.items()
