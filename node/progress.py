"""A long start step's count of work done (records replayed, bytes downloaded): bumped by the
step, in any thread, with one attribute store; read by the event loop (start_report.py)."""

from __future__ import annotations


class Progress:
    __slots__ = ("done", "total")

    def __init__(self) -> None:
        self.done = 0
        self.total: int | None = None  # when the step knows it up front
