"""What a restore will use: the target, and the snapshot and WAL objects that reach it, chosen
from the archive's inventory alone (nothing downloaded yet). Errors say what the archive does hold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..wal.format import format_lsn, parse_lsn
from .inventory import Inventory, Piece, Span, Step, timeline_at
from .snapshots import Manifest
from .store import ArchiveError


class RestoreError(ArchiveError):
    """The archive cannot give what was asked, or the data directory cannot take it."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a restore stops: an LSN, a time (ms since the epoch) or, with neither, the end of the
    archived WAL; on `timeline` (None: the latest the archive knows)."""

    lsn: int | None = None
    time_ms: int | None = None
    timeline: int | None = None

    def __post_init__(self) -> None:
        if self.lsn is not None and self.time_ms is not None:
            raise ValueError("a restore target is an LSN or a time, not both")

    def describe(self) -> str:
        if self.lsn is not None:
            return f"LSN {format_lsn(self.lsn)}"
        if self.time_ms is not None:
            return f"time {utc_ms(self.time_ms)}"
        return "the end of the archived WAL"


def parse_time(text: str) -> int:
    """ISO 8601 (`2026-05-01T12:00:00.250Z`, `...+02:00`; without an offset: UTC) to ms since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-05-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def utc_ms(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Plan:
    target: Target
    timeline: int  # the target timeline: the restored node's new timeline branches off it
    path: list[Step]
    snapshot: Manifest
    pieces: list[Piece]  # the WAL to download, from the snapshot's redo LSN on

    @property
    def download_bytes(self) -> int:
        return self.snapshot.bytes + sum(piece.segment.size for piece in self.pieces)


def plan_restore(inventory: Inventory, target: Target) -> Plan:
    timeline = target.timeline if target.timeline is not None else inventory.latest_timeline()
    if timeline is None or not inventory.snapshots:
        raise RestoreError(f"{inventory.url} holds no snapshot: nothing to restore from")
    if timeline not in inventory.timelines():
        raise RestoreError(f"{inventory.url} knows no timeline {timeline}; it holds timelines {_listed(inventory)}")
    path = inventory.path(timeline)
    restorable = [(m, span) for m in inventory.snapshots if (span := inventory.restorable(m, path)) is not None]
    if not restorable:
        raise RestoreError(_none_restorable(inventory, path, timeline))
    latest = max(span.end_lsn for _, span in restorable)
    latest_text = f"the latest restorable point is {format_lsn(latest)} on timeline {timeline_at(path, latest)}"
    manifest, span = _choose(restorable, target, latest_text)
    if target.lsn is not None and span.end_lsn < target.lsn:
        raise RestoreError(
            f"the target LSN {format_lsn(target.lsn)} is beyond the archive: the archive's WAL on timeline "
            f"{timeline_at(path, span.end_lsn)} ends at {format_lsn(span.end_lsn)}; {latest_text}"
        )
    if inventory.info is not None and manifest.system_identifier != inventory.info.system_identifier:
        raise RestoreError(
            f"{inventory.url}/{manifest.snapshot} belongs to system {manifest.system_identifier}, the archive to "
            f"{inventory.info.system_identifier} (archive.json): two clusters' backups are mixed here"
        )
    pieces = inventory.chain(path, parse_lsn(manifest.redo_lsn))
    if target.lsn is not None:
        pieces = [piece for piece in pieces if piece.start_lsn <= target.lsn]
    return Plan(target, timeline, path, manifest, pieces)


def _choose(restorable: list[tuple[Manifest, Span]], target: Target, latest_text: str) -> tuple[Manifest, Span]:
    """The newest snapshot from before the target: the one with the least WAL to replay."""
    if target.lsn is not None:
        lsn = target.lsn
        before = [(m, s) for m, s in restorable if s.start_lsn <= lsn]
        if not before:
            oldest = min(s.start_lsn for _, s in restorable)
            raise RestoreError(
                f"the target LSN {format_lsn(lsn)} is before every snapshot: the oldest restorable point is "
                f"{format_lsn(oldest)}; {latest_text}"
            )
        return max(before, key=lambda item: (item[1].start_lsn, parse_lsn(item[0].redo_lsn)))
    if target.time_ms is not None:
        time_ms = target.time_ms
        before = [(m, s) for m, s in restorable if m.checkpoint_at_ms <= time_ms]
        if not before:
            oldest = min(m.checkpoint_at_ms for m, _ in restorable)
            raise RestoreError(
                f"the target time {utc_ms(time_ms)} is before every snapshot: the oldest restorable snapshot "
                f"holds writes up to {utc_ms(oldest)}; {latest_text}"
            )
        return max(before, key=lambda item: (item[0].checkpoint_at_ms, item[1].start_lsn))
    return max(restorable, key=lambda item: (item[1].start_lsn, parse_lsn(item[0].redo_lsn)))


def _none_restorable(inventory: Inventory, path: list[Step], timeline: int) -> str:
    reasons = []
    for manifest in inventory.snapshots:
        if not inventory.on_path(manifest, path):
            reasons.append(f"{manifest.snapshot} is on timeline {manifest.timeline}, not on timeline {timeline}'s path")
            continue
        end = inventory.wal_end(path, parse_lsn(manifest.redo_lsn))
        reaches = "no WAL holds it" if end is None else f"the WAL from there ends at {format_lsn(end)}"
        reasons.append(
            f"{manifest.snapshot} needs the WAL from {manifest.redo_lsn} to {manifest.consistent_lsn}, but {reaches}"
        )
    return f"no snapshot in {inventory.url} can be restored on timeline {timeline}: " + "; ".join(reasons)


def _listed(inventory: Inventory) -> str:
    return ", ".join(str(timeline) for timeline in inventory.timelines()) or "none"
