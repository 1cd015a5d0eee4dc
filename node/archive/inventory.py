"""What an archive holds, read from listings (plus its manifests, histories and archive.json):
the snapshots, the WAL segment objects and the timelines, and what they add up to: each
timeline's path back to timeline 1, the WAL's coverage along a path, and how far each snapshot
can be restored. Restore plans from it; `kvctl backup list` and `verify` report from it.

A path is the chain of timelines a timeline descends through, each valid from where it began
to the switch LSN where its child began. Along a path an ancestor's segment is used only below
that switch: beyond it, the ancestor's WAL is another history.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from kvstore.replication.timelines import Switch

from ..wal.format import format_lsn, parse_lsn
from .layout import ARCHIVE_INFO, TIMELINES, WAL, ArchiveInfo, SegmentObject, parse_history_name, parse_segment
from .snapshots import MANIFEST_OBJECT, SNAPSHOTS, Manifest, read_manifest
from .store import ArchiveError, ObjectMissing, ObjectStore


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline of a path: valid for LSNs [start_lsn, end_lsn); end_lsn None: to the end."""

    timeline: int
    start_lsn: int
    end_lsn: int | None

    def holds(self, lsn: int) -> bool:
        return self.start_lsn <= lsn and (self.end_lsn is None or lsn < self.end_lsn)


@dataclass(frozen=True, slots=True)
class Span:
    start_lsn: int
    end_lsn: int

    def document(self) -> dict[str, str]:
        return {"start_lsn": format_lsn(self.start_lsn), "end_lsn": format_lsn(self.end_lsn)}


@dataclass(frozen=True, slots=True)
class Piece:
    """A segment object as a path uses it: from its start to `end_lsn` (its own end, or the
    switch where its timeline ended on the path)."""

    segment: SegmentObject
    end_lsn: int

    @property
    def start_lsn(self) -> int:
        return self.segment.start_lsn


@dataclass(frozen=True, slots=True)
class Unreadable:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Inventory:
    url: str
    info: ArchiveInfo | None
    snapshots: list[Manifest]  # oldest first
    segments: list[SegmentObject]  # by timeline, then start
    histories: dict[int, list[Switch]]
    unreadable: list[Unreadable]  # manifests, histories or archive.json that could not be read

    @classmethod
    def read(cls, store: ObjectStore) -> Inventory:
        """List the archive; objects that cannot be read are kept in `unreadable`, not raised."""
        unreadable: list[Unreadable] = []
        info: ArchiveInfo | None = None
        try:
            info = ArchiveInfo.decode(store.read(ARCHIVE_INFO))
        except ObjectMissing:
            pass
        except (ArchiveError, ValueError, TypeError) as exc:
            unreadable.append(Unreadable(ARCHIVE_INFO, str(exc)))
        snapshots: list[Manifest] = []
        for item in store.list(f"{SNAPSHOTS}/"):
            if item.name.endswith(f"/{MANIFEST_OBJECT}"):
                try:
                    snapshots.append(read_manifest(store, item.name))
                except ArchiveError as exc:
                    unreadable.append(Unreadable(item.name, str(exc)))
        segments = sorted(s for item in store.list(f"{WAL}/") if (s := parse_segment(item.name)) is not None)
        histories: dict[int, list[Switch]] = {}
        for item in store.list(f"{TIMELINES}/"):
            timeline = parse_history_name(item.name)
            if timeline is None:
                continue
            try:
                histories[timeline] = [Switch(**switch) for switch in orjson.loads(store.read(item.name))]
            except (ArchiveError, ValueError, TypeError) as exc:
                unreadable.append(Unreadable(item.name, f"not a timeline history: {exc}"))
        return cls(store.url, info, snapshots, segments, histories, unreadable)

    def timelines(self) -> list[int]:
        """Every timeline the archive knows of: by its WAL, its snapshots or its histories."""
        known = {s.timeline for s in self.segments} | {m.timeline for m in self.snapshots} | set(self.histories)
        known.update(switch.parent for history in self.histories.values() for switch in history)
        return sorted(known)

    def latest_timeline(self) -> int | None:
        known = self.timelines()
        return known[-1] if known else None

    def path(self, timeline: int) -> list[Step]:
        """The timelines `timeline` descends through, oldest first, ending with itself."""
        if timeline == 1:
            return [Step(1, 0, None)]
        history = self.histories.get(timeline)
        if history is None:
            raise ArchiveError(
                f"{self.url} holds no history for timeline {timeline} ({TIMELINES}/{timeline:08X}.history), "
                "so where it branched off is unknown"
            )
        steps: list[Step] = []
        start = 0
        for switch in history:
            steps.append(Step(switch.parent, start, switch.switch_lsn))
            start = switch.switch_lsn
        return [*steps, Step(timeline, start, None)]

    def pieces(self, path: list[Step]) -> list[Piece]:
        """The segment objects a path uses, by start LSN; of two that share a timeline and start
        (a promoted replica's copy and the old primary's), the longer."""
        longest: dict[tuple[int, int], Piece] = {}
        for step in path:
            for segment in self.segments:
                if segment.timeline != step.timeline or not step.holds(segment.start_lsn):
                    continue
                end = segment.end_lsn if step.end_lsn is None else min(segment.end_lsn, step.end_lsn)
                key = (segment.timeline, segment.start_lsn)
                if key not in longest or longest[key].end_lsn < end:
                    longest[key] = Piece(segment, end)
        return sorted(longest.values(), key=lambda piece: (piece.start_lsn, piece.end_lsn))

    def chain(self, path: list[Step], from_lsn: int) -> list[Piece]:
        """The pieces that carry the WAL on from `from_lsn` without a gap, in order."""
        pieces = self.pieces(path)
        holding = [p for p in pieces if p.start_lsn <= from_lsn <= p.end_lsn]
        if not holding:
            return []
        chain = [max(holding, key=lambda p: p.end_lsn)]
        while following := [p for p in pieces if p.start_lsn == chain[-1].end_lsn and p.end_lsn > p.start_lsn]:
            chain.append(max(following, key=lambda p: p.end_lsn))
        return chain

    def wal_end(self, path: list[Step], from_lsn: int) -> int | None:
        """Where the archived WAL from `from_lsn` first stops (a gap or its end); None when no
        segment holds `from_lsn`."""
        chain = self.chain(path, from_lsn)
        return chain[-1].end_lsn if chain else None

    def coverage(self, path: list[Step]) -> tuple[list[Span], list[Span]]:
        """The contiguous LSN ranges the path's WAL covers, and the gaps between them."""
        spans: list[Span] = []
        for piece in self.pieces(path):
            if spans and piece.start_lsn <= spans[-1].end_lsn:
                if piece.end_lsn > spans[-1].end_lsn:
                    spans[-1] = Span(spans[-1].start_lsn, piece.end_lsn)
            else:
                spans.append(Span(piece.start_lsn, piece.end_lsn))
        gaps = [Span(before.end_lsn, after.start_lsn) for before, after in zip(spans, spans[1:])]
        return spans, gaps

    def on_path(self, manifest: Manifest, path: list[Step]) -> bool:
        """Whether the snapshot's state is one the path went through: its timeline is on the
        path, and it is consistent before that timeline ended there."""
        consistent = parse_lsn(manifest.consistent_lsn)
        return any(
            step.timeline == manifest.timeline and (step.end_lsn is None or consistent <= step.end_lsn) for step in path
        )

    def restorable(self, manifest: Manifest, path: list[Step]) -> Span | None:
        """The LSNs the snapshot can be restored to along the path: from its consistent LSN to
        where the archived WAL from its redo LSN stops. None when that WAL does not reach it."""
        if not self.on_path(manifest, path):
            return None
        end = self.wal_end(path, parse_lsn(manifest.redo_lsn))
        consistent = parse_lsn(manifest.consistent_lsn)
        return Span(consistent, end) if end is not None and end >= consistent else None

    def path_of_snapshot(self, manifest: Manifest) -> list[Step]:
        """The path a snapshot is reported along: the newest timeline's whose path it is on (a
        snapshot taken before a promotion continues on the new timeline), else its own."""
        for timeline in reversed(self.timelines()):
            try:
                path = self.path(timeline)
            except ArchiveError:
                continue
            if self.on_path(manifest, path):
                return path
        return self.path(manifest.timeline)


def timeline_at(path: list[Step], lsn: int) -> int:
    """The timeline of the path that holds `lsn` (the last one for an LSN at a switch)."""
    return next((step.timeline for step in reversed(path) if step.start_lsn <= lsn), path[0].timeline)
