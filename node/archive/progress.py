"""How restore and verify report their downloads: a small protocol a command line draws a bar with."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def begin(self, total_bytes: int) -> None:
        """Called once, before the first download: the bytes all of them will take."""
        ...

    def advance(self, name: str, nbytes: int) -> None:
        """An object of `nbytes` has been downloaded and checked."""
        ...
