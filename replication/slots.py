"""Replication slots on a primary: what each replica has, and the WAL kept for it.

A slot is named after its replica (`--name`). It remembers the replica's positions
(write = received, flush = durable there, apply = visible there) and holds WAL from
the replica's flush LSN on, so a replica that is away can resume from its own WAL.
What a slot may hold is bounded (`max_slot_wal_keep_bytes`): beyond it the slot is
marked lost, its WAL is recycled, and the replica takes a new base backup when it
comes back. Restart LSNs are saved in `replication/slots.json` when they matter (slot
created, lost, dropped, and at each checkpoint), as PostgreSQL saves pg_replslot at
checkpoints; after a crash a slot is at worst older than it was, never newer.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kvstore.node.fsutil import atomic_write, private_dirs
from kvstore.node.wal.format import format_lsn

log = logging.getLogger(__name__)

LAG_SAMPLES_MAX = 6000  # at one sample per 10 ms: a minute of commit history


@dataclass(slots=True)
class Slot:
    name: str
    restart_lsn: int  # the oldest WAL this replica may still ask for
    lost: bool = False
    # What the replica last reported, and when; not saved.
    timeline: int = 0
    write_lsn: int = 0
    flush_lsn: int = 0
    apply_lsn: int = 0
    last_contact: float | None = None  # epoch seconds
    address: str | None = None
    streams: int = 0  # open stream connections

    def saved(self) -> dict[str, Any]:
        return {"restart_lsn": self.restart_lsn, "lost": self.lost}

    @property
    def state(self) -> str:
        return "lost" if self.lost else "streaming" if self.streams else "disconnected"


@dataclass(slots=True)
class LagTracker:
    """When the primary's committed LSN passed each point, to turn an LSN into seconds of lag.

    PostgreSQL's LagTracker idea: a replica at apply LSN A is as far behind as the time
    since the primary first committed past A (zero when it has everything, idle or not).
    """

    samples: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES_MAX))

    def sample(self, committed_lsn: int, now: float) -> None:
        if not self.samples or committed_lsn > self.samples[-1][0]:
            self.samples.append((committed_lsn, now))

    def lag_s(self, lsn: int, committed_lsn: int, now: float) -> float:
        if lsn >= committed_lsn:
            return 0.0
        for sampled_lsn, at in self.samples:
            if sampled_lsn > lsn:
                return max(0.0, now - at)
        return 0.0  # committed past `lsn` within the last sample interval


class SlotRegistry:
    def __init__(self, path: Path, max_keep_bytes: int) -> None:
        self._path = path
        self.max_keep_bytes = max_keep_bytes
        self.slots: dict[str, Slot] = {}
        self.lag = LagTracker()
        if path.exists():
            for name, saved in json.loads(path.read_text()).items():
                self.slots[name] = Slot(name, int(saved["restart_lsn"]), bool(saved["lost"]))

    def save(self) -> None:
        private_dirs(self._path.parent)
        document = {name: slot.saved() for name, slot in sorted(self.slots.items())}
        atomic_write(self._path, json.dumps(document, indent=2).encode() + b"\n")

    def acquire(self, name: str, lsn: int) -> Slot:
        """The slot for a replica starting at `lsn`, created (or revived after loss) there."""
        slot = self.slots.get(name)
        if slot is None or slot.lost or slot.restart_lsn > lsn:
            slot = Slot(name, lsn)
            self.slots[name] = slot
            self.save()
            log.info("replication slot ready", extra={"slot": name, "restart_lsn": format_lsn(lsn)})
        return slot

    def feedback(self, name: str, timeline: int, write: int, flush: int, apply: int, address: str) -> Slot | None:
        slot = self.slots.get(name)
        if slot is None:
            return None
        slot.timeline, slot.write_lsn, slot.flush_lsn, slot.apply_lsn = timeline, write, flush, apply
        slot.last_contact, slot.address = time.time(), address
        if not slot.lost and flush > slot.restart_lsn:
            slot.restart_lsn = flush
        return slot

    def drop(self, name: str) -> bool:
        if self.slots.pop(name, None) is None:
            return False
        self.save()
        return True

    def retention(self, redo_lsn: int, end_lsn: int) -> int:
        """The oldest LSN to keep: slots hold WAL up to their bound, then are marked lost."""
        keep_from = redo_lsn
        for slot in self.slots.values():
            if slot.lost:
                continue
            if end_lsn - slot.restart_lsn > self.max_keep_bytes:
                slot.lost = True
                log.warning(
                    "replication slot lost: it held more WAL than max_slot_wal_keep_bytes; "
                    "its replica will take a new base backup",
                    extra={"slot": slot.name, "restart_lsn": format_lsn(slot.restart_lsn)},
                )
                continue
            keep_from = min(keep_from, slot.restart_lsn)
        self.save()
        return keep_from

    def count_in_state(self, state: str) -> int:
        return sum(slot.state == state for slot in self.slots.values())

    def describe(self, committed_lsn: int, now: float) -> list[dict[str, Any]]:
        rows = []
        for slot in sorted(self.slots.values(), key=lambda slot: slot.name):
            row = asdict(slot)
            for name in ("restart_lsn", "write_lsn", "flush_lsn", "apply_lsn"):
                row[name] = format_lsn(row[name])
            row["state"] = slot.state
            contact = row.pop("last_contact")
            row["last_contact_s_ago"] = None if contact is None else round(now - contact, 3)
            # No report since this node started: its positions are unknown, not zero.
            known = contact is not None
            row["lag_bytes"] = max(0, committed_lsn - slot.apply_lsn) if known else None
            row["lag_s"] = round(self.lag.lag_s(slot.apply_lsn, committed_lsn, now), 3) if known else None
            rows.append(row)
        return rows
