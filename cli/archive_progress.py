"""The download bar of `kvctl restore` and `kvctl backup verify`: rich's progress bar on stderr
when stderr is a terminal, nothing otherwise (the summary at the end is the plain output)."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class DownloadBar:
    """`with DownloadBar("restore") as bar: restore(..., progress=bar)`: node/archive/progress.py's protocol."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._task: TaskID | None = None
        self._bar: Progress | None = None
        if sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> DownloadBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def begin(self, total_bytes: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(self.description, total=total_bytes)

    def advance(self, name: str, nbytes: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=nbytes, description=f"{self.description} {name}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
