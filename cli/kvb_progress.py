"""The live progress line, on stderr and only when stderr is a terminal (never in CI logs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text


class ProgressLine:
    """`with ProgressLine(...) as line: line.update()` redraws "<test> 12s/30s  41,210 req/s"."""

    def __init__(self, test: str, total_s: float, responses: Callable[[], int] | None) -> None:
        self.test = test
        self.total_s = total_s
        self.responses = responses
        self.started = time.monotonic()
        self.last = (self.started, 0)
        self.live: Live | None = None
        if sys.stderr.isatty():
            self.live = Live(console=Console(stderr=True), transient=True, auto_refresh=False)

    def __enter__(self) -> ProgressLine:
        if self.live is not None:
            self.live.start()
        return self

    def update(self) -> None:
        if self.live is None:
            return
        now = time.monotonic()
        line = f"{self.test}  {now - self.started:4.0f}s/{self.total_s:.0f}s"
        if self.responses is not None:
            count = self.responses()
            then, before = self.last
            if now > then:
                line += f"  {(count - before) / (now - then):,.0f} req/s"
            self.last = (now, count)
        self.live.update(Text(line), refresh=True)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()
