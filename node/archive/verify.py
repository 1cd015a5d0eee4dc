"""`kvctl backup verify`: download every object of an archive (its SHA-256 checked), decode every
WAL segment and read every snapshot whole, and check that the WAL continues from each snapshot
along its timeline's path. Every damaged object and every gap is reported; nothing stops at the
first problem."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import records
from ..snapshot import SnapshotError, SnapshotReader
from ..wal.format import (
    NEED_DATA,
    SEGMENT_HEADER_BYTES,
    CorruptFrame,
    Frame,
    FrameDecoder,
    SegmentHeader,
    WalFormatError,
    format_lsn,
    parse_lsn,
)
from .access import Stores, check_key
from .crypto import encrypted_size
from .inventory import Inventory, Step, timeline_at
from .layout import SegmentObject, parse_segment
from .progress import Progress
from .snapshots import MANIFEST_OBJECT, SNAPSHOT_OBJECT, SNAPSHOTS, snapshot_dir
from .store import ArchiveError, ObjectStore

READ_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Damaged:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    timeline: int
    start_lsn: int
    end_lsn: int | None  # None: no archived WAL follows at all
    reason: str

    def document(self) -> dict[str, Any]:
        end = format_lsn(self.end_lsn) if self.end_lsn is not None else None
        return {
            "timeline": self.timeline,
            "start_lsn": format_lsn(self.start_lsn),
            "end_lsn": end,
            "reason": self.reason,
        }


@dataclass(slots=True)
class VerifyReport:
    url: str
    objects: int = 0
    bytes: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.gaps

    def document(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "objects": self.objects,
            "bytes": self.bytes,
            "damaged": [{"name": d.name, "reason": d.reason} for d in self.damaged],
            "gaps": [gap.document() for gap in self.gaps],
        }


def verify(stores: Stores, progress: Progress | None = None) -> VerifyReport:
    """Check the whole archive; blocking (downloads everything once): run it in a thread."""
    report = VerifyReport(stores.url)
    objects = stores.meta.list()
    inventory = Inventory.read(stores.meta)
    if inventory.info is not None:
        check_key(stores, inventory.info)
    report.damaged += [Damaged(item.name, item.reason) for item in inventory.unreadable]
    report.damaged += _manifests_unmatched(inventory, {info.name: info.size for info in objects})
    if progress is not None:
        progress.begin(sum(info.size for info in objects))
    with tempfile.TemporaryDirectory(prefix="kvstore-verify-") as work:
        dest = Path(work) / "object"
        for info in objects:
            reason = _check_object(stores.for_object(info.name), info.name, dest)
            dest.unlink(missing_ok=True)
            if reason is not None and all(d.name != info.name for d in report.damaged):
                report.damaged.append(Damaged(info.name, reason))
            report.objects += 1
            report.bytes += info.size
            if progress is not None:
                progress.advance(info.name, info.size)
    report.gaps = wal_gaps(inventory)
    return report


def _manifests_unmatched(inventory: Inventory, sizes: dict[str, int]) -> list[Damaged]:
    """Manifests whose snapshot object is missing, or not the size they say."""
    damaged = []
    for manifest in inventory.snapshots:
        size = sizes.get(manifest.snapshot)
        stored = manifest.bytes if manifest.key_id is None else encrypted_size(manifest.bytes)
        if size == stored:
            continue
        name = f"{snapshot_dir(manifest.timeline, parse_lsn(manifest.redo_lsn))}/{MANIFEST_OBJECT}"
        if size is None:
            damaged.append(Damaged(name, f"names {manifest.snapshot}, which is not in the archive"))
        else:
            damaged.append(Damaged(name, f"says {manifest.snapshot} holds {stored} bytes; it holds {size}"))
    return damaged


def _check_object(store: ObjectStore, name: str, dest: Path) -> str | None:
    try:
        store.get(name, dest)
    except ArchiveError as exc:
        return str(exc)
    segment = parse_segment(name)
    if segment is not None:
        return check_segment(segment, dest)
    if name.startswith(f"{SNAPSHOTS}/") and name.endswith(f"/{SNAPSHOT_OBJECT}"):
        try:
            reader = SnapshotReader(dest)
            for _ in reader.entries():
                pass
        except SnapshotError as exc:
            return str(exc).replace(str(dest), "the snapshot")
    return None


def check_segment(segment: SegmentObject, path: Path) -> str | None:
    """What is wrong with a downloaded segment object, or None: its size, its header against its
    name, then every frame's CRC and record, whole up to the end its name says."""
    size = path.stat().st_size
    if size != segment.size:
        return f"holds {size} bytes, its name says {segment.size}"
    with path.open("rb") as file:
        try:
            header = SegmentHeader.decode(file.read(SEGMENT_HEADER_BYTES))
        except WalFormatError as exc:
            return f"bad segment header: {exc}"
        if (header.timeline, header.start_lsn) != (segment.timeline, segment.start_lsn):
            return (
                f"its header says timeline {header.timeline} at {format_lsn(header.start_lsn)}, its name timeline "
                f"{segment.timeline} at {format_lsn(segment.start_lsn)}"
            )
        decoder = FrameDecoder(segment.start_lsn + SEGMENT_HEADER_BYTES)
        while True:
            item = decoder.next_frame()
            if isinstance(item, Frame):
                try:
                    records.decode(item.payload)
                except ValueError as exc:
                    return f"record at LSN {format_lsn(item.lsn)}: {exc}"
            elif isinstance(item, CorruptFrame):
                return f"{item.reason} at LSN {format_lsn(item.lsn)}"
            else:
                assert item is NEED_DATA
                chunk = file.read(READ_CHUNK_BYTES)
                if not chunk:
                    if decoder.buffered_bytes:
                        return f"ends inside a record at LSN {format_lsn(decoder.lsn)}"
                    return None
                decoder.feed(chunk)


def wal_gaps(inventory: Inventory) -> list[Gap]:
    """Where the archived WAL stops short: a snapshot whose redo LSN no segment holds, or whose
    WAL stops before its consistent LSN, and every gap on a path after its oldest snapshot."""
    gaps: list[Gap] = []
    paths: dict[int, list[Step]] = {}
    for manifest in inventory.snapshots:
        try:
            path = inventory.path_of_snapshot(manifest)
        except ArchiveError as exc:
            gaps.append(Gap(manifest.timeline, parse_lsn(manifest.redo_lsn), None, str(exc)))
            continue
        paths.setdefault(path[-1].timeline, path)
        redo, consistent = parse_lsn(manifest.redo_lsn), parse_lsn(manifest.consistent_lsn)
        end = inventory.wal_end(path, redo)
        if end is None:
            reason = f"no archived WAL holds the redo LSN of {manifest.snapshot}"
            gaps.append(Gap(timeline_at(path, redo), redo, None, reason))
        elif end < consistent:
            reason = f"the WAL from {manifest.snapshot} stops before its consistent LSN {manifest.consistent_lsn}"
            gaps.append(Gap(timeline_at(path, end), end, None, reason))
    for timeline, path in paths.items():
        oldest = min(parse_lsn(m.redo_lsn) for m in inventory.snapshots if inventory.on_path(m, path))
        _, holes = inventory.coverage(path)
        for hole in holes:
            if hole.end_lsn > oldest:
                reason = f"no archived WAL on timeline {timeline}'s path holds these LSNs"
                gaps.append(Gap(timeline_at(path, hole.start_lsn), hole.start_lsn, hole.end_lsn, reason))
    return gaps
