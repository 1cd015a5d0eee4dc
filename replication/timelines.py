"""Timeline history: where each timeline branched off its parent (PostgreSQL's .history files).

`timelines/<tl>.history` lists, oldest first, every switch that led to timeline `tl`:
`[{"parent": 1, "switch_lsn": 12345, "time_ms": ...}, ...]`. A node on timeline `tl`
shares WAL with a node on an ancestor timeline `p` only below the LSN where `p` ended;
beyond it their WALs diverged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kvstore.node.fsutil import atomic_write, private_dirs


@dataclass(frozen=True, slots=True)
class Switch:
    parent: int  # the timeline that ended
    switch_lsn: int  # where it ended and its child began
    time_ms: int


def history_path(timelines_dir: Path, timeline: int) -> Path:
    return timelines_dir / f"{timeline:08d}.history"


def read_history(timelines_dir: Path, timeline: int) -> list[Switch]:
    path = history_path(timelines_dir, timeline)
    if timeline == 1 or not path.exists():
        return []
    return [Switch(**item) for item in json.loads(path.read_text())]


def write_history(timelines_dir: Path, timeline: int, history: list[Switch]) -> None:
    private_dirs(timelines_dir)
    atomic_write(history_path(timelines_dir, timeline), json.dumps([asdict(s) for s in history]).encode() + b"\n")


def end_of(history: list[Switch], timeline: int) -> int | None:
    """The LSN where `timeline` (an ancestor in this history) ended; None if it never did."""
    return next((switch.switch_lsn for switch in history if switch.parent == timeline), None)
